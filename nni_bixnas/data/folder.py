"""A folder of image/mask pairs (PNG, TIFF, JPEG, BMP), paired by file stem.

``folder:PATH`` expects ``PATH/images/`` and ``PATH/masks/``; ``folder:IMGDIR,MASKDIR`` names both.
Masks are single-channel: binary ({0, 1} or {0, 255}, one output class) or integer class labels
``0..K-1`` (``num_classes = K``, the largest label + 1 over the folder, at most 64). Input channels are
1 if the first image is grayscale, else 3. Each image is one patch and one split unit. Every mask is
decoded once when the dataset is built (to detect the label kind); images are decoded lazily.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .collection import Collection, PatchRef
from .io import by_stem, check_same_size, describe_values, image_channels, list_images, read_image, read_mask
from .problems import Problems

MAX_CLASSES = 64
HELP = "expected PATH/images/ and PATH/masks/ with matching file stems (or folder:IMGDIR,MASKDIR)"


def load_folder(spec, strict: bool = True) -> Collection:
    """Discover an image/mask folder pair (see the module docstring)."""
    if spec.mask_path is None:
        image_dir, mask_dir = spec.path / "images", spec.path / "masks"
        if not spec.path.is_dir():
            raise FileNotFoundError(f"folder {spec.path} does not exist; {HELP}")
    else:
        image_dir, mask_dir = spec.path, spec.mask_path
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"folder {folder} does not exist; {HELP}")
    images, masks = by_stem(list_images(image_dir)), by_stem(list_images(mask_dir))
    if not images:
        raise ValueError(f"no images (.png, .tif, .jpg, .bmp) in {image_dir}; {HELP}")
    problems = Problems(strict)
    decoded, sizes = {}, {}
    for stem, image_path in sorted(images.items()):
        mask_path = masks.get(stem)
        if mask_path is None:
            problems.report(f"image {image_path} has no mask (expected {mask_dir / stem}.<png|tif|...>)")
            continue
        try:
            sizes[stem] = check_same_size(image_path, mask_path)
            mask = read_mask(mask_path)
            if mask.min() < 0:
                raise ValueError(f"mask {mask_path} has negative values {describe_values(np.unique(mask))}")
        except ValueError as err:
            problems.report(str(err))
            continue
        decoded[stem] = mask
    if not decoded:
        raise ValueError(f"no usable image/mask pairs in {image_dir} and {mask_dir}; {HELP}" + problems.summary())

    values = set()
    for mask in decoded.values():
        values.update(np.unique(mask).tolist())
    if values <= {0, 1} or values <= {0, 255}:
        num_classes, labels = 1, {stem: (m > 0).astype(np.uint8) for stem, m in decoded.items()}
    else:
        labels = {}
        for stem, mask in decoded.items():
            found = np.unique(mask)
            if found.max() >= MAX_CLASSES:
                problems.report(
                    f"mask {masks[stem]} has values {describe_values(found)}; expected binary {{0, 1}} or "
                    f"{{0, 255}} masks, or integer class labels 0..K-1 with K <= {MAX_CLASSES}"
                )
                continue
            labels[stem] = mask.astype(np.uint8)
        if not labels:
            raise ValueError(f"no usable masks in {mask_dir}" + problems.summary())
        num_classes = int(max(int(m.max()) for m in labels.values())) + 1
    channels = image_channels(images[min(labels)])
    patches = [PatchRef(source=stem, key=stem) for stem in sorted(labels)]
    class_names = ("background", "foreground") if num_classes == 1 else tuple(f"class_{c}" for c in range(num_classes))

    def loader(key: str):
        return read_image(images[key], channels=channels), labels[key]

    return Collection(
        "folder", channels, num_classes, patches, loader, {k: sizes[k] for k in labels},
        n_items=len(patches), class_names=class_names, problems=problems.messages,
    )
