"""Lightning callbacks of the training loop: run recording/checkpointing and the non-finite loss guard."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytorch_lightning as pl
import torch

from nni_bixnas.utils import PathLike, atomic_write, seed_everything

_log = logging.getLogger("nni_bixnas.training")

BEST_NAME = "best.ckpt"
LAST_NAME = "last.ckpt"
HISTORY_NAME = "history.json"


def step_seed(seed: int, epoch: int, batch_idx: int) -> int:
    """A 32-bit seed that is a function of ``(seed, epoch, batch_idx)`` only."""
    return int(np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(batch_idx)]).generate_state(1)[0])


def _to_float(value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().float().mean().item()
    return float(value)


class RunRecorder(pl.Callback):
    """Per-epoch bookkeeping: reseeding, history, best/last checkpoints, ``history.json``, a log line.

    Before every training step the global RNGs are reseeded from ``(seed, epoch, batch_idx)``, so an
    epoch replayed after a crash draws exactly the same random numbers (dropout, Gumbel noise, …) as
    the uninterrupted run, whenever Lightning happens to create the DataLoader iterator. (Shuffling and
    augmentation are the data module's job: a function of its own seed and the epoch.)
    After each epoch's validation, ``last.ckpt`` is written, and ``best.ckpt`` too when the validation
    IoU is ``>=`` the best so far (ties go to the later epoch, as in the authors' loop). The history
    travels inside the checkpoints (callback state), so a resumed run continues it. A run restarted over
    an earlier one can :meth:`keep_best` of it: its ``best.ckpt`` stays until an epoch scores as well.

    Parameters
    ----------
    out_dir : path
        Run folder; checkpoints go to ``out_dir/checkpoints``.
    seed : int
        Base seed of the run.
    monitor : str
        Validation metric that selects the best checkpoint (higher is better).
    """

    def __init__(self, out_dir: PathLike, seed: int = 0, monitor: str = "val_iou") -> None:
        super().__init__()
        self.out_dir = Path(out_dir)
        self.seed = int(seed)
        self.monitor = monitor
        self.history: List[Dict[str, Any]] = []
        self.best_score = -math.inf
        self.best_epoch = 0
        self.kept_best: Optional[Dict[str, Any]] = None
        self._reset_epoch_counters()

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def best_path(self) -> Path:
        return self.checkpoint_dir / BEST_NAME

    @property
    def last_path(self) -> Path:
        return self.checkpoint_dir / LAST_NAME

    @property
    def best_record(self) -> Dict[str, Any]:
        if self.kept_best is not None:
            return self.kept_best
        return next((r for r in self.history if r["epoch"] == self.best_epoch), {})

    def keep_best(self, record: Dict[str, Any]) -> None:
        """Start from the best epoch ``record`` of an earlier run whose ``best.ckpt`` is still on disk.

        ``best.ckpt`` is then replaced only by an epoch whose ``monitor`` score is ``>=`` the record's.
        """
        self.kept_best = dict(record)
        self.best_score, self.best_epoch = float(record[self.monitor]), int(record["epoch"])

    def _reset_epoch_counters(self) -> None:
        self._loss_sum, self._images, self._started, self._lr = 0.0, 0, time.perf_counter(), None

    # -- callback state (saved in every checkpoint) ------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"history": self.history, "best_score": self.best_score, "best_epoch": self.best_epoch,
                "kept_best": self.kept_best}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
        self.best_score = float(state_dict["best_score"])
        self.best_epoch = int(state_dict["best_epoch"])
        self.kept_best = state_dict.get("kept_best")

    # -- hooks -------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset_epoch_counters()
        if trainer.optimizers:
            self._lr = float(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        seed_everything(step_seed(self.seed, trainer.current_epoch, batch_idx))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        size = len(batch[0]) if isinstance(batch, (list, tuple)) else 1
        if loss is not None:
            self._loss_sum += _to_float(loss) * size
            self._images += size

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        # Lightning replays this hook once when resuming from a checkpoint written here: skip it.
        if self._images == 0 or any(r["epoch"] == epoch for r in self.history):
            return
        val = dict(getattr(pl_module, "last_val_metrics", {}) or {})
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val_") and key not in val:
                val[key] = _to_float(value)
        seconds = time.perf_counter() - self._started
        record = {
            "epoch": epoch,
            "train_loss": self._loss_sum / self._images,
            **{k: float(v) for k, v in sorted(val.items())},
            "lr": self._lr,
            "train_images": self._images,
            "train_seconds": seconds,  # includes this epoch's validation
        }
        self.history.append(record)
        score = record.get(self.monitor)
        is_best = score is not None and score >= self.best_score
        if is_best:
            self.best_score, self.best_epoch, self.kept_best = score, epoch, None
        # full checkpoints (optimiser, loops, callbacks: what a resume needs); saying so keeps Lightning quiet
        trainer.save_checkpoint(self.last_path, weights_only=False)
        if is_best:
            trainer.save_checkpoint(self.best_path, weights_only=False)
        if trainer.is_global_zero:
            self.write_history()
            _log.info(
                "epoch %d/%d  loss %.4f  val_loss %s  val IoU %s  val Dice %s  lr %.3g  %.1fs%s",
                epoch, trainer.max_epochs, record["train_loss"], _fmt(record.get("val_loss")),
                _fmt(record.get("val_iou")), _fmt(record.get("val_dice")), self._lr or float("nan"),
                seconds, "  *best*" if is_best else "",
            )

    def write_history(self) -> None:
        best = self.best_record
        summary = {
            "best_epoch": self.best_epoch,
            "best_iou": best.get("val_iou"),
            "best_dice": best.get("val_dice"),
            "best_iou_batch_pooled": best.get("val_iou_batch_pooled"),
            "best_dice_batch_pooled": best.get("val_dice_batch_pooled"),
            "seed": self.seed,
            "history": self.history,
        }
        if self.kept_best is not None:  # best.ckpt is still the one of the run this one restarted
            summary["best_from_earlier_run"] = self.kept_best
        with atomic_write(self.out_dir / HISTORY_NAME) as handle:
            json.dump(summary, handle, indent=2)


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


class TrainingDiverged(FloatingPointError, ValueError):
    """Training stopped because the loss became NaN/inf or exploded.

    A ``ValueError`` too, so that ``bixnas train`` reports it as one ``error:`` line.
    """


def _count_nonfinite(batch: Any) -> int:
    """NaN/inf values in the floating-point tensors of a batch (a tensor, or a list/tuple/dict of them)."""
    if isinstance(batch, torch.Tensor):
        return int((~torch.isfinite(batch)).sum()) if batch.is_floating_point() else 0
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        return sum(_count_nonfinite(item) for item in batch)
    return 0


class FiniteLossGuard(pl.Callback):
    """Stop training on a NaN/inf loss, or on a loss that explodes, before the step reaches the weights.

    Rules, checked on every training step before the backward pass:

    - the loss is NaN or inf: if the step's input batch holds NaN/inf values the data is blamed (with
      their count), else the learning rate or the precision;
    - the loss is over ``max_ratio`` times ``max(reference, 1)``, where ``reference`` is the loss of the
      run's first training step (the untrained network; saved in the checkpoints, so a resumed run keeps
      it). With BCE or cross-entropy (about 0.7 and ``log K`` at the start) the default bound is a loss
      of 1000 (an average pixel predicted wrong with a logit over 1000): sane learning rates stay orders
      of magnitude below it, while a diverging run (``lr=1e6``: losses around 1e10) crosses it within a
      few steps. The floor of 1 keeps a small reference (a pre-trained network) from making the bound
      tight.

    Raises :class:`TrainingDiverged` (a ``FloatingPointError`` and a ``ValueError``) naming the epoch and
    step. Nothing is saved, so the last checkpoint on disk stays as it was.

    Parameters
    ----------
    last_checkpoint : path, optional
        Named in the message when it exists.
    max_ratio : float, optional
        The explosion bound (see above); ``None`` checks only for NaN/inf.
    """

    def __init__(self, last_checkpoint: Optional[PathLike] = None, max_ratio: Optional[float] = 1000.0) -> None:
        super().__init__()
        self.last_checkpoint = last_checkpoint
        self.max_ratio = max_ratio
        self.reference: Optional[float] = None
        self._batch: Any = None

    def state_dict(self) -> Dict[str, Any]:
        return {} if self.reference is None else {"reference_loss": self.reference}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.reference = state_dict.get("reference_loss", self.reference)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._batch = batch  # a reference, looked at only when the loss is not finite

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        value = _unscaled(trainer, loss)
        if not math.isfinite(value):
            self._stop(trainer, f"training loss is {value}", self._nan_advice(), good=True)
        if self.reference is None:
            self.reference = value
        elif self.max_ratio is not None and value > self.max_ratio * max(self.reference, 1.0):
            self._stop(
                trainer,
                f"training diverged: loss {value:.4g}",
                f"That is over {self.max_ratio:g} x max(first loss {self.reference:.4g}, 1); "
                f"lower the learning rate (--lr, now {_lr(trainer)}).",
            )

    def _nan_advice(self) -> str:
        bad = _count_nonfinite(self._batch)
        if bad:
            return (f"The input batch holds {bad} NaN/inf value(s): the data is the cause, not the learning rate; "
                    "find the files with `bixnas data inspect SPEC` and fix or remove them.")
        return "Lower the learning rate (--lr) or train in full precision (--precision 32-true)."

    def _stop(self, trainer: pl.Trainer, what: str, advice: str, good: bool = False) -> None:
        kept = (
            f"; the last {'good ' if good else ''}checkpoint {self.last_checkpoint} is kept"
            if self.last_checkpoint and Path(self.last_checkpoint).exists()
            else ""
        )
        raise TrainingDiverged(
            f"{what} at epoch {trainer.current_epoch + 1}, step {trainer.fit_loop.epoch_loop.batch_idx} "
            f"(global step {trainer.global_step}){kept}. {advice}"
        )


def _unscaled(trainer: pl.Trainer, loss: torch.Tensor) -> float:
    """The loss as the task computed it: with ``16-mixed`` this hook sees it multiplied by the grad scaler's scale."""
    value = loss.detach().float().mean().item()
    scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
    if scaler is not None and scaler.is_enabled():
        value /= float(scaler.get_scale())
    return value


def _lr(trainer: pl.Trainer) -> str:
    return f"{trainer.optimizers[0].param_groups[0]['lr']:.3g}" if trainer.optimizers else "?"


class ChannelsLast(pl.Callback):
    """Hold the network's 4-D weights in ``torch.channels_last`` memory format for the whole fit.

    Convolutions then compute in NHWC (faster on tensor-core GPUs with mixed precision; on CPU it depends
    on the ops). Inputs need no conversion: a convolution with channels-last weights returns channels-last
    outputs. The values computed are the same up to floating-point rounding.
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.to(memory_format=torch.channels_last)
