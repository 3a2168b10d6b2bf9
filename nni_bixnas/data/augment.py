"""Joint image + mask augmentation as in the authors' code, and random training crops, both
reproducible per (seed, epoch, index).

The authors (``Phase1tools.py``) use imgaug: rotate +-5 deg, translate +-5 %, shear +-10 deg, scale
0.8-1.2, horizontal and vertical flips with p = 0.5. Here the same with ``torchvision.transforms.v2``;
masks are ``tv_tensors.Mask`` and so are resampled with nearest interpolation. A training crop
(``patch_size``) is cut after the augmentation, at an offset drawn from the same per-item seed.
"""

from __future__ import annotations

from typing import Iterator, Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2


def joint_transform() -> v2.Compose:
    """The authors' augmentation as one transform applied to ``(tv_tensors.Image, tv_tensors.Mask)``."""
    return v2.Compose(
        [
            v2.RandomAffine(degrees=5, translate=(0.05, 0.05), scale=(0.8, 1.2), shear=10),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomVerticalFlip(p=0.5),
        ]
    )


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed that depends only on ``(seed, epoch, index)``."""
    state = np.random.SeedSequence([seed % 2**63, epoch, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def crop_offset(seed: int, size: Tuple[int, int], crop: Tuple[int, int]) -> Tuple[int, int]:
    """``(top, left)`` of a ``crop = (h, w)`` window inside ``size = (H, W)``, uniform, from ``seed``.

    Raises
    ------
    ValueError
        If the crop is larger than the item in either direction.
    """
    if crop[0] > size[0] or crop[1] > size[1]:
        raise ValueError(f"patch_size {tuple(crop)} is larger than the item size {tuple(size)}")
    rng = np.random.default_rng(seed)
    return int(rng.integers(0, size[0] - crop[0] + 1)), int(rng.integers(0, size[1] - crop[1] + 1))


class AugmentedDataset(Dataset):
    """Wraps a patch dataset; item ``i`` of epoch ``e`` is augmented from ``sample_seed(seed, e, i)``,
    then, with ``crop = (h, w)``, cropped at :func:`crop_offset` of the same seed (also when
    ``augment`` is false).

    Indexing takes a plain ``int`` (uses the epoch set by :meth:`set_epoch`) or an ``(epoch, index)``
    pair, which is what :class:`EpochSampler` yields: the pair travels to DataLoader workers with the
    index, so the result never depends on when a worker copied the dataset.
    """

    def __init__(self, dataset: Dataset, seed: int = 0, augment: bool = True, crop: Optional[Tuple[int, int]] = None):
        self.dataset = dataset
        self.seed = int(seed)
        self.augment = bool(augment)
        self.crop = tuple(crop) if crop else None
        self.epoch = 0
        self.transform = joint_transform()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        image, mask = self.dataset[index]
        seed = sample_seed(self.seed, epoch, index)
        if self.augment:
            image, mask = self._augment(image, mask, seed)
        if self.crop:
            top, left = crop_offset(seed, tuple(image.shape[-2:]), self.crop)
            rows, cols = slice(top, top + self.crop[0]), slice(left, left + self.crop[1])
            image, mask = image[..., rows, cols], mask[..., rows, cols]
        return image, mask

    def _augment(self, image: torch.Tensor, mask: torch.Tensor, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
        multi_class = mask.ndim == 2
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask[None] if multi_class else mask))
        image = image.as_subclass(torch.Tensor)
        mask = mask.as_subclass(torch.Tensor)
        return image, (mask[0] if multi_class else mask)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)``; the order of epoch ``e`` is a permutation seeded by ``seed + e``.

    Lightning calls :meth:`set_epoch` on samplers that have it at the start of every training epoch,
    so a run resumed at an epoch boundary replays exactly the batches of an uninterrupted run.
    """

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True):
        self.length = int(length)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = range(self.length)
        epoch = self.epoch
        return iter([(epoch, i) for i in order])
