"""Annealed Gumbel-softmax temperature for the Phase 1 supernet (an option; the authors keep tau = 1)."""

from __future__ import annotations

from typing import Iterable, List, Optional

import pytorch_lightning as pl

from .supermodule import SelectionMatrixFusion, check_tau

__all__ = ["annealed_tau", "TauAnnealing", "tau_callbacks"]


def annealed_tau(epoch: int, epochs: int, tau: float, tau_final: Optional[float]) -> float:
    """The temperature of ``epoch`` (0-based) of ``epochs``: geometric from ``tau`` at the first epoch to
    ``tau_final`` at the last; ``tau`` throughout when ``tau_final`` is ``None``.

    Geometric, as the exponential schedules of GDAS and SNAS: each epoch divides the temperature by the
    same factor, so the late, near-one-hot epochs are as many as the early, smooth ones.
    """
    if tau_final is None or epochs <= 1:
        return float(tau if tau_final is None else tau_final)
    fraction = min(max(epoch, 0), epochs - 1) / (epochs - 1)
    return float(tau * (tau_final / tau) ** fraction)


class TauAnnealing(pl.Callback):
    """Set every fusion's ``tau`` at the start of each training epoch (:func:`annealed_tau`); the epoch's
    validation runs at the same temperature. A resumed run recomputes it from the epoch number."""

    def __init__(self, fusions: Iterable[SelectionMatrixFusion], epochs: int, tau: float, tau_final: float) -> None:
        super().__init__()
        self.fusions = list(fusions)
        self.epochs, self.tau, self.tau_final = int(epochs), check_tau(tau), check_tau(tau_final, "tau_final")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = annealed_tau(trainer.current_epoch, self.epochs, self.tau, self.tau_final)
        for fusion in self.fusions:
            fusion.tau = value
        pl_module.log("tau", value, on_step=False, on_epoch=True)


def tau_callbacks(fusions: Iterable[SelectionMatrixFusion], epochs: int, tau: float,
                  tau_final: Optional[float]) -> List[pl.Callback]:
    """``[TauAnnealing(...)]``, or ``[]`` for the constant ``tau`` (``tau_final=None``); checks ``tau_final``."""
    if tau_final is None:
        return []
    return [TauAnnealing(fusions, epochs, tau, check_tau(tau_final, "tau_final"))]
