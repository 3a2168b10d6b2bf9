"""``patch_size`` is a random training crop, ``resize`` resizes everything, ``split_seed`` alone splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nni_bixnas.data import SegDataModule, build_datasets, build_eval_dataset
from nni_bixnas.data.augment import crop_offset, sample_seed

SPEC = "default:n=10,size=64,seed=3"

# (seed, item size, crop) -> (top, left); numpy's PCG64 stream, so exact
TEST_CASES_OFFSET = [
    [0, (64, 64), (32, 32), (28, 21)],
    [1, (64, 64), (32, 32), (15, 16)],
    [12345, (512, 512), (256, 256), (179, 58)],
    [7, (48, 40), (32, 16), (16, 15)],
    [3, (32, 32), (32, 32), (0, 0)],
]


@pytest.mark.parametrize("seed, size, crop, expected", TEST_CASES_OFFSET)
def test_crop_offset_is_exact_and_inside(seed, size, crop, expected):
    top, left = crop_offset(seed, size, crop)
    assert (top, left) == expected
    assert 0 <= top <= size[0] - crop[0] and 0 <= left <= size[1] - crop[1]


# (seed, epoch, index) -> offset of a 32x32 crop in a 64x64 item
TEST_CASES_ITEM = [
    [0, 0, 0, (5, 5)],
    [0, 1, 0, (10, 29)],
    [0, 0, 1, (12, 6)],
    [5, 2, 3, (20, 17)],
]


@pytest.mark.parametrize("seed, epoch, index, offset", TEST_CASES_ITEM)
def test_unaugmented_training_item_is_the_seeded_crop_of_the_full_patch(seed, epoch, index, offset):
    train, val, info = build_datasets(SPEC, seed=seed, patch_size=32, augment=False)
    assert crop_offset(sample_seed(seed, epoch, index), (64, 64), (32, 32)) == offset
    image, mask = train[(epoch, index)]
    full_image, full_mask = train.dataset[index]
    top, left = offset
    assert image.shape == (3, 32, 32) and mask.shape == (1, 32, 32)
    assert torch.equal(image, full_image[:, top : top + 32, left : left + 32])
    assert torch.equal(mask, full_mask[:, top : top + 32, left : left + 32])
    assert val[0][0].shape == (3, 64, 64)  # validation keeps full patches
    assert (info.image_size, info.crop_size) == ((64, 64), (32, 32))


def test_augmented_crops_are_reproducible_and_change_with_epoch():
    train, _, _ = build_datasets(SPEC, seed=4, patch_size=(24, 40))
    first = train[(1, 2)]
    assert first[0].shape == (3, 24, 40) and first[1].shape == (1, 24, 40)
    torch.manual_seed(99)  # the global RNG does not matter
    assert all(torch.equal(a, b) for a, b in zip(first, train[(1, 2)]))
    assert not torch.equal(first[0], train[(2, 2)][0])
    assert set(first[1].unique().tolist()) <= {0.0, 1.0}


# resize, patch_size -> (train item HxW, validation item HxW == info.image_size, info.crop_size)
TEST_CASES_SIZES = [
    [None, None, (64, 64), (64, 64), None],
    [None, 32, (32, 32), (64, 64), (32, 32)],
    [48, None, (48, 48), (48, 48), None],
    [48, 32, (32, 32), (48, 48), (32, 32)],
    [(40, 48), (16, 24), (16, 24), (40, 48), (16, 24)],
]


@pytest.mark.parametrize("resize, patch_size, train_hw, val_hw, crop_size", TEST_CASES_SIZES)
def test_resize_then_crop_sizes(resize, patch_size, train_hw, val_hw, crop_size):
    train, val, info = build_datasets(SPEC, resize=resize, patch_size=patch_size)
    assert tuple(train[(0, 0)][0].shape[-2:]) == train_hw and tuple(train[(0, 0)][1].shape[-2:]) == train_hw
    assert tuple(val[0][0].shape[-2:]) == val_hw and tuple(val[0][1].shape[-2:]) == val_hw
    assert (info.image_size, info.crop_size) == (val_hw, crop_size)


def test_resize_is_applied_before_the_crop():
    train, _, _ = build_datasets(SPEC, resize=48, patch_size=32, augment=False, seed=2)
    top, left = crop_offset(sample_seed(2, 0, 1), (48, 48), (32, 32))
    resized = train.dataset[1][0]
    assert resized.shape == (3, 48, 48)
    assert torch.equal(train[(0, 1)][0], resized[:, top : top + 32, left : left + 32])


def test_eval_dataset_is_full_size_unless_resized():
    dataset, info = build_eval_dataset("default:n=3,size=64")
    assert dataset[0][0].shape == (3, 64, 64) and info.image_size == (64, 64) and info.n_val == 3
    dataset, info = build_eval_dataset("default:n=3,size=64", resize=32)
    image, mask = dataset[0]
    assert image.shape == (3, 32, 32) and mask.shape == (1, 32, 32) and info.image_size == (32, 32)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("kwargs, match", [
    [{"patch_size": 80}, r"patch_size \(80, 80\) is larger than the default items, which are \(64, 64\);"],
    [{"patch_size": (32, 65)}, r"patch_size \(32, 65\) is larger than the default items, which are \(64, 64\);"],
    [{"patch_size": 48, "resize": 32}, r"patch_size \(48, 48\) is larger .* \(32, 32\) after resize"],
])
def test_crop_larger_than_the_items_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_datasets(SPEC, **kwargs)


def test_items_of_different_sizes_need_resize(tmp_path):
    for stem, size in (("a", 16), ("b", 24), ("c", 24)):
        for folder in ("images", "masks"):
            (tmp_path / folder).mkdir(exist_ok=True)
            Image.fromarray(np.zeros((size, size), np.uint8)).save(tmp_path / folder / f"{stem}.png")
    with pytest.raises(ValueError, match=r"items have different sizes \[\(16, 16\), \(24, 24\)\]; pass resize"):
        build_datasets(f"folder:{tmp_path}", patch_size=8)
    train, val, info = build_datasets(f"folder:{tmp_path}", resize=20, patch_size=8, val_fraction=0.34)
    assert info.image_size == (20, 20) and val[0][0].shape == (1, 20, 20) and train[(0, 0)][0].shape == (1, 8, 8)


# split_seed -> validation tiles of the 10 default tiles, whatever the training seed
TEST_CASES_SPLIT = [
    [0, ("synthetic_0004", "synthetic_0006")],
    [1, ("synthetic_0004", "synthetic_0008")],
    [2, ("synthetic_0000", "synthetic_0002")],
]


@pytest.mark.parametrize("split_seed, val_sources", TEST_CASES_SPLIT)
@pytest.mark.parametrize("seed", [0, 1, 17])
def test_split_depends_on_split_seed_only(split_seed, val_sources, seed):
    _, _, info = build_datasets(SPEC, seed=seed, split_seed=split_seed)
    assert (info.val_sources, info.split_seed) == (val_sources, split_seed)


def test_seed_still_changes_augmentation_and_crops_within_one_split():
    a_train, _, a = build_datasets(SPEC, seed=0, patch_size=32)
    b_train, _, b = build_datasets(SPEC, seed=1, patch_size=32)
    assert a.val_sources == b.val_sources
    assert not torch.equal(a_train[(0, 0)][0], b_train[(0, 0)][0])


def test_datamodule_passes_split_seed_resize_and_crop():
    module = SegDataModule("default:n=8,size=32", batch_size=2, seed=5, split_seed=1, patch_size=16, resize=24)
    assert module.trace_kwargs["split_seed"] == 1 and module.trace_kwargs["resize"] == 24
    info = module.info
    assert (info.image_size, info.crop_size, info.split_seed) == ((24, 24), (16, 16), 1)
    assert info.val_sources == SegDataModule("default:n=8,size=32", seed=0, split_seed=1).info.val_sources
    images, masks = next(iter(module.train_dataloader(epoch=0)))
    assert images.shape == (2, 3, 16, 16) and masks.shape == (2, 1, 16, 16)
    images, masks = next(iter(module.val_dataloader()))
    assert images.shape[-2:] == (24, 24) and masks.shape[-2:] == (24, 24)
