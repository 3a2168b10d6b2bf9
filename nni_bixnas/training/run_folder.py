"""The run folder of :func:`~nni_bixnas.training.fit`: what makes a resume valid, and writes the folder or
the disk refuses turned into one clear error (every write being atomic, the files already there are kept)."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from nni_bixnas._writes import WRITE_ERRNOS, shown_path
from nni_bixnas.training.callbacks import BEST_NAME, HISTORY_NAME
from nni_bixnas.training.checkpoint import _UNSAFE_GLOBAL, AtomicCheckpointIO, load_failure, weight_mismatches
from nni_bixnas.training.task import SegmentationTask
from nni_bixnas.utils import changed_settings

__all__ = ["RUN_NAME", "RESUME_KEYS", "RESTART", "RunFolderError", "check_resume", "checkpoint_problem",
           "earlier_best", "run_folder_errors", "check_writable", "removed_unless_started"]

RUN_NAME = "run.json"
# run.json fields that must match for a resume to continue the same run.
RESUME_KEYS = ("model_name", "model_kwargs", "data", "seed", "split_seed", "lr", "lr_decay", "batch_size", "loss")


class RunFolderError(OSError, ValueError):
    """The run folder cannot be written (read-only, no space left); a ``ValueError`` for the CLI's one line."""


RESTART = ("rerun with --no-resume (resume=False) to start afresh in this folder (its best.ckpt is kept until "
            "an epoch scores as well), or restore the file")


def check_resume(out_dir: Path, config: Dict[str, Any]) -> None:
    details = changed_settings(out_dir / RUN_NAME, RESUME_KEYS, config,
                               "cannot resume: {path} is not valid JSON ({err}); rerun with --no-resume (resume=False) "
                               "to start afresh in this folder, or restore the file")
    if details:
        raise ValueError(
            f"{out_dir} holds a run with a different configuration ({details}); "
            "resume it with the same settings, or start afresh with resume=False (--no-resume) or another out dir"
        )


def checkpoint_problem(path: Path, task: SegmentationTask) -> Optional[str]:
    """Why ``path`` cannot be loaded into ``task`` (unreadable, not a training checkpoint, other weights), or None."""
    try:
        checkpoint = AtomicCheckpointIO().load_checkpoint(path, weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a damaged file
        if _UNSAFE_GLOBAL.search(str(err)):
            return load_failure(err)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0][:200]
        return f"the file cannot be read, it is probably truncated or corrupt ({reason})"
    if not isinstance(checkpoint, dict) or not {"state_dict", "loops"} <= set(checkpoint):
        return "it is not a training checkpoint (no 'state_dict' and 'loops')"
    if getattr(task, "strict_loading", True):
        problems = weight_mismatches(task.state_dict(), checkpoint["state_dict"])
        if problems:
            return f"its weights do not fit the model ({problems})"
    return None


def earlier_best(out_dir: Path, config: Dict[str, Any], task: SegmentationTask) -> Optional[Dict[str, Any]]:
    """The best-epoch record of an earlier run of the same configuration whose ``best.ckpt`` fits the model."""
    try:
        previous = json.loads((out_dir / RUN_NAME).read_text())
        summary = json.loads((out_dir / HISTORY_NAME).read_text())
    except (OSError, ValueError):
        return None
    best_path = out_dir / "checkpoints" / BEST_NAME
    if any(previous.get(k) != config.get(k) for k in RESUME_KEYS) or not best_path.is_file():
        return None
    record = summary.get("best_from_earlier_run")
    if not isinstance(record, dict):
        record = next((r for r in summary.get("history", []) if r.get("epoch") == summary.get("best_epoch")), None)
    if not isinstance(record, dict) or not isinstance(record.get("val_iou"), (int, float)):
        return None
    return record if checkpoint_problem(best_path, task) is None else None


@contextlib.contextmanager
def run_folder_errors(out_dir: Path):
    """A write refused by the folder or the disk -> one :class:`RunFolderError` (atomic writes kept the files)."""
    try:
        yield
    except RunFolderError:
        raise
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:
            raise
        where = str(shown_path(err.filename)) if err.filename else str(out_dir)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            advice = ("free some space and rerun the same command (it resumes from the last checkpoint), "
                      "or choose another --out (out_dir)")
        else:
            folder = Path(where) if Path(where).is_dir() else Path(where).parent
            advice = f"make {folder} writable, or choose another --out (out_dir)"
        kept = f"; the files already in {out_dir} are intact (every write is atomic)" if out_dir.is_dir() else ""
        target = f"in {where}" if Path(where).is_dir() else where
        error = RunFolderError(f"cannot write {target}: {err.strerror or err}{kept}; {advice}")
        error.errno = err.errno
        raise error from err


def check_writable(folders: Sequence[Path]) -> None:
    """Create ``folders`` and write a temporary file in each: a read-only one fails here, before training."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(folder)) from err


@contextlib.contextmanager
def removed_unless_started(out_dir: Path, checkpoint_dir: Path):
    """A run folder the block creates is removed again when the block fails before a checkpoint is written (a
    bad image in the first batch, a device Lightning refuses): no folder holding only ``run.json`` is left.
    A folder that existed before is never touched."""
    fresh = not out_dir.exists()
    try:
        yield
    except BaseException:
        if fresh and out_dir.is_dir() and not any(checkpoint_dir.glob("*.ckpt")):
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
