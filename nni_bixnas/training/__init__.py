"""The one training loop: a Lightning task, ``fit`` with exact resume, evaluation, prediction, NNI evaluator.

Used by retraining (``bixnas train``), evaluation, and both search phases (which subclass
:class:`SegmentationTask`).
"""

from __future__ import annotations

from nni_bixnas.settings import TrainingSettings

from .callbacks import FiniteLossGuard, RunRecorder, TrainingDiverged
from .checkpoint import AtomicCheckpointIO, load_checkpoint, load_task, read_checkpoint
from .evaluator import check_arguments, make_evaluator, train_and_report, train_and_score_settings
from .inference import evaluate, predict
from .loop import TrainResult, fit
from .nni_reporting import NNIReporter, nni_tensorboard_dir
from .run_folder import RunFolderError
from .task import VAL_METRICS, SegmentationTask

__all__ = [
    "TrainingSettings",
    "train_and_score_settings",
    "AtomicCheckpointIO",
    "FiniteLossGuard",
    "NNIReporter",
    "RunFolderError",
    "RunRecorder",
    "SegmentationTask",
    "TrainResult",
    "TrainingDiverged",
    "VAL_METRICS",
    "check_arguments",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_task",
    "make_evaluator",
    "nni_tensorboard_dir",
    "predict",
    "read_checkpoint",
    "train_and_report",
]
