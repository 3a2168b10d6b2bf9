"""Training one Phase 2 stage: a SuperNet on a population with shared weights, every member scored.

:class:`Phase2Task` is the Lightning side of a stage (manual optimisation with
:func:`~nni_bixnas.strategy.supernet.fair_step.fair_step`, per-member validation with
:func:`~nni_bixnas.strategy.supernet.fair_step.evaluate_members`), run by
:func:`~nni_bixnas.strategy.units.phase2_stage_unit` inside the one training loop.

On several devices (Lightning's DDP, ``devices=K``) every rank runs the step on its shard of the batch with
DDP's reducer off, and the gradients are averaged once per step by
:func:`~nni_bixnas.training.distributed.average_step`; validation scores every rank's shard and sums the
metric counts over the ranks (:mod:`nni_bixnas.training.distributed` says what is equal to one device).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from nni_bixnas._checks import one_of, positive_int
from nni_bixnas.metrics import SegmentationMetrics
from nni_bixnas.strategy.supernet.fair_step import (
    FAIR_STEPS,
    MEMBER_BN,
    evaluate_members,
    fair_step,
    recalibrated_statistics,
)
from nni_bixnas.training.distributed import average_step, average_tensors, reduce_metrics, world_size
from nni_bixnas.training.task import SegmentationTask

__all__ = ["Phase2Task", "MODES", "default_milestones"]

#: Training modes: ``'fair'`` (shared head, one optimiser step per batch) and ``'naive'`` (see
#: :class:`ProgressiveEvolution`).
MODES = ("fair", "naive")

def check_step_mode_bn(step: str, mode: str, member_bn: str) -> Tuple[str, str, str]:
    """Phase 2's ``step``, ``mode`` and ``member_bn`` options, checked (one copy for the task and the strategy)."""
    return one_of("step", step, FAIR_STEPS), one_of("mode", mode, MODES), one_of("member_bn", member_bn, MEMBER_BN)


def default_milestones(epochs: int) -> Tuple[int, ...]:
    """The authors' ``MultiStepLR`` milestones 10/20/30 of 40 epochs, scaled to ``epochs`` (zeros dropped)."""
    return tuple(sorted({m for m in (round(epochs * f) for f in (0.25, 0.5, 0.75)) if 1 <= m < epochs}))


