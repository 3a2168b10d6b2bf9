"""``bixnas data sample``: one item of a dataset as image files, to try ``bixnas predict`` on."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np
from PIL import Image

from nni_bixnas.utils import PathLike, atomic_write

__all__ = ["SAMPLE_SPEC", "write_sample"]

#: The default: an embedded synthetic tile of another seed than the default training data's (seed 0).
SAMPLE_SPEC = "default:n=1,size=256,seed=100"


def _save(array: np.ndarray, path: Path) -> None:
    with atomic_write(path, "wb") as handle:
        Image.fromarray(array).save(handle, format="PNG")


def write_sample(out: PathLike, spec: str = SAMPLE_SPEC, index: int = 0,
                 mask: Optional[PathLike] = None) -> Dict[str, Path]:
    """Write item ``index`` of dataset ``spec`` (a patch, as training sees it) to ``out`` as a PNG (RGB, or
    grayscale for one channel) and, with ``mask``, its mask (0/255 binary, else class ids).

    Returns ``{'image': path, 'key': item name[, 'mask': path]}``. Raises ``ValueError`` for an ``index``
    outside the dataset or an ``out`` that is not a ``.png``.
    """
    from nni_bixnas.data.build import load_collection

    for name, path in (("out", out), ("mask", mask)):
        if path is not None and Path(path).suffix.lower() != ".png":
            raise ValueError(f"{name} must be a .png file, got {str(path)!r}")
    collection = load_collection(spec)
    if not isinstance(index, int) or not 0 <= index < len(collection.patches):
        raise ValueError(f"index must be in 0..{len(collection.patches) - 1} (the items of {spec!r}), got {index!r}")
    ref = collection.patches[index]
    image, truth = collection.load(ref.key)
    if ref.box:
        top, left, height, width = ref.box
        image, truth = image[:, top:top + height, left:left + width], truth[top:top + height, left:left + width]
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    image = image[0] if image.shape[0] == 1 else image[:3].transpose(1, 2, 0)
    written: Dict[str, Path] = {"image": Path(out)}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    _save(np.ascontiguousarray(image), Path(out))
    if mask is not None:
        truth = np.asarray(truth)
        values = truth * 255 if collection.num_classes == 1 else truth
        Path(mask).parent.mkdir(parents=True, exist_ok=True)
        _save(values.astype(np.uint8), Path(mask))
        written["mask"] = Path(mask)
    written["key"] = f"{ref.key}@{ref.box[0]},{ref.box[1]}" if ref.box else ref.key
    return written
