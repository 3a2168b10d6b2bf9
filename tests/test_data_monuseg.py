"""MoNuSeg on the real release (skipped when ../shared/data is absent) and on tiny generated layouts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from nni_bixnas.cli import main
from nni_bixnas.data import build_datasets, inspect_dataset
from nni_bixnas.data.build import load_collection
from nni_bixnas.data.io import read_mask
from nni_bixnas.data.monuseg import rasterize_aperio_xml, read_aperio_polygons

TILE = "TCGA-B0-5710-01Z-00-DX1"  # one of the 13 tiles with both an XML and a PNG mask


def test_release_gives_120_patches_split_by_tile(monuseg_root):
    train, val, info = build_datasets(f"monuseg:{monuseg_root}", val_fraction=0.2, seed=0)
    assert info.n_source_items == 30 and info.n_train + info.n_val == 120
    assert (info.n_train, info.n_val) == (96, 24) and info.image_size == (512, 512)
    train_tiles = {ref.source for ref in train.dataset.refs}
    val_tiles = {ref.source for ref in val.refs}
    assert not train_tiles & val_tiles and len(train_tiles | val_tiles) == 30
    boxes = {ref.box for ref in val.refs if ref.source == sorted(val_tiles)[0]}
    assert boxes == {(0, 0, 512, 512), (0, 488, 512, 512), (488, 0, 512, 512), (488, 488, 512, 512)}


def test_patch_is_a_corner_crop_and_png_mask_is_preferred(monuseg_root):
    collection = load_collection(f"monuseg:{monuseg_root}")
    key = str(monuseg_root / "Tissue_Images" / f"{TILE}.tif")
    image, mask = collection.load(key)
    assert image.shape == (3, 1000, 1000) and mask.shape == (1000, 1000)
    released = read_mask(monuseg_root / "Binary_masks" / f"{TILE}.png")
    assert np.array_equal(mask, released)
    tile = np.asarray(Image.open(key).convert("RGB"))
    from nni_bixnas.data.collection import PatchDataset, PatchRef

    patch_image, patch_mask = PatchDataset(collection, [PatchRef(TILE, key, (488, 0, 512, 512))])[0]
    assert np.allclose(patch_image.numpy().transpose(1, 2, 0) * 255, tile[488:1000, 0:512], atol=1e-3)
    assert np.array_equal(patch_mask[0].numpy(), released[488:1000, 0:512])


def test_xml_and_png_masks_agree_up_to_polygon_edges(monuseg_root):
    xml = monuseg_root / "Annotations" / f"{TILE}.xml"
    filled = rasterize_aperio_xml(xml, (1000, 1000)).astype(bool)
    released = read_mask(monuseg_root / "Binary_masks" / f"{TILE}.png") > 0
    iou = (filled & released).sum() / (filled | released).sum()
    assert 0.85 < iou < 1.0
    outline = Image.new("L", (1000, 1000), 0)
    draw = ImageDraw.Draw(outline)
    for polygon in read_aperio_polygons(xml):
        draw.line([tuple(p) for p in polygon] + [tuple(polygon[0])], fill=1)
    near_edge = ndimage.binary_dilation(np.asarray(outline, bool), structure=np.ones((5, 5), bool))
    differing = filled ^ released
    assert differing.sum() > 0 and not (differing & ~near_edge).any()


def _inspect_json(spec, capsys):
    assert main(["data", "inspect", spec, "--format", "json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)


def test_cli_inspect_release_layout(monuseg_root, capsys):
    report = _inspect_json(f"monuseg:{monuseg_root}", capsys)
    assert (report["tiles"], report["patches"], report["image_size"]) == (30, 120, [512, 512])
    assert (report["channels"], report["classes"], report["problems"]) == (3, 1, [])
    assert 0.11 < report["foreground_fraction"] < 0.40


def test_cli_inspect_flat_tif_xml_folder(monuseg_root, tmp_path, capsys):
    for stem in (TILE, "TCGA-21-5786-01Z-00-DX1"):
        shutil.copy(monuseg_root / "Tissue_Images" / f"{stem}.tif", tmp_path)
        shutil.copy(monuseg_root / "Annotations" / f"{stem}.xml", tmp_path)
    shutil.copy(monuseg_root / "Tissue_Images" / "TCGA-18-5592-01Z-00-DX1.tif", tmp_path)  # no XML
    report = _inspect_json(f"monuseg:{tmp_path}", capsys)
    assert (report["tiles"], report["patches"], report["channels"]) == (2, 8, 3)
    assert 0.11 < report["foreground_fraction"] < 0.40
    assert len(report["problems"]) == 1 and "TCGA-18-5592-01Z-00-DX1.tif has no mask" in report["problems"][0]
    with pytest.raises(ValueError, match="TCGA-18-5592-01Z-00-DX1.tif has no mask"):
        build_datasets(f"monuseg:{tmp_path}")


def _write_tile(path, size, value=128):
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def test_authors_xy_layout_groups_patches_by_tile(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for tile in ("a", "b", "c"):
        for k in range(4):
            _write_tile(tmp_path / "x" / f"{tile}_{k}.png", 24)
            mask = np.zeros((24, 24), np.uint8)
            mask[2:9, 3:7] = 255
            Image.fromarray(mask).save(tmp_path / "y" / f"{tile}_{k}.png")
    train, val, info = build_datasets(f"monuseg:{tmp_path}", val_fraction=0.34)
    assert (info.n_train, info.n_val, info.n_source_items) == (8, 4, 12)
    assert info.val_sources and {r.source for r in val.refs} == set(info.val_sources)
    assert float(val[0][1].sum()) == 28.0


def test_text_report(capsys):
    assert main(["data", "inspect", "default:n=3,size=32"]) == 0
    out = capsys.readouterr().out
    assert "tiles:               3" in out and "foreground fraction:" in out
    report = inspect_dataset("default:n=3,size=32")
    assert report["patches"] == 3 and report["image_size"] == [32, 32]
