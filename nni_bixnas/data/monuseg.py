"""MoNuSeg 2018 (Kumar et al., IEEE TMI 2017): H&E tiles with nuclei annotations.

Accepted layouts (images and masks paired by file stem):

- the release: ``<root>/Tissue_Images/*.tif`` with ``<root>/Annotations/*.xml`` (Aperio polygons)
  and/or ``<root>/Binary_masks/*.png`` ({0, 1} or {0, 255}). One kind of mask is used for every tile,
  never a per-tile mix, chosen by the spec option ``masks``: ``monuseg:PATH?masks=xml`` (polygons
  filled with Pillow), ``?masks=png`` (the released masks, slightly thinner at nucleus borders than
  the plain polygon fill) or ``?masks=auto`` (the default: XML when every tile has an XML file, else
  PNG when any PNG mask exists, else XML). An explicit ``xml`` or ``png`` with tiles lacking that mask
  is one error naming them;
- a flat folder of ``*.tif`` tiles with their ``*.xml`` annotations beside them (XML only);
- the BiX-NAS authors' preprocessed layout: ``<root>/x/<name>`` images and ``<root>/y/<name>`` masks
  with the same file names, masks 0/255 (PNG only).

Each tile is cut into the paper's four 512x512 corner patches, at offsets (0, 0), (0, 488), (488, 0)
and (488, 488) for a 1000x1000 tile (120 patches from the 30 training tiles); an item of at most 512 px
is one patch. Splits keep all patches of a tile together (for ``x/``+``y/`` a trailing ``_<n>`` in the
file name is taken as the patch number and stripped to find the tile).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .collection import Collection, PatchRef, corner_boxes
from .io import binarize, by_stem, check_same_size, image_size, list_images, read_image, read_mask
from .problems import Problems

HELP = (
    "Download the MoNuSeg 2018 training data from the challenge page "
    "(https://monuseg.grand-challenge.org/Data/) and point to the unzipped folder, which holds "
    "Tissue_Images/*.tif with Annotations/*.xml and/or Binary_masks/*.png (choose with ?masks=xml or "
    "?masks=png); a flat folder of .tif tiles with their .xml beside them, or an x/ + y/ folder pair, also works"
)
PATCH = 512


def read_aperio_polygons(path: Path) -> List[np.ndarray]:
    """The ``Region/Vertices/Vertex X, Y`` polygons of an Aperio ImageScope XML file, as ``(N, 2)`` x, y."""
    try:
        root = ET.parse(path).getroot()
        polygons = []
        for region in root.iter("Region"):
            points = [(float(v.attrib["X"]), float(v.attrib["Y"])) for v in region.iter("Vertex")]
            if len(points) >= 3:
                polygons.append(np.asarray(points))
    except (ET.ParseError, KeyError, ValueError, OSError) as err:
        raise ValueError(f"cannot read Aperio XML annotation {path}: {err}") from err
    return polygons


def rasterize_aperio_xml(path: Path, size: Tuple[int, int]) -> np.ndarray:
    """Fill the polygons of ``path`` with 1 on a ``size = (H, W)`` uint8 canvas (Pillow ``polygon``)."""
    canvas = Image.new("L", (size[1], size[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in read_aperio_polygons(path):
        draw.polygon([tuple(p) for p in polygon], fill=1)
    return np.asarray(canvas, dtype=np.uint8)


def _release_masks(root: Path, images: List[Path], choice: str) -> Tuple[str, Dict[str, Path]]:
    """(kind, masks by stem) of the release layout for ``masks=choice`` (see the module docstring)."""
    xml = {p.stem: p for p in sorted((root / "Annotations").glob("*.xml"))} if (root / "Annotations").is_dir() else {}
    png = by_stem(list_images(root / "Binary_masks")) if (root / "Binary_masks").is_dir() else {}
    if choice == "auto":
        every_xml = bool(images) and all(p.stem in xml for p in images)
        choice = "xml" if every_xml or not png else "png"
    else:
        _require_every_tile(root, images, xml if choice == "xml" else png, choice)
    return choice, xml if choice == "xml" else png


def _require_every_tile(root: Path, images: List[Path], masks: Dict[str, Path], kind: str) -> None:
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        folder, other = (root / "Annotations", "png") if kind == "xml" else (root / "Binary_masks", "xml")
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(
            f"masks={kind} but {len(missing)} of {len(images)} tiles have no {kind.upper()} mask in {folder}: "
            f"{shown}; use masks={other} or masks=auto"
        )


def _pairs(root: Path, choice: str) -> Tuple[str, str, List[Path], Dict[str, Path]]:
    """(layout, mask kind, images, masks by stem) for the layouts above."""
    if (root / "Tissue_Images").is_dir():
        images = list_images(root / "Tissue_Images")
        kind, masks = _release_masks(root, images, choice)
        return "release", kind, images, masks
    if (root / "x").is_dir() and (root / "y").is_dir():
        _check_layout_kind(root, "the x/ + y/ layout", "png", choice)
        return "xy", "png", list_images(root / "x"), {p.name: p for p in list_images(root / "y")}
    _check_layout_kind(root, "a flat folder of .tif tiles", "xml", choice)
    images = [p for p in list_images(root) if p.suffix.lower() in (".tif", ".tiff")]
    return "flat", "xml", images, {p.stem: p for p in sorted(root.glob("*.xml"))}


def _check_layout_kind(root: Path, layout: str, kind: str, choice: str) -> None:
    if choice not in ("auto", kind):
        raise ValueError(
            f"masks={choice} needs the release layout (Tissue_Images/ with Annotations/ or Binary_masks/); "
            f"{root} is {layout}, which has {kind.upper()} masks only: use masks={kind} or masks=auto"
        )


def load_monuseg(spec, strict: bool = True) -> Collection:
    """Discover a MoNuSeg folder (see the module docstring). Decoding is lazy and cached."""
    root = spec.path
    if not root.is_dir():
        raise FileNotFoundError(f"MoNuSeg folder {root} does not exist. {HELP}")
    layout, kind, images, masks = _pairs(root, spec.option("masks"))
    problems = Problems(strict)
    patches, sizes, sources = [], {}, {}
    for image_path in images:
        name = image_path.name if layout == "xy" else image_path.stem
        mask_path = masks.get(name)
        if mask_path is None:
            expected = _expected_mask(root, layout, kind, image_path)
            problems.report(f"image {image_path} has no mask (expected {expected})")
            continue
        try:
            size = image_size(image_path) if mask_path.suffix == ".xml" else check_same_size(image_path, mask_path)
        except ValueError as err:
            problems.report(str(err))
            continue
        key = str(image_path)
        sizes[key] = size
        sources[key] = (image_path, mask_path)
        tile = re.sub(r"_\d+$", "", image_path.stem) if layout == "xy" else image_path.stem
        patches += [PatchRef(source=tile, key=key, box=box) for box in corner_boxes(*size, PATCH)]
    if not patches:
        raise ValueError(f"no usable MoNuSeg image/mask pairs in {root}. {HELP}" + problems.summary())

    def loader(key: str):
        image_path, mask_path = sources[key]
        image = read_image(image_path, channels=3)
        if mask_path.suffix.lower() == ".xml":
            mask = rasterize_aperio_xml(mask_path, sizes[key])
        else:
            mask = binarize(read_mask(mask_path), mask_path)
        return image, mask

    return Collection(
        name="monuseg",
        in_channels=3,
        num_classes=1,
        patches=patches,
        loader=loader,
        sizes=sizes,
        n_items=len(sources),
        problems=problems.messages,
        masks=kind,
    )


def _expected_mask(root: Path, layout: str, kind: str, image: Path) -> str:
    if layout == "release":
        if kind == "png":
            return str(root / "Binary_masks" / (image.stem + ".png"))
        return str(root / "Annotations" / (image.stem + ".xml"))
    if layout == "xy":
        return str(root / "y" / image.name)
    return str(image.with_suffix(".xml"))
