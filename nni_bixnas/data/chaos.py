"""CHAOS MR (Kavur et al., Medical Image Analysis 2021): abdominal organs on T1-DUAL and T2-SPIR MR.

The ``Train_Sets/MR`` release layout (``<root>/MR`` is also looked into)::

    <root>/<patient>/T1DUAL/DICOM_anon/InPhase/*.dcm
    <root>/<patient>/T1DUAL/DICOM_anon/OutPhase/*.dcm
    <root>/<patient>/T1DUAL/Ground/*.png            one mask per slice, shared by in- and out-phase
    <root>/<patient>/T2SPIR/DICOM_anon/*.dcm
    <root>/<patient>/T2SPIR/Ground/*.png

Every slice of every series (in-phase, out-phase, T2-SPIR) is one 1-channel item, resized to 256x256
(bilinear; masks nearest), then, as the paper pre-processes (Sec. 3.1: "min-max normalization and
auto-contrast enhancement"), min-max normalised and auto-contrasted per slice (:func:`autocontrast`).
Slices and ground-truth PNGs are paired in
natural file-name order (CHAOS names both ``IMG-<series>-<instance>``); their counts must match.
Ground-truth grey levels map to classes as in the CHAOS documentation: 63 liver (55-70), 126 right
kidney (110-135), 189 left kidney (175-200), 252 spleen (240-255), 0 background; ``num_classes = 5``.
Splits are 5-fold cross-validation by patient (``fold``, ``n_folds``). Reading DICOM needs ``pydicom``
(``pip install nni-bixnas[dicom]``), imported only here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Tuple

import numpy as np
from PIL import Image

from .collection import Collection, PatchRef
from .io import describe_values, read_mask
from .problems import Problems

SIZE = 256
# percent of the darkest and of the brightest pixels that :func:`autocontrast` saturates (see there)
AUTOCONTRAST_CUTOFF = 1.0
CLASS_NAMES = ("background", "liver", "right_kidney", "left_kidney", "spleen")
GREY_RANGES = ((55, 70, 1), (110, 135, 2), (175, 200, 3), (240, 255, 4))
SERIES = (
    ("T1DUAL_in", ("T1DUAL", "DICOM_anon", "InPhase"), ("T1DUAL", "Ground")),
    ("T1DUAL_out", ("T1DUAL", "DICOM_anon", "OutPhase"), ("T1DUAL", "Ground")),
    ("T2SPIR", ("T2SPIR", "DICOM_anon"), ("T2SPIR", "Ground")),
)
HELP = (
    "Download CHAOS (https://chaos.grand-challenge.org/Download/) and point to Train_Sets/MR, which holds "
    "<patient>/T1DUAL/DICOM_anon/{InPhase,OutPhase}/*.dcm, <patient>/T1DUAL/Ground/*.png, "
    "<patient>/T2SPIR/DICOM_anon/*.dcm and <patient>/T2SPIR/Ground/*.png"
)


def _pydicom():
    try:
        import pydicom
    except ImportError as err:
        raise ImportError("reading CHAOS DICOM files needs pydicom: pip install nni-bixnas[dicom]") from err
    return pydicom


def _natural(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def grey_to_classes(mask: np.ndarray, path: Path) -> np.ndarray:
    """CHAOS MR grey levels to class ids 0..4; any other value is an error naming ``path``."""
    out = np.zeros(mask.shape, dtype=np.uint8)
    known = mask == 0
    for low, high, label in GREY_RANGES:
        inside = (mask >= low) & (mask <= high)
        out[inside] = label
        known |= inside
    if not known.all():
        raise ValueError(
            f"CHAOS ground truth {path} has values {describe_values(np.unique(mask[~known]))} outside the organ "
            "grey levels 63 (liver), 126 (right kidney), 189 (left kidney), 252 (spleen) and 0"
        )
    return out


def autocontrast(image: np.ndarray, cutoff: float = AUTOCONTRAST_CUTOFF) -> np.ndarray:
    """Stretch ``image`` so that its ``cutoff`` percent darkest pixels become 0 and brightest become 1.

    The float analogue of PIL's ``ImageOps.autocontrast(image, cutoff)`` (Pillow ``ImageOps.py``), without
    its 8-bit histogram: of the ``n`` pixels, ``k = floor(n * cutoff / 100)`` are cut from each end, the
    lowest and highest values left are ``lo`` and ``hi`` (the ``k``-th smallest and largest, counted from
    0), and every pixel maps to ``clip((x - lo) / (hi - lo), 0, 1)``. When ``hi <= lo`` (a flat slice, or a
    cut that leaves one value) the image is returned unchanged, as PIL does.

    Neither the paper nor the authors' released code (``tiangexiang/BiX-NAS``, ``tiangexiang/BiO-Net``: no
    CHAOS loader) gives the cutoff; :data:`AUTOCONTRAST_CUTOFF` = 1 % is ours. With ``cutoff=0`` it is a
    no-op on a min-max normalised slice.

    Parameters
    ----------
    image : numpy.ndarray
        Any shape; float.
    cutoff : float
        Percent in ``[0, 50)`` cut from each end.

    Returns
    -------
    numpy.ndarray
        float64, same shape.
    """
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not 0 <= cutoff < 50:
        raise ValueError(f"cutoff must be a percent in [0, 50), got {cutoff!r}")
    values = np.asarray(image, dtype=np.float64)
    flat = np.sort(values, axis=None)
    k = int(flat.size * cutoff // 100)
    low, high = flat[k], flat[flat.size - 1 - k]
    if not high > low:
        return values
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def read_slice(path: Path) -> Tuple[np.ndarray, Tuple[int, int]]:
    """A DICOM slice as float32 ``(1, 256, 256)`` in [0, 1] (resized, min-max normalised, auto-contrasted),
    and its original shape."""
    pydicom = _pydicom()
    try:
        pixels = pydicom.dcmread(path).pixel_array.astype(np.float32)
    except Exception as err:  # pydicom raises many types for a damaged file
        raise ValueError(f"cannot read DICOM file {path}: {err}") from err
    if pixels.ndim != 2:
        raise ValueError(f"DICOM file {path} holds a {pixels.ndim}-D array; expected one 2-D slice")
    resized = np.asarray(Image.fromarray(pixels).resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float64)
    low, high = float(resized.min()), float(resized.max())
    scaled = (resized - low) / (high - low) if high > low else np.zeros_like(resized)
    return autocontrast(scaled)[None].astype(np.float32), pixels.shape


def load_chaos(spec, strict: bool = True) -> Collection:
    """Discover a CHAOS ``Train_Sets/MR`` folder (see the module docstring)."""
    root = spec.path
    if not root.is_dir():
        raise FileNotFoundError(f"CHAOS folder {root} does not exist. {HELP}")
    if (root / "MR").is_dir():
        root = root / "MR"
    _pydicom()
    problems = Problems(strict)
    patches: List[PatchRef] = []
    pairs = {}
    n_series = 0
    for patient in sorted((p for p in root.iterdir() if p.is_dir()), key=_natural):
        for series, dicom_parts, ground_parts in SERIES:
            dicom_dir, ground_dir = patient.joinpath(*dicom_parts), patient.joinpath(*ground_parts)
            if not dicom_dir.is_dir():
                continue
            slices = sorted(dicom_dir.glob("*.dcm"), key=_natural)
            grounds = sorted(ground_dir.glob("*.png"), key=_natural) if ground_dir.is_dir() else []
            if not slices:
                continue
            if len(slices) != len(grounds):
                problems.report(
                    f"{dicom_dir} has {len(slices)} DICOM slices but {ground_dir} has {len(grounds)} ground-truth PNGs"
                )
                continue
            n_series += 1
            for dcm, png in zip(slices, grounds):
                pairs[str(dcm)] = (dcm, png)
                patches.append(PatchRef(source=patient.name, key=str(dcm)))
    if not patches:
        raise ValueError(f"no usable CHAOS MR series in {root}. {HELP}" + problems.summary())

    def loader(key: str) -> Tuple[np.ndarray, np.ndarray]:
        dcm, png = pairs[key]
        image, shape = read_slice(dcm)
        raw = read_mask(png)
        if raw.shape != shape:
            raise ValueError(
                f"mask {png} is {raw.shape[1]}x{raw.shape[0]} (WxH) but its slice {dcm} is {shape[1]}x{shape[0]}"
            )
        mask = grey_to_classes(raw, png)
        mask = np.asarray(Image.fromarray(mask).resize((SIZE, SIZE), Image.NEAREST))
        return image, mask

    return Collection(
        "chaos", 1, len(CLASS_NAMES), patches, loader, {k: (SIZE, SIZE) for k in pairs},
        n_items=n_series, class_names=CLASS_NAMES, problems=problems.messages,
    )
