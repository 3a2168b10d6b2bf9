"""TNBC, CHAOS MR, ISBI-2012 and folder loaders on fixtures generated in their release layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from chaos_fixture import write_chaos  # CHAOS tests skip themselves without pydicom
from nni_bixnas.data import build_datasets, build_eval_dataset, inspect_dataset


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def _rgb(size, seed):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3))


def test_tnbc_release_layout_pairs_by_slide_and_index(tmp_path):
    for slide in (1, 2, 3):
        for index in (1, 2):
            _png(tmp_path / f"Slide_{slide:02d}" / f"{slide:02d}_{index}.png", _rgb(32, slide * 10 + index))
            mask = np.zeros((32, 32))
            mask[: slide * 4, : index * 4] = 255
            _png(tmp_path / f"GT_{slide:02d}" / f"{slide:02d}_{index}.png", mask)
    dataset, info = build_eval_dataset(f"tnbc:{tmp_path}")
    assert (len(dataset), info.in_channels, info.num_classes, info.image_size) == (6, 3, 1, (32, 32))
    sums = sorted(float(dataset[i][1].sum()) for i in range(6))
    assert sums == sorted(float(s * 4 * i * 4) for s in (1, 2, 3) for i in (1, 2))
    _, _, split = build_datasets(f"tnbc:{tmp_path}", val_fraction=0.34)
    assert len(split.val_sources) == 1
    assert split.n_val == 2 and split.n_train == 4  # slides stay whole


def test_isbi2012_real_slices_foreground_is_cell_interior(isbi_root):
    train, val, info = build_datasets(f"isbi2012:{isbi_root}", resize=64, patch_size=32, augment=False)
    assert (info.n_source_items, info.n_train + info.n_val, info.in_channels) == (30, 30, 1)
    assert (info.image_size, info.crop_size) == ((64, 64), (32, 32))
    assert train[(0, 0)][0].shape == (1, 32, 32) and train[(0, 0)][1].shape == (1, 32, 32)
    image, mask = val[0]
    assert image.shape == (1, 64, 64) and mask.shape == (1, 64, 64)
    assert 0.6 < float(mask.mean()) < 0.95  # membranes (label 0) are the minority


def test_folder_binary_and_multiclass(tmp_path):
    for i in range(3):
        _png(tmp_path / "bin" / "images" / f"im{i}.png", _rgb(16, i)[..., 0])
        _png(tmp_path / "bin" / "masks" / f"im{i}.png", np.eye(16) * 255)
        _png(tmp_path / "img" / f"s{i}.tif", _rgb(16, i))
        labels = np.zeros((16, 16))
        labels[:4], labels[4:6] = i, 2
        _png(tmp_path / "lab" / f"s{i}.png", labels)
    dataset, info = build_eval_dataset(f"folder:{tmp_path / 'bin'}")
    assert (info.in_channels, info.num_classes) == (1, 1)
    assert dataset[0][1].shape == (1, 16, 16) and float(dataset[0][1].sum()) == 16
    dataset, info = build_eval_dataset(f"folder:{tmp_path / 'img'},{tmp_path / 'lab'}")
    assert (info.in_channels, info.num_classes) == (3, 3)
    image, mask = dataset[2]
    assert image.shape == (3, 16, 16) and mask.dtype == torch.int64 and mask.shape == (16, 16)
    assert mask[0, 0] == 2 and mask[5, 0] == 2 and mask[10, 0] == 0


def test_chaos_release_layout_five_fold_by_patient(tmp_path):
    write_chaos(tmp_path)
    train, val, info = build_datasets(f"chaos:{tmp_path}", fold=1, n_folds=5, augment=False)
    assert (info.in_channels, info.num_classes, info.image_size) == (1, 5, (256, 256))
    assert info.n_source_items == 15  # 5 patients x (in-phase, out-phase, T2-SPIR)
    assert (info.n_train, info.n_val) == (24, 6) and len(info.val_sources) == 1
    image, mask = val[0]
    assert image.shape == (1, 256, 256) and float(image.min()) == 0.0 and float(image.max()) == 1.0
    assert mask.dtype == torch.int64 and set(mask.unique().tolist()) == {0, 1, 2, 3, 4}
    assert mask[20, 20] == 1 and mask[220, 220] == 4  # liver at (2..10)*8, spleen at (20..28)*8
    folds = {build_datasets(f"chaos:{tmp_path}", fold=f, augment=False)[2].val_sources for f in range(5)}
    assert len(folds) == 5 and len(set().union(*folds)) == 5


def test_chaos_folds_depend_on_split_seed_only(tmp_path):
    write_chaos(tmp_path, patients=5, slices=1)
    folds = {
        (seed, split_seed): build_datasets(f"chaos:{tmp_path}", fold=0, seed=seed, split_seed=split_seed)[2].val_sources
        for seed in (0, 3) for split_seed in (0, 1)
    }
    assert folds[(0, 0)] == folds[(3, 0)] == ("3",) and folds[(0, 1)] == folds[(3, 1)] == ("5",)
    report = inspect_dataset(f"chaos:{tmp_path}")
    assert set(report["foreground_fraction"]) == {"liver", "right_kidney", "left_kidney", "spleen"}


def test_chaos_errors(tmp_path):
    write_chaos(tmp_path, patients=2, slices=1)
    bad = np.zeros((32, 32))
    bad[0, 0] = 100
    _png(tmp_path / "2" / "T2SPIR" / "Ground" / "IMG-0002-00001.png", bad)
    dataset, _ = build_eval_dataset(f"chaos:{tmp_path}")
    with pytest.raises(ValueError, match=r"IMG-0002-00001.png has values \{100\}"):
        [dataset[i] for i in range(len(dataset))]
    (tmp_path / "1" / "T2SPIR" / "Ground" / "IMG-0002-00001.png").unlink()
    with pytest.raises(ValueError, match="1 DICOM slices but .* 0 ground-truth PNGs"):
        build_eval_dataset(f"chaos:{tmp_path}")
    with pytest.raises(ValueError, match=r"fold must be an int in \[0, 5\)"):
        build_datasets(f"chaos:{tmp_path}", fold=5)
