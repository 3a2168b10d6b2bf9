"""A CHAOS MR fixture in the ``Train_Sets/MR`` release layout: DICOM slices and ground-truth PNGs.

``write_chaos`` writes, for every patient, ``T1DUAL/DICOM_anon/{InPhase,OutPhase}/*.dcm`` with one
``T1DUAL/Ground/*.png`` per slice pair and ``T2SPIR/DICOM_anon/*.dcm`` with ``T2SPIR/Ground/*.png``, named
``IMG-<series>-<instance>`` as the release does, the masks in the CHAOS grey levels (63 liver, 126 right
kidney, 189 left kidney, 252 spleen). Writing DICOM needs pydicom: without it the calling test is skipped.
"""

from __future__ import annotations

from typing import Iterable, Union

import numpy as np
import pytest
from PIL import Image

# organ -> (grey level, rows, columns) of its square in a ``size``-pixel slice, as fractions of the side
ORGANS = {
    "liver": (63, (1 / 16, 5 / 16), (1 / 16, 5 / 16)),
    "right_kidney": (126, (6 / 16, 8 / 16), (1 / 16, 3 / 16)),
    "left_kidney": (189, (6 / 16, 8 / 16), (10 / 16, 12 / 16)),
    "spleen": (252, (10 / 16, 14 / 16), (10 / 16, 14 / 16)),
}


def write_png(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def write_dicom(path, pixels: np.ndarray, instance: int) -> None:
    """One 16-bit MR slice."""
    pytest.importorskip("pydicom", reason="CHAOS tests need pydicom (pip install nni-bixnas[dicom])")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.InstanceNumber = instance
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def organ_mask(size: int) -> np.ndarray:
    """The ground-truth grey levels of one slice: a square per organ (see :data:`ORGANS`)."""
    grey = np.zeros((size, size))
    for level, (r0, r1), (c0, c1) in ORGANS.values():
        grey[round(r0 * size):round(r1 * size), round(c0 * size):round(c1 * size)] = level
    return grey


def write_chaos(root, patients: Union[int, Iterable[str]] = 5, slices: int = 2, size: int = 32,
                organs_bright: bool = False) -> np.ndarray:
    """Write the fixture under ``root`` (patients ``1..patients``, or the given names); return the grey mask.

    The slices are ramps, ``arange(size * size) * (p + s)`` (``p`` the patient's position from 1, ``s`` the
    slice); with ``organs_bright`` the organs are also bright on the slice (learnable in an epoch or two).
    """
    pytest.importorskip("pydicom", reason="CHAOS tests need pydicom (pip install nni-bixnas[dicom])")
    names = [str(p) for p in range(1, patients + 1)] if isinstance(patients, int) else list(patients)
    grey = organ_mask(size)
    for p, name in enumerate(names, start=1):
        base = root / name
        for s in range(1, slices + 1):
            pixels = np.arange(size * size).reshape(size, size) * (p + s)
            if organs_bright:
                pixels = pixels // 8 + grey * 64
            write_dicom(base / "T1DUAL" / "DICOM_anon" / "InPhase" / f"IMG-0004-{2 * s:05d}.dcm", pixels, 2 * s)
            write_dicom(base / "T1DUAL" / "DICOM_anon" / "OutPhase" / f"IMG-0004-{2 * s - 1:05d}.dcm", pixels,
                        2 * s - 1)
            write_png(base / "T1DUAL" / "Ground" / f"IMG-0004-{2 * s - 1:05d}.png", grey)
            write_dicom(base / "T2SPIR" / "DICOM_anon" / f"IMG-0002-{s:05d}.dcm", pixels, s)
            write_png(base / "T2SPIR" / "Ground" / f"IMG-0002-{s:05d}.png", grey)
    return grey
