"""The one training loop: a Lightning task, ``fit`` with exact resume, evaluation, prediction, NNI evaluator.

Used by retraining (``bixnas train``), evaluation, and both search phases (which subclass
:class:`SegmentationTask`).
"""

from __future__ import annotations

from .callbacks import FiniteLossGuard, RunRecorder
from .checkpoint import AtomicCheckpointIO, load_checkpoint, load_task
from .evaluator import make_evaluator, train_and_report
from .inference import evaluate, predict
from .loop import TrainResult, fit
from .nni_reporting import NNIReporter, nni_tensorboard_dir
from .task import VAL_METRICS, SegmentationTask

__all__ = [
    "AtomicCheckpointIO",
    "FiniteLossGuard",
    "NNIReporter",
    "RunRecorder",
    "SegmentationTask",
    "TrainResult",
    "VAL_METRICS",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_task",
    "make_evaluator",
    "nni_tensorboard_dir",
    "predict",
    "train_and_report",
]
