"""Every bad input gives one clear error naming the file, the values or the expected layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nni_bixnas.cli import main
from nni_bixnas.data import build_datasets, build_eval_dataset, inspect_dataset


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def _pair(root, stem, size=16, mask_size=None, mask_values=(0, 255)):
    _png(root / "images" / f"{stem}.png", np.full((size, size, 3), 90))
    side = mask_size or size
    mask = np.full((side, side), mask_values[0])
    mask[: side // 2] = mask_values[1]
    _png(root / "masks" / f"{stem}.png", mask)


def test_wrong_scheme(tmp_path):
    with pytest.raises(ValueError, match="unknown data scheme 'nuclei'.*valid schemes: monuseg, tnbc, chaos"):
        build_datasets(f"nuclei:{tmp_path}")


@pytest.mark.parametrize("scheme, hint", [
    ["monuseg", "monuseg.grand-challenge.org.*Tissue_Images"],
    ["tnbc", "Slide_XX"],
    ["chaos", "T1DUAL"],
    ["isbi2012", "image/"],
    ["folder", "images/ and PATH/masks/"],
])
def test_missing_path_says_where_to_get_data(tmp_path, scheme, hint):
    with pytest.raises(FileNotFoundError, match=f"does not exist.*{hint}"):
        build_datasets(f"{scheme}:{tmp_path / 'nowhere'}")


@pytest.mark.parametrize("scheme, hint", [
    ["monuseg", "no usable MoNuSeg image/mask pairs.*monuseg.grand-challenge.org"],
    ["tnbc", "no usable TNBC"],
    ["isbi2012", "no image/ and label/"],
])
def test_empty_folder(tmp_path, scheme, hint):
    (tmp_path / "junk.txt").write_text("not data")
    with pytest.raises(ValueError, match=hint):
        build_datasets(f"{scheme}:{tmp_path}")


def test_empty_image_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match="no images"):
        build_datasets(f"folder:{tmp_path}")


def test_image_without_mask_names_the_file(tmp_path):
    _pair(tmp_path, "a")
    _png(tmp_path / "images" / "lonely.png", np.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match=r"lonely.png has no mask"):
        build_datasets(f"folder:{tmp_path}")
    report = inspect_dataset(f"folder:{tmp_path}")  # inspect lists it and goes on
    assert report["patches"] == 1 and "lonely.png has no mask" in report["problems"][0]


def test_mask_of_another_size(tmp_path):
    _pair(tmp_path, "a")
    _pair(tmp_path, "b", size=16, mask_size=12)
    with pytest.raises(ValueError, match=r"mask .*b.png is 12x12 \(WxH\) but its image .*b.png is 16x16"):
        build_datasets(f"folder:{tmp_path}")


def test_corrupt_image_names_the_file(tmp_path):
    _pair(tmp_path, "a")
    _pair(tmp_path, "b")
    (tmp_path / "images" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match=r"cannot read image file .*images/b.png"):
        build_datasets(f"folder:{tmp_path}")


def test_truncated_tile_fails_on_load_naming_the_file(tmp_path):
    tiles, masks = tmp_path / "Tissue_Images", tmp_path / "Binary_masks"
    tiles.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tiles / "t.tif")
    _png(masks / "t.png", np.zeros((64, 64)))
    data = (tiles / "t.tif").read_bytes()
    (tiles / "t.tif").write_bytes(data[: len(data) // 2])
    dataset, _ = build_eval_dataset(f"monuseg:{tmp_path}")
    with pytest.raises(ValueError, match=r"cannot read image file .*t.tif"):
        dataset[0]


def test_mask_with_unexpected_values(tmp_path):
    _pair(tmp_path, "a")
    _pair(tmp_path, "b", mask_values=(100, 200))
    with pytest.raises(ValueError, match=r"mask .*b.png has values \{100, 200\}; expected binary"):
        build_datasets(f"folder:{tmp_path}")


def test_monuseg_mask_with_unexpected_values(tmp_path):
    _png(tmp_path / "Tissue_Images" / "t.png", np.zeros((16, 16, 3)))
    _png(tmp_path / "Binary_masks" / "t.png", np.arange(256).reshape(16, 16) % 3)
    dataset, _ = build_eval_dataset(f"monuseg:{tmp_path}")
    with pytest.raises(ValueError, match=r"mask .*t.png has values \{0, 1, 2\}"):
        dataset[0]
    report = inspect_dataset(f"monuseg:{tmp_path}")
    assert report["patches"] == 0 and "has values {0, 1, 2}" in report["problems"][0]


def test_bad_xml_names_the_file(tmp_path):
    _png(tmp_path / "t.tif", np.zeros((16, 16, 3)))
    (tmp_path / "t.xml").write_text("<Annotations><Region><Vertex X='1'")
    dataset, _ = build_eval_dataset(f"monuseg:{tmp_path}")
    with pytest.raises(ValueError, match=r"cannot read Aperio XML annotation .*t.xml"):
        dataset[0]


@pytest.mark.parametrize("kwargs, match", [
    [{"val_fraction": 1.0}, "val_fraction"],
    [{"patch_size": 0}, "patch_size must be a positive int or an \\(H, W\\) pair of them, got 0"],
    [{"resize": (8, -1)}, "resize must be a positive int or an \\(H, W\\) pair of them, got \\(8, -1\\)"],
    [{"split_seed": -1}, "split_seed must be a non-negative int, got -1"],
    [{"split_seed": 1.5}, "split_seed must be a non-negative int, got 1.5"],
    [{"seed": "0"}, "seed must be an int, got '0'"],
    [{"fold": 5, "n_folds": 5}, "fold"],
    [{"n_folds": 1}, "n_folds"],
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_datasets("default:n=4,size=16", **kwargs)


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main(["data", "inspect", f"monuseg:{tmp_path / 'nowhere'}", "--format", "json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bixnas data: error: MoNuSeg folder") and err.count("\n") == 1


def test_mixed_mask_kinds_blame_the_odd_file(tmp_path):
    _pair(tmp_path, "a", mask_values=(0, 2))
    _pair(tmp_path, "b", mask_values=(0, 255))
    with pytest.raises(ValueError, match=r"mask .*b.png has values \{0, 255\} but .*a.png holds class labels \{0, 2\}"):
        build_datasets(f"folder:{tmp_path}")