class Phase2Task(SegmentationTask):
    """Train a SuperNet on a population with shared weights, and score every member on validation.

    Manual optimisation inside the one training loop (:func:`nni_bixnas.training.fit`), so checkpoints,
    exact resume, progress, TensorBoard and :class:`~nni_bixnas.training.NNIReporter` come with it.

    Parameters
    ----------
    supernet : torch.nn.Module
        A model space implementing ``set_active`` / ``forward_head`` / ``forward_tail``.
    stage : int
        The stage being searched (first stage of the tails).
    members : list of dict
        Full samples of the population; they agree on the stages before ``stage``.
    step : str
        Fair step (``'low_memory'``, ``'plain'``, ``'naive'``) used in ``mode='fair'``.
    mode : str
        ``'fair'``: per batch one step on the mean loss of all members. ``'naive'``: per batch, member
        after member, its own full forward, backward and optimiser step on the shared weights (the
        individually trained, *unfair* baseline the paper argues against: later members see weights,
        hence head features, that earlier members have already changed).
    num_classes, lr, threshold
        As in :class:`~nni_bixnas.training.SegmentationTask`.
    milestones, gamma
        ``MultiStepLR`` schedule (``lr * gamma`` at every milestone epoch), applied once per epoch.
    member_bn : str
        How members are scored on validation: ``'recalibrate'`` (default) with each member's own
        statistics recalibrated on ``recalibration_batches`` training batches before every validation
        (:func:`~nni_bixnas.strategy.supernet.fair_step.recalibrated_statistics`), ``'batch'`` with each batch's own
        BatchNorm statistics, ``'running'`` with the running statistics all members share (the authors'), which
        mixes the members' feature statistics (see :func:`~nni_bixnas.strategy.supernet.fair_step.batch_statistics`).
    recalibration_batches : int
        Training batches per member for ``member_bn='recalibrate'``.

    Notes
    -----
    Validation logs ``val_iou`` = the best member's IoU of the epoch (what checkpoints and NNI see),
    ``val_iou_mean`` over members and ``val_loss`` averaged over members; :attr:`best_member_iou` keeps
    every member's best IoU over the epochs (the authors' score) and :attr:`best_member_image_iou` its
    per-image IoUs at that epoch (the selection's noise estimate); both travel in the checkpoints.

    Data-parallel (``trainer.world_size > 1``): each rank runs the step on its shard with DDP's reducer off
    (``no_sync``), then one :func:`~nni_bixnas.training.distributed.average_step` averages the gradients,
    the BatchNorm running statistics and the loss over the ranks before ``optimizer.step()`` (``mode='naive'``:
    once per member step). Each rank's loss is the mean over its shard, so the average is the whole batch's
    mean loss for equal shards (``DistributedSampler`` pads them to equal sizes); BatchNorm normalises with
    each shard's own batch statistics (as plain DDP does). Validation drops the samples the sampler repeats
    and sums the metric counts over the ranks, so the member scores are those of the whole validation set;
    with ``member_bn='recalibrate'`` every rank recalibrates on the same (unsharded) training batches.
    """

    def __init__(
        self,
        supernet: nn.Module,
        stage: int,
        members: Sequence[Mapping[str, Sequence[int]]],
        *,
        step: str = "low_memory",
        mode: str = "fair",
        num_classes: int = 1,
        lr: float = 1e-3,
        threshold: float = 0.5,
        milestones: Sequence[int] = (10, 20, 30),
        gamma: float = 0.1,
        member_bn: str = "recalibrate",
        recalibration_batches: int = 8,
        loss: str = "ce",
    ) -> None:
        super().__init__(supernet, num_classes=num_classes, lr=lr, lr_decay=0.0, threshold=threshold, log_images=0,
                         loss=loss)
        self.step, self.mode, self.member_bn = check_step_mode_bn(step, mode, member_bn)
        self.recalibration_batches = positive_int("recalibration_batches", recalibration_batches)
        self._statistics: Optional[List[Any]] = None
        if not members:
            raise ValueError("the population is empty")
        self.automatic_optimization = False
        self.stage = int(stage)
        # plain str and int: the checkpoints load weights-only
        self.members = [{str(k): [int(i) for i in v] for k, v in m.items()} for m in members]
        self.milestones, self.gamma = [int(m) for m in milestones], float(gamma)
        self.member_metrics = [SegmentationMetrics(num_classes=num_classes, threshold=threshold) for _ in self.members]
        self.best_member_iou: List[float] = [-math.inf] * len(self.members)
        self.best_member_epoch: List[int] = [0] * len(self.members)
        # each member's per-image IoUs at its best epoch: the selection's noise estimate (pareto.within_noise)
        self.best_member_image_iou: List[List[float]] = [[] for _ in self.members]
        self._member_loss = [0.0] * len(self.members)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def lr_at(self, epoch: int) -> float:
        """``MultiStepLR``'s learning rate for 0-based ``epoch``: ``lr * gamma ** #(milestones <= epoch)``."""
        return self.lr * self.gamma ** sum(1 for m in self.milestones if m <= epoch)

    def _apply_schedule(self, epoch: int) -> None:
        # Set from the epoch number (not a scheduler's state), so a resumed run has the same rate.
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = self.lr_at(epoch)

    def _finite(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"Phase 2 training loss is {loss} at epoch {self.current_epoch + 1} (stage {self.stage}); "
                "lower the learning rate or train in full precision"
            )

    def _local_backward(self):
        """DDP's reducer off for the step's backward(s): :meth:`_step` averages the gradients itself."""
        wrapper = getattr(getattr(self._trainer, "strategy", None), "model", None)
        if isinstance(wrapper, torch.nn.parallel.DistributedDataParallel):
            return wrapper.no_sync()
        return contextlib.nullcontext()

    def _step(self, optimizer, images, target, members, step: str) -> float:
        """One optimiser step on ``members``' mean loss; the loss, averaged over the ranks."""
        optimizer.zero_grad()
        with self._local_backward():
            result = fair_step(self.model, images, target, self.stage, members, self.loss, step=step,
                               backward=self.manual_backward)
        # every rank gets the same averaged loss, so a NaN stops every rank, not one of them
        loss = average_step(self.model, [result.loss])[0] if world_size() > 1 else result.loss
        self._finite(loss)
        optimizer.step()
        return loss

    def training_step(self, batch, batch_idx: int):
        images, target = batch
        optimizer = self.optimizers()
        if self.mode == "fair":
            loss = self._step(optimizer, images, target, self.members, self.step)
        else:
            losses = [self._step(optimizer, images, target, [member], "naive") for member in self.members]
            loss = sum(losses) / len(losses)
        loss = torch.tensor(loss)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(images))
        return {"loss": loss}

    def on_train_start(self) -> None:
        self._apply_schedule(self.current_epoch)

    def on_train_epoch_end(self) -> None:
        self._apply_schedule(self.current_epoch + 1)

    # -- validation: every member on the shared weights -------------------------------------------
    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        for metrics in self.member_metrics:
            metrics.reset()
        self._member_loss = [0.0] * len(self.members)
        if self.member_bn == "recalibrate":
            batches, sharded = self._recalibration_batches()
            self._statistics = [recalibrated_statistics(self.model, batches, self.stage, m) for m in self.members]
            if sharded and world_size() > 1:  # every rank must score with the same statistics
                average_tensors([t for state in self._statistics for buffers in state for t in buffers.values()
                                 if t.is_floating_point()])

    def _recalibration_batches(self) -> Tuple[List[torch.Tensor], bool]:
        """The first ``recalibration_batches`` training batches of this epoch (images only), and whether
        they are this rank's shard (the trainer's loader) rather than the data module's, which every rank
        reads alike."""
        datamodule = getattr(self.trainer, "datamodule", None)
        loader = datamodule.train_dataloader() if datamodule is not None else self.trainer.train_dataloader
        batches = []
        for images, _ in loader:
            batches.append(images.to(self.device))
            if len(batches) == self.recalibration_batches:
                break
        return batches, datamodule is None

    def validation_step(self, batch, batch_idx: int):
        images, target = self.real_part(*batch)
        if len(images) == 0:
            return
        outputs = evaluate_members(self.model, images, self.stage, self.members, self.member_bn, self._statistics)
        for i, logits in enumerate(outputs):
            self.member_metrics[i].update(logits.float(), target)
            self._member_loss[i] += float(self.loss(logits, target)) * len(images)
        self._val_count += len(images)

    def on_validation_epoch_end(self) -> None:
        if world_size() > 1:  # every rank scored its shard: the counts of the whole validation set
            *self._member_loss, count = reduce_metrics(self.member_metrics, [*self._member_loss, self._val_count],
                                                       device=self.device)
            self._val_count = int(count)
        if self._val_count == 0:
            return
        scores = [m.compute() for m in self.member_metrics]
        ious = [float(s["iou"]) for s in scores]
        epoch = self.current_epoch + 1
        for i, iou in enumerate(ious):
            if iou >= self.best_member_iou[i]:  # ties go to the later epoch, as in the authors' loop
                self.best_member_iou[i], self.best_member_epoch[i] = iou, epoch
                self.best_member_image_iou[i] = self.member_metrics[i].image_ious()
        best = max(range(len(ious)), key=lambda i: ious[i])
        values = {
            "val_iou": ious[best],
            "val_dice": float(scores[best]["dice"]),
            "val_iou_mean": sum(ious) / len(ious),
            "val_loss": sum(self._member_loss) / (len(self.members) * self._val_count),
        }
        self.last_val_metrics = values
        # data-parallel: the values are already those of every rank (sync_dist averages equal values)
        self.log_dict(values, prog_bar=False, sync_dist=world_size() > 1)

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["phase2"] = {"best_member_iou": self.best_member_iou, "best_member_epoch": self.best_member_epoch,
                                "best_member_image_iou": self.best_member_image_iou,
                                "members": self.members, "stage": self.stage}

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        state = checkpoint.get("phase2")
        if state is None:
            return
        if state["members"] != self.members or state["stage"] != self.stage:
            raise ValueError("the checkpoint belongs to another Phase 2 population; use another out_dir")
        self.best_member_iou = [float(v) for v in state["best_member_iou"]]
        self.best_member_epoch = [int(v) for v in state["best_member_epoch"]]
        images = state.get("best_member_image_iou") or [[] for _ in self.members]  # absent in older checkpoints
        self.best_member_image_iou = [[float(v) for v in member] for member in images]

