"""MoNuSeg on the real release (skipped when ../shared/data is absent) and on tiny generated layouts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from nni_bixnas.cli import main
from nni_bixnas.data import build_datasets, build_eval_dataset, inspect_dataset
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


def test_patch_is_a_corner_crop_and_auto_uses_png_masks(monuseg_root):
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
    assert report["masks"] == "png"  # only 13 of the 30 tiles have an XML annotation
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


# --- the masks choice on the real release (13 of 30 tiles have XML) -------------------------------


def test_release_masks_auto_is_png_and_xml_is_refused(monuseg_root):
    for spec in (f"monuseg:{monuseg_root}", f"monuseg:{monuseg_root}?masks=auto", f"monuseg:{monuseg_root}?masks=png"):
        _, info = build_eval_dataset(spec)
        assert (info.masks, info.n_val) == ("png", 120)
    with pytest.raises(ValueError, match=r"masks=xml but 17 of 30 tiles have no XML mask in .*Annotations: TCGA-"):
        build_datasets(f"monuseg:{monuseg_root}?masks=xml")


def test_release_crop_for_training_full_patches_for_validation(monuseg_root):
    train, val, info = build_datasets(f"monuseg:{monuseg_root}", patch_size=256, augment=False)
    assert (info.image_size, info.crop_size, info.masks) == ((512, 512), (256, 256), "png")
    assert train[(0, 0)][0].shape == (3, 256, 256) and val[0][0].shape == (3, 512, 512)
    too_big = r"patch_size \(600, 600\) is larger than the monuseg items, which are \(512, 512\)"
    with pytest.raises(ValueError, match=too_big):
        build_datasets(f"monuseg:{monuseg_root}", patch_size=600)


# --- the masks choice on generated release layouts ------------------------------------------------

PNG_BOX = (slice(2, 6), slice(2, 8))  # 24 foreground pixels
XML_SQUARE = [(10, 10), (19, 10), (19, 19), (10, 19)]  # filled with its outline: 100 pixels


def _release(root, tiles="abc", xml="abc", png="abc", size=24):
    """Tissue_Images/<t>.tif for ``tiles``, Annotations/<t>.xml for ``xml``, Binary_masks/<t>.png for ``png``."""
    for folder in ("Tissue_Images", "Annotations", "Binary_masks"):
        (root / folder).mkdir()
    for tile in tiles:
        _write_tile(root / "Tissue_Images" / f"{tile}.tif", size)
    for tile in xml:
        vertices = "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in XML_SQUARE)
        (root / "Annotations" / f"{tile}.xml").write_text(
            f"<Annotations><Annotation><Regions><Region><Vertices>{vertices}</Vertices></Region></Regions>"
            "</Annotation></Annotations>"
        )
    for tile in png:
        mask = np.zeros((size, size), np.uint8)
        mask[PNG_BOX] = 255
        Image.fromarray(mask).save(root / "Binary_masks" / f"{tile}.png")


# (tiles with XML, tiles with PNG, masks option) -> (masks used, foreground pixels of every tile)
TEST_CASES_MASKS = [
    ["abc", "abc", "auto", "xml", 100],
    ["abc", "abc", "xml", "xml", 100],
    ["abc", "abc", "png", "png", 24],
    ["ab", "abc", "auto", "png", 24],  # not every tile has XML: PNG for all, never a mix
    ["", "abc", "auto", "png", 24],
    ["abc", "", "auto", "xml", 100],
    ["abc", "a", "auto", "xml", 100],
]


@pytest.mark.parametrize("xml, png, option, kind, pixels", TEST_CASES_MASKS)
def test_one_kind_of_mask_for_every_tile(tmp_path, xml, png, option, kind, pixels):
    _release(tmp_path, xml=xml, png=png)
    dataset, info = build_eval_dataset(f"monuseg:{tmp_path}?masks={option}")
    assert (info.masks, len(dataset)) == (kind, 3)
    assert [float(dataset[i][1].sum()) for i in range(3)] == [pixels] * 3
    assert inspect_dataset(f"monuseg:{tmp_path}?masks={option}")["masks"] == kind


TEST_CASES_MISSING = [
    ["ab", "abc", "xml", r"masks=xml but 1 of 3 tiles have no XML mask in .*Annotations: c.tif; use masks=png or "],
    ["abc", "a", "png", r"masks=png but 2 of 3 tiles have no PNG mask in .*Binary_masks: b.tif, c.tif; use masks=xml"],
    ["", "", "xml", r"masks=xml but 3 of 3 tiles have no XML mask"],
]


@pytest.mark.parametrize("xml, png, option, match", TEST_CASES_MISSING)
def test_chosen_kind_missing_for_some_tiles_is_one_error(tmp_path, xml, png, option, match):
    _release(tmp_path, xml=xml, png=png)
    with pytest.raises(ValueError, match=match):
        build_datasets(f"monuseg:{tmp_path}?masks={option}")
    with pytest.raises(ValueError, match=match):  # a wrong choice is an error for inspect too
        inspect_dataset(f"monuseg:{tmp_path}?masks={option}")


def test_auto_xml_fallback_lists_tiles_without_any_mask(tmp_path):
    _release(tmp_path, xml="ab", png="")
    with pytest.raises(ValueError, match=r"c.tif has no mask \(expected .*Annotations/c.xml\)"):
        build_datasets(f"monuseg:{tmp_path}")
    report = inspect_dataset(f"monuseg:{tmp_path}")
    assert (report["masks"], report["patches"], len(report["problems"])) == ("xml", 2, 1)


def test_cli_inspect_reports_the_masks(tmp_path, capsys):
    _release(tmp_path, xml="abc", png="ab")
    assert main(["data", "inspect", f"monuseg:{tmp_path}"]) == 0
    assert "masks:               xml" in capsys.readouterr().out
    assert _inspect_json(f"monuseg:{tmp_path}?masks=xml", capsys)["masks"] == "xml"
    assert main(["data", "inspect", f"monuseg:{tmp_path}?masks=png"]) == 2
    assert "masks=png but 1 of 3 tiles have no PNG mask" in capsys.readouterr().err
    assert _inspect_json("default:n=2,size=16", capsys)["masks"] is None
    assert main(["data", "inspect", "default:n=2,size=16"]) == 0
    assert "masks:" not in capsys.readouterr().out


def test_layouts_with_one_kind_refuse_the_other(tmp_path):
    (tmp_path / "flat").mkdir()
    _write_tile(tmp_path / "flat" / "t.tif", 16)
    with pytest.raises(ValueError, match=r"masks=png needs the release layout .*flat folder .* use masks=xml or "):
        build_datasets(f"monuseg:{tmp_path / 'flat'}?masks=png")
    for folder in ("x", "y"):
        (tmp_path / "xy" / folder).mkdir(parents=True)
    with pytest.raises(ValueError, match=r"masks=xml needs the release layout .*x/ \+ y/ layout.* use masks=png"):
        build_datasets(f"monuseg:{tmp_path / 'xy'}?masks=xml")


def test_other_schemes_report_no_masks():
    _, _, info = build_datasets("default:n=4,size=16")
    assert info.masks is None and inspect_dataset("default:n=4,size=16")["masks"] is None
