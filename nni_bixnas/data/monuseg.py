"""MoNuSeg 2018 (Kumar et al., IEEE TMI 2017): H&E tiles with nuclei annotations.

Accepted layouts (images and masks paired by file stem):

- the release: ``<root>/Tissue_Images/*.tif`` with ``<root>/Annotations/*.xml`` (Aperio polygons)
  and/or ``<root>/Binary_masks/*.png`` ({0, 1} or {0, 255}). When a tile has both, the PNG mask is used
  (the released masks are slightly thinner at nucleus borders than the plain polygon fill);
- a flat folder of ``*.tif`` tiles with their ``*.xml`` annotations beside them;
- the BiX-NAS authors' preprocessed layout: ``<root>/x/<name>`` images and ``<root>/y/<name>`` masks
  with the same file names, masks 0/255.

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
    "Tissue_Images/*.tif with Annotations/*.xml (or Binary_masks/*.png); a flat folder of .tif tiles "
    "with their .xml beside them, or an x/ + y/ folder pair, also works"
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


def _pairs(root: Path) -> Tuple[str, List[Path], Dict[str, Path]]:
    """(layout, images, masks by stem) for the layouts above."""
    if (root / "Tissue_Images").is_dir():
        images = list_images(root / "Tissue_Images")
        masks: Dict[str, Path] = {}
        if (root / "Annotations").is_dir():
            masks.update({p.stem: p for p in sorted((root / "Annotations").glob("*.xml"))})
        if (root / "Binary_masks").is_dir():
            masks.update(by_stem(list_images(root / "Binary_masks")))  # PNG wins over XML
        return "release", images, masks
    if (root / "x").is_dir() and (root / "y").is_dir():
        masks = {p.name: p for p in list_images(root / "y")}
        return "xy", list_images(root / "x"), masks
    images = [p for p in list_images(root) if p.suffix.lower() in (".tif", ".tiff")]
    return "flat", images, {p.stem: p for p in sorted(root.glob("*.xml"))}


def load_monuseg(spec, strict: bool = True) -> Collection:
    """Discover a MoNuSeg folder (see the module docstring). Decoding is lazy and cached."""
    root = spec.path
    if not root.is_dir():
        raise FileNotFoundError(f"MoNuSeg folder {root} does not exist. {HELP}")
    layout, images, masks = _pairs(root)
    problems = Problems(strict)
    patches, sizes, sources = [], {}, {}
    for image_path in images:
        name = image_path.name if layout == "xy" else image_path.stem
        mask_path = masks.get(name)
        if mask_path is None:
            problems.report(f"image {image_path} has no mask (expected {_expected_mask(root, layout, image_path)})")
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
    )


def _expected_mask(root: Path, layout: str, image: Path) -> str:
    if layout == "release":
        return f"{root / 'Binary_masks' / (image.stem + '.png')} or {root / 'Annotations' / (image.stem + '.xml')}"
    if layout == "xy":
        return str(root / "y" / image.name)
    return str(image.with_suffix(".xml"))
