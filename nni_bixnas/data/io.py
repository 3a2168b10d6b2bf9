"""Reading images and masks with clear, file-naming errors (Pillow only; no tifffile needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def list_images(folder: Path) -> List[Path]:
    """Image files directly inside ``folder`` (sorted; hidden files skipped)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def by_stem(paths: Sequence[Path]) -> Dict[str, Path]:
    """Map file stem -> path; two files with one stem (``a.png``, ``a.tif``) is an error."""
    out: Dict[str, Path] = {}
    for path in paths:
        if path.stem in out:
            raise ValueError(f"two files share the stem {path.stem!r}: {out[path.stem]} and {path}")
        out[path.stem] = path
    return out


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image file {path}: {err}") from err
    return image


def image_size(path: Path) -> Tuple[int, int]:
    """``(H, W)`` from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image file {path}: {err}") from err
    return height, width


def image_channels(path: Path) -> int:
    """1 for a grayscale file, 3 otherwise (colour, palette and alpha images are read as RGB)."""
    try:
        with Image.open(path) as image:
            mode = image.mode
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image file {path}: {err}") from err
    return 1 if mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F") else 3


def read_image(path: Path, channels: int) -> np.ndarray:
    """Decode ``path`` to ``(C, H, W)``: uint8 for 8-bit files, float32 in [0, 1] for 16-bit/float ones.

    A float image with NaN/inf pixels is a ``ValueError`` naming the file and the count (they would make
    every loss NaN, or be silently clipped).
    """
    image = _open(path)
    if image.mode == "F":
        check_finite(np.asarray(image), path)
    if channels == 3:
        array = np.asarray(image.convert("RGB"))
        return np.ascontiguousarray(array.transpose(2, 0, 1))
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I") else max(float(array.max()), 1.0)
        return (np.clip(array, 0, peak) / peak)[None]
    return np.asarray(image.convert("L"))[None]


def check_finite(array: np.ndarray, path: Path, what: str = "image") -> None:
    """Raise a ``ValueError`` naming ``path`` and counting its NaN/inf values, if it has any."""
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise ValueError(
            f"{what} file {path} has {bad} non-finite pixel value(s) (NaN or inf) of {array.size}; "
            "fix or remove the file (`bixnas data inspect` lists every such file)"
        )


def read_mask(path: Path) -> np.ndarray:
    """Decode a single-channel label image to ``(H, W)`` int64 (RGB with equal channels is accepted)."""
    image = _open(path)
    array = np.asarray(image)
    if image.mode == "F":
        check_finite(array, path, "mask")
    if array.ndim == 3:  # palette ("P") images decode to their indices, i.e. 2-D
        colour = array[..., :3]
        if not (np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2])):
            raise ValueError(f"mask {path} is a colour image; expected a single-channel label image")
        array = colour[..., 0]
    return array.astype(np.int64)


def binarize(mask: np.ndarray, path: Path) -> np.ndarray:
    """{0, 1} or {0, 255} -> uint8 {0, 1}; anything else is an error naming the file and its values."""
    values = np.unique(mask)
    if set(values.tolist()) <= {0, 1}:
        return mask.astype(np.uint8)
    if set(values.tolist()) <= {0, 255}:
        return (mask > 0).astype(np.uint8)
    raise ValueError(
        f"mask {path} has values {describe_values(values)}; expected a binary mask with values {{0, 1}} or {{0, 255}}"
    )


def describe_values(values: np.ndarray, limit: int = 8) -> str:
    values = [int(v) for v in values]
    shown = ", ".join(map(str, values[:limit]))
    return "{" + shown + (f", ... ({len(values)} distinct)" if len(values) > limit else "") + "}"


def check_same_size(image_path: Path, mask_path: Path) -> Tuple[int, int]:
    """Header sizes of an image and its mask must agree; returns ``(H, W)``."""
    size, mask_size = image_size(image_path), image_size(mask_path)
    if size != mask_size:
        raise ValueError(
            f"mask {mask_path} is {mask_size[1]}x{mask_size[0]} (WxH) but its image {image_path} is "
            f"{size[1]}x{size[0]}"
        )
    return size
