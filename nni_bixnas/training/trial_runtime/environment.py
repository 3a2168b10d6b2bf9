"""Where a trial runs: whether this process is an NNI trial, its output folder, its experiment's folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Union

__all__ = ["experiment_dir", "in_nni_trial", "trial_out_dir"]


def in_nni_trial() -> bool:
    """Whether this process is an NNI trial (the training service sets ``NNI_PLATFORM``)."""
    return bool(os.environ.get("NNI_PLATFORM")) and bool(os.environ.get("NNI_OUTPUT_DIR"))


def trial_out_dir(out_dir: Optional[Union[str, os.PathLike]], name: str) -> Path:
    """``out_dir`` if given; else ``$NNI_OUTPUT_DIR/<name>`` in an NNI job; else a new temporary folder."""
    if out_dir is not None:
        return Path(out_dir)
    nni_output = os.environ.get("NNI_OUTPUT_DIR")
    return Path(nni_output) / name if nni_output else Path(tempfile.mkdtemp(prefix=f"bixnas-{name}-"))


def experiment_dir(output: Path) -> Optional[Path]:
    """``<expdir>`` of the 3.0 layout ``<expdir>/environments/<env_id>/trials/<trial_id>``, else ``None``."""
    parents = output.resolve().parents
    if len(parents) > 3 and parents[0].name == "trials" and parents[2].name == "environments":
        return parents[3]
    return None
