"""TNBC (Naylor et al., IEEE TMI 2019): H&E nuclei images from triple-negative breast cancer slides.

Release layout, images and masks paired by ``(slide, index)``::

    <root>/Slide_XX/XX_N.png   RGB images, 512x512
    <root>/GT_XX/XX_N.png      masks, {0, 255} (or {0, 1})

Each image is one patch; train/validation splits keep the images of a slide together.
"""

from __future__ import annotations

import re

from .collection import Collection, PatchRef
from .io import binarize, check_same_size, list_images, read_image, read_mask
from .problems import Problems

HELP = (
    "Download TNBC (Naylor et al., https://zenodo.org/record/1175282) and point to the folder holding "
    "Slide_XX/XX_N.png images and GT_XX/XX_N.png masks"
)
_FOLDER = re.compile(r"^(Slide|GT)_(\d+)$", re.IGNORECASE)


def load_tnbc(spec, strict: bool = True) -> Collection:
    """Discover a TNBC release folder (see the module docstring)."""
    root = spec.path
    if not root.is_dir():
        raise FileNotFoundError(f"TNBC folder {root} does not exist. {HELP}")
    images, masks = {}, {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        match = _FOLDER.match(folder.name)
        if not match:
            continue
        target = masks if match.group(1).upper() == "GT" else images
        for path in list_images(folder):
            target[(int(match.group(2)), path.stem)] = path
    problems = Problems(strict)
    patches, sizes, pairs = [], {}, {}
    for (slide, stem), image_path in sorted(images.items()):
        mask_path = masks.get((slide, stem))
        if mask_path is None:
            problems.report(f"image {image_path} has no mask (expected {root / f'GT_{slide:02d}' / (stem + '.png')})")
            continue
        try:
            sizes[str(image_path)] = check_same_size(image_path, mask_path)
        except ValueError as err:
            problems.report(str(err))
            continue
        pairs[str(image_path)] = (image_path, mask_path)
        patches.append(PatchRef(source=f"slide_{slide:02d}", key=str(image_path)))
    if not patches:
        raise ValueError(f"no usable TNBC image/mask pairs in {root}. {HELP}" + problems.summary())

    def loader(key: str):
        image_path, mask_path = pairs[key]
        return read_image(image_path, channels=3), binarize(read_mask(mask_path), mask_path)

    return Collection("tnbc", 3, 1, patches, loader, sizes, n_items=len(pairs), problems=problems.messages)
