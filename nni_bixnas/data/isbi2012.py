"""ISBI 2012 EM segmentation challenge (Arganda-Carreras et al. 2015): serial-section EM slices.

Layout: ``<root>/image/*.png`` grayscale slices and ``<root>/label/*.png`` labels {0, 255}, paired by
stem (``<root>/train/`` is also looked into). The labels mark **membranes as 0** and cell interiors as
255; the foreground (class 1) is ``label > 127``, i.e. the cell interiors, as in the challenge's own
convention. Each slice is one patch and one split unit (adjacent sections are correlated).
"""

from __future__ import annotations

import numpy as np

from .collection import Collection, PatchRef
from .io import by_stem, check_same_size, list_images, read_image, read_mask
from .problems import Problems

HELP = (
    "Download the ISBI 2012 EM training data (https://imagej.net/events/isbi-2012-segmentation-challenge) "
    "and point to the folder holding image/*.png and label/*.png"
)


def load_isbi2012(spec, strict: bool = True) -> Collection:
    """Discover an ISBI-2012 folder (see the module docstring)."""
    root = spec.path
    if not root.is_dir():
        raise FileNotFoundError(f"ISBI-2012 folder {root} does not exist. {HELP}")
    if not (root / "image").is_dir() and (root / "train" / "image").is_dir():
        root = root / "train"
    if not (root / "image").is_dir() or not (root / "label").is_dir():
        raise ValueError(f"ISBI-2012 folder {root} has no image/ and label/ subfolders. {HELP}")
    images, labels = by_stem(list_images(root / "image")), by_stem(list_images(root / "label"))
    problems = Problems(strict)
    patches, sizes = [], {}
    for stem, image_path in sorted(images.items()):
        if stem not in labels:
            problems.report(f"image {image_path} has no label (expected {root / 'label' / (stem + '.png')})")
            continue
        try:
            sizes[stem] = check_same_size(image_path, labels[stem])
        except ValueError as err:
            problems.report(str(err))
            continue
        patches.append(PatchRef(source=stem, key=stem))
    if not patches:
        raise ValueError(f"no usable ISBI-2012 image/label pairs in {root}. {HELP}" + problems.summary())

    def loader(key: str):
        image = read_image(images[key], channels=1)
        return image, (read_mask(labels[key]) > 127).astype(np.uint8)

    return Collection("isbi2012", 1, 1, patches, loader, sizes, n_items=len(patches), problems=problems.messages)
