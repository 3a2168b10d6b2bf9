"""Segmentation datasets: MoNuSeg, TNBC, CHAOS MR, ISBI-2012, image folders and an embedded default.

Every dataset is named by a spec string (``monuseg:PATH``, ``monuseg:PATH?masks=xml``, ``default``, ...;
see :func:`parse_data_spec`) and yields ``(image, mask)``: image float32 ``(C, H, W)`` in [0, 1]; mask
float32 ``(1, H, W)`` in {0, 1} (binary) or int64 ``(H, W)`` class ids (multi-class).
"""

from __future__ import annotations

from .build import DatasetInfo, build_datasets, build_eval_dataset, inspect_dataset
from .datamodule import SegDataModule
from .spec import SCHEMES, DataSpec, parse_data_spec

__all__ = [
    "DataSpec",
    "DatasetInfo",
    "SCHEMES",
    "SegDataModule",
    "build_datasets",
    "build_eval_dataset",
    "inspect_dataset",
    "parse_data_spec",
]
