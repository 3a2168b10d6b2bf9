"""The common shape of every dataset: source items (tiles, slides, patients) cut into patches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

# key -> (image (C, H, W) uint8 or float32 in [0, 1], mask (H, W) integer class ids)
Loader = Callable[[str], Tuple[np.ndarray, np.ndarray]]
PatchSize = Union[int, Tuple[int, int], None]


@dataclass(frozen=True)
class PatchRef:
    """One training item: a crop ``box = (top, left, height, width)`` of the decoded item ``key``.

    ``source`` is the unit that train/validation splits keep together (tile, slide, patient).
    """

    source: str
    key: str
    box: Optional[Tuple[int, int, int, int]] = None


@dataclass
class Collection:
    """Everything a loader found: patches, how to decode them, and what went wrong.

    Decoded items are cached in memory (MoNuSeg: 30 tiles of about 4 MB with their masks).
    """

    name: str
    in_channels: int
    num_classes: int
    patches: List[PatchRef]
    loader: Loader
    sizes: Dict[str, Tuple[int, int]]  # key -> (H, W) of the decoded item
    n_items: int  # source images / volumes found (tiles, slides' images, MR series)
    class_names: Tuple[str, ...] = ("background", "foreground")
    problems: List[str] = field(default_factory=list)
    masks: Optional[str] = None  # which masks a MoNuSeg loader used: "png" or "xml"
    _cache: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def sources(self) -> List[str]:
        return sorted({ref.source for ref in self.patches})

    def load(self, key: str) -> Tuple[np.ndarray, np.ndarray]:
        if key not in self._cache:
            self._cache[key] = self.loader(key)
        return self._cache[key]

    def patch_shape(self, ref: PatchRef) -> Tuple[int, int]:
        return (ref.box[2], ref.box[3]) if ref.box else self.sizes[ref.key]

    def image_size(self) -> Optional[Tuple[int, int]]:
        """The common ``(H, W)`` of all patches, or ``None`` if they differ."""
        shapes = {self.patch_shape(ref) for ref in self.patches}
        return shapes.pop() if len(shapes) == 1 else None


def corner_boxes(height: int, width: int, patch: int = 512) -> List[Tuple[int, int, int, int]]:
    """The paper's four corner crops: offsets (0,0), (0,W-p), (H-p,0), (H-p,W-p); 488 for 1000x1000.

    An item no larger than ``patch`` in either direction is one patch, uncropped.
    """
    if height <= patch or width <= patch:
        return [(0, 0, height, width)]
    boxes = []
    for top in (0, height - patch):
        for left in (0, width - patch):
            if (top, left, patch, patch) not in boxes:
                boxes.append((top, left, patch, patch))
    return boxes


def normalize_size(size: PatchSize, name: str = "patch_size") -> Optional[Tuple[int, int]]:
    """``None``, ``n`` or ``(H, W)`` -> ``None`` or ``(H, W)``; anything else is an error naming ``name``."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair)
    ):
        raise ValueError(f"{name} must be a positive int or an (H, W) pair of them, got {size!r}")
    return tuple(pair)


def resize_pair(image: torch.Tensor, mask: torch.Tensor, size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Image ``(C, H, W)`` bilinear (antialiased, clamped to [0, 1]) and mask ``(H, W)`` nearest to ``size``."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, mask
    image = F.interpolate(image[None], size, mode="bilinear", antialias=True, align_corners=False)[0].clamp_(0.0, 1.0)
    mask = F.interpolate(mask[None, None].float(), size, mode="nearest")[0, 0].long()
    return image, mask


class PatchDataset(Dataset):
    """Patches of a :class:`Collection` as ``(image, mask)`` tensors.

    Images are float32 ``(C, H, W)`` in [0, 1]. Masks are float32 ``(1, H, W)`` in {0, 1} when the
    collection is binary (``num_classes == 1``), else int64 ``(H, W)`` class ids. With ``resize``
    every patch is resized (image: bilinear, antialiased; mask: nearest) to that size.
    """

    def __init__(self, collection: Collection, refs: Sequence[PatchRef], resize: PatchSize = None):
        self.collection = collection
        self.refs = list(refs)
        self.resize = normalize_size(resize, "resize")

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        ref = self.refs[index]
        image, mask = self.collection.load(ref.key)
        if ref.box:
            top, left, height, width = ref.box
            image = image[:, top : top + height, left : left + width]
            mask = mask[top : top + height, left : left + width]
        image_t = torch.from_numpy(np.array(image))  # a copy: decoded arrays are read-only and cached
        image_t = image_t.float() / 255.0 if image_t.dtype == torch.uint8 else image_t.float()
        mask_t = torch.from_numpy(np.array(mask)).long()
        if self.resize:
            image_t, mask_t = resize_pair(image_t, mask_t, self.resize)
        if self.collection.num_classes == 1:
            return image_t, mask_t.float().unsqueeze(0)
        return image_t, mask_t
