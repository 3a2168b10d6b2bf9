"""A folder of image/mask pairs (PNG, TIFF, JPEG, BMP), paired by file stem.

``folder:PATH`` expects ``PATH/images/`` and ``PATH/masks/``; ``folder:IMGDIR,MASKDIR`` names both.
Masks are single-channel: binary ({0, 1} or {0, 255}, one output class) or integer class labels
``0..K-1`` (``num_classes = K``, the largest label + 1 over the folder, at most 64). Input channels are
1 if the first image is grayscale, else 3. Each image is one patch and one split unit. Every mask is
decoded once when the dataset is built (to detect the label kind); images are decoded lazily.
"""

from __future__ import annotations

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

    expected = f"expected binary {{0, 1}} or {{0, 255}} masks, or integer class labels 0..K-1 with K <= {MAX_CLASSES}"
    found = {stem: set(np.unique(mask).tolist()) for stem, mask in decoded.items()}
    for stem, values in list(found.items()):
        if not (values <= {0, 1} or values <= {0, 255}) and max(values) >= MAX_CLASSES:
            problems.report(f"mask {masks[stem]} has values {describe_values(sorted(values))}; {expected}")
            del found[stem]
    union = set().union(*found.values())
    if union <= {0, 1} or union <= {0, 255}:
        num_classes, labels = 1, {stem: (decoded[stem] > 0).astype(np.uint8) for stem in found}
    else:
        labelled = max((stem for stem in found if max(found[stem]) < MAX_CLASSES), key=lambda s: max(found[s]))
        labels = {}
        for stem, values in found.items():
            if max(values) >= MAX_CLASSES:
                problems.report(
                    f"mask {masks[stem]} has values {describe_values(sorted(values))} but {masks[labelled]} holds "
                    f"class labels {describe_values(sorted(found[labelled]))}; {expected}, the same kind in every mask"
                )
                continue
            labels[stem] = decoded[stem].astype(np.uint8)
        num_classes = max(max(found[stem]) for stem in labels) + 1
    if not labels:
        raise ValueError(f"no usable masks in {mask_dir}; {expected}" + problems.summary())
    channels = image_channels(images[min(labels)])
    patches = [PatchRef(source=stem, key=stem) for stem in sorted(labels)]
    class_names = ("background", "foreground") if num_classes == 1 else tuple(f"class_{c}" for c in range(num_classes))

    def loader(key: str):
        return read_image(images[key], channels=channels), labels[key]

    return Collection(
        "folder", channels, num_classes, patches, loader, {k: sizes[k] for k in labels},
        n_items=len(patches), class_names=class_names, problems=problems.messages,
    )
