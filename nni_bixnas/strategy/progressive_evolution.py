"""Phase 2 of BiX-NAS: progressive evolutionary search with skip fairness (paper §2.2-2.3, Algorithm 1).

The search visits the extraction stages from the last searchable one back to the first (5, 4, 3, 2, 1
for ``T = 3``). At stage ``t`` it draws ``s`` skip sets for the blocks of stage ``t``, applies each to
every retained parent (population ``s x |parents|``), trains one SuperNet on the mean loss of all members
with a shared head (:mod:`~nni_bixnas.strategy.fair_step`), scores every member by its best validation
IoU over the epochs and by its MACs, and keeps the first ``|P|`` of the Pareto front of
``(1 - IoU, MACs)`` ranked by IoU. Each stage is one unit of work, submitted to the NNI engine as one job
(:class:`~nni_bixnas.strategy.units.UnitRunner`), so the strategy runs in-process or through ``nnictl``.

Faithful to the authors' code (``shared/notes/official-code.md`` §3): a fresh SuperNet per stage, Adam
with ``lr = 1e-3 / population``, ``MultiStepLR`` at epochs 10/20/30 of 40 (gamma 0.1), best IoU over the
epochs, 3 parents after the first stage and 2 after the others. Fixed: every tail reads the head's own
features (the released code lets tails read a previous tail's features from stage 4 down), and the
released code's crash at the end of epoch 1.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import nni
import torch
import torch.nn as nn
from numpy.random import RandomState

from nni.nas.execution import ExecutionEngine
from nni.nas.space import ExecutableModelSpace
from nni.nas.strategy.base import Strategy, StrategyStatus

from nni_bixnas.metrics import SegmentationMetrics
from nni_bixnas.space.gene import Gene
from nni_bixnas.space.mutables import SkipSubset
from nni_bixnas.strategy.fair_step import FAIR_STEPS, MEMBER_BN, evaluate_members, fair_step, recalibrated_statistics
from nni_bixnas.strategy.pareto import pareto_front, select_parents
from nni_bixnas.strategy.units import (
    UnitRunner,
    build_space,
    narrow_space,
    require_data,
    space_module,
    space_reference,
    training_settings,
)
from nni_bixnas.training.task import SegmentationTask

_logger = logging.getLogger(__name__)

__all__ = ["ProgressiveEvolution", "Phase2Task", "phase2_stage_unit", "default_milestones", "MODES"]

#: Training modes: ``'fair'`` (shared head, one optimiser step per batch) and ``'naive'`` (see
#: :class:`ProgressiveEvolution`).
MODES = ("fair", "naive")

Sample = Dict[str, List[int]]


def default_milestones(epochs: int) -> Tuple[int, ...]:
    """The authors' ``MultiStepLR`` milestones 10/20/30 of 40 epochs, scaled to ``epochs`` (zeros dropped)."""
    return tuple(sorted({m for m in (round(epochs * f) for f in (0.25, 0.5, 0.75)) if 1 <= m < epochs}))


# ----- training one stage ----------------------------------------------------------------------------
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
        (:func:`~nni_bixnas.strategy.fair_step.recalibrated_statistics`), ``'batch'`` with each batch's own
        BatchNorm statistics, ``'running'`` with the running statistics all members share (the authors'), which
        mixes the members' feature statistics (see :func:`~nni_bixnas.strategy.fair_step.batch_statistics`).
    recalibration_batches : int
        Training batches per member for ``member_bn='recalibrate'``.

    Notes
    -----
    Validation logs ``val_iou`` = the best member's IoU of the epoch (what checkpoints and NNI see),
    ``val_iou_mean`` over members and ``val_loss`` averaged over members; :attr:`best_member_iou` keeps
    every member's best IoU over the epochs (the authors' score), and travels in the checkpoints.
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
    ) -> None:
        super().__init__(supernet, num_classes=num_classes, lr=lr, lr_decay=0.0, threshold=threshold, log_images=0)
        if member_bn not in MEMBER_BN:
            raise ValueError(f"unknown member_bn {member_bn!r}; expected one of {', '.join(MEMBER_BN)}")
        self.member_bn = member_bn
        self.recalibration_batches = int(recalibration_batches)
        self._statistics: Optional[List[Any]] = None
        if step not in FAIR_STEPS:
            raise ValueError(f"unknown step {step!r}; expected one of {', '.join(FAIR_STEPS)}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if not members:
            raise ValueError("the population is empty")
        self.automatic_optimization = False
        self.stage = int(stage)
        self.members = [{str(k): [int(i) for i in v] for k, v in m.items()} for m in members]  # plain str: checkpoints load weights-only
        self.step, self.mode = step, mode
        self.milestones, self.gamma = [int(m) for m in milestones], float(gamma)
        self.member_metrics = [SegmentationMetrics(num_classes=num_classes, threshold=threshold) for _ in self.members]
        self.best_member_iou: List[float] = [-math.inf] * len(self.members)
        self.best_member_epoch: List[int] = [0] * len(self.members)
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

    def training_step(self, batch, batch_idx: int):
        images, target = batch
        optimizer = self.optimizers()
        if self.mode == "fair":
            optimizer.zero_grad()
            result = fair_step(self.model, images, target, self.stage, self.members, self.loss, step=self.step,
                               backward=self.manual_backward)
            self._finite(result.loss)
            optimizer.step()
            loss = result.loss
        else:
            losses = []
            for member in self.members:
                optimizer.zero_grad()
                result = fair_step(self.model, images, target, self.stage, [member], self.loss, step="naive",
                                   backward=self.manual_backward)
                self._finite(result.loss)
                optimizer.step()
                losses.append(result.loss)
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
            batches = self._recalibration_batches()
            self._statistics = [recalibrated_statistics(self.model, batches, self.stage, m) for m in self.members]

    def _recalibration_batches(self) -> List[torch.Tensor]:
        """The first ``recalibration_batches`` training batches of this epoch (images only)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        loader = datamodule.train_dataloader() if datamodule is not None else self.trainer.train_dataloader
        batches = []
        for images, _ in loader:
            batches.append(images.to(self.device))
            if len(batches) == self.recalibration_batches:
                break
        return batches

    def validation_step(self, batch, batch_idx: int):
        images, target = batch
        outputs = evaluate_members(self.model, images, self.stage, self.members, self.member_bn, self._statistics)
        for i, logits in enumerate(outputs):
            self.member_metrics[i].update(logits.float(), target)
            self._member_loss[i] += float(self.loss(logits, target)) * len(images)
        self._val_count += len(images)

    def on_validation_epoch_end(self) -> None:
        if self._val_count == 0:
            return
        scores = [m.compute() for m in self.member_metrics]
        ious = [float(s["iou"]) for s in scores]
        epoch = self.current_epoch + 1
        for i, iou in enumerate(ious):
            if iou >= self.best_member_iou[i]:  # ties go to the later epoch, as in the authors' loop
                self.best_member_iou[i], self.best_member_epoch[i] = iou, epoch
        best = max(range(len(ious)), key=lambda i: ious[i])
        values = {
            "val_iou": ious[best],
            "val_dice": float(scores[best]["dice"]),
            "val_iou_mean": sum(ious) / len(ious),
            "val_loss": sum(self._member_loss) / (len(self.members) * self._val_count),
        }
        self.last_val_metrics = values
        self.log_dict(values, prog_bar=False)

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["phase2"] = {"best_member_iou": self.best_member_iou, "best_member_epoch": self.best_member_epoch,
                                "members": self.members, "stage": self.stage}

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        state = checkpoint.get("phase2")
        if state is None:
            return
        if state["members"] != self.members or state["stage"] != self.stage:
            raise ValueError("the checkpoint belongs to another Phase 2 population; use another out_dir")
        self.best_member_iou = [float(v) for v in state["best_member_iou"]]
        self.best_member_epoch = [int(v) for v in state["best_member_epoch"]]


# ----- the unit: one stage as one NNI job -------------------------------------------------------------
_MACS_CACHE: Dict[str, int] = {}


def _macs_key(space: Dict[str, Any], sample: Mapping[str, Sequence[int]], frozen: nn.Module, size: Sequence[int]) -> str:
    gene = getattr(frozen, "gene", None)
    if isinstance(gene, Gene):  # BiO-Net++: blocks that never reach the head do not count
        live = gene.live_blocks()
        arch = {label: list(v) for label, v in gene.choices.items() if label in live}
    else:
        arch = {label: list(v) for label, v in sample.items()}
    text = json.dumps([getattr(space["symbol"], "__qualname__", str(space["symbol"])), space["kwargs"], arch, list(size)],
                      sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def member_macs(supernet: nn.Module, space: Dict[str, Any], sample: Mapping[str, Sequence[int]],
                input_size: Sequence[int] = (512, 512)) -> int:
    """MACs of ``sample``'s fixed network (``supernet.freeze(sample)``), cached by architecture."""
    from nni_bixnas.profile import count_complexity

    frozen = supernet.freeze(dict(sample))
    key = _macs_key(space, sample, frozen, input_size)
    if key not in _MACS_CACHE:
        _MACS_CACHE[key] = count_complexity(frozen.cpu(), input_size=tuple(input_size)).macs
    return _MACS_CACHE[key]


def _stage_dir(out_dir: Optional[str], stage: int, identity: Mapping[str, Any]) -> Path:
    """``out_dir/stage_<t>-<digest of the unit's settings>``: a re-run resumes only the very same unit."""
    if out_dir is None:
        nni_output = os.environ.get("NNI_OUTPUT_DIR")
        out_dir = str(Path(nni_output) / "phase2") if nni_output else tempfile.mkdtemp(prefix="bixnas-phase2-")
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path(out_dir) / f"stage_{stage}-{digest}"


def phase2_stage_unit(
    model: Optional[nn.Module] = None,
    *,
    space: Dict[str, Any],
    stage: int,
    members: List[Sample],
    candidates: Optional[Dict[str, List[int]]] = None,
    epochs: int = 40,
    milestones: Optional[List[int]] = None,
    gamma: float = 0.1,
    lr: float = 1e-3,
    step: str = "low_memory",
    mode: str = "fair",
    member_bn: str = "recalibrate",
    recalibration_batches: int = 8,
    macs_input_size: Sequence[int] = (512, 512),
    init_weights: Optional[str] = None,
    out_dir: Optional[str] = None,
    data: Optional[str] = None,
    batch_size: int = 2,
    seed: int = 0,
    split_seed: int = 0,
    patch_size: Optional[int] = None,
    resize: Optional[int] = None,
    val_fraction: float = 0.2,
    precision: Optional[str] = None,
    accelerator: str = "auto",
    devices: Any = "auto",
    progress: bool = False,
) -> Dict[str, Any]:
    """Train one Phase 2 stage, score its population and report the result to NNI.

    Builds a fresh SuperNet (``build_space(space, candidates=candidates)``, seeded from ``(seed, stage)``;
    ``init_weights`` loads a previous stage's weights), trains it with :class:`Phase2Task` through
    :func:`~nni_bixnas.training.fit` (per-epoch ``nni.report_intermediate_result`` via ``NNIReporter``),
    counts every member's MACs and reports ``{'default': best IoU, 'stage', 'population': [{'sample',
    'iou', 'macs', 'best_epoch'}, ...], 'front': [indices], 'phase': 2, 'weights': path, 'seconds'}``
    with ``nni.report_final_result``.

    Parameters
    ----------
    model
        The job's frozen model (a parent's architecture), passed by NNI; unused, the unit trains its
        own SuperNet.
    space
        :func:`~nni_bixnas.strategy.units.space_reference` of the model space.
    stage, members
        The stage being searched and the population (full samples).
    candidates
        Phase 1's narrowed candidate sets, passed to the space's constructor.
    epochs, milestones, gamma, lr, step, mode
        Training of the stage (``milestones`` default: :func:`default_milestones`).
    macs_input_size
        ``(H, W)`` at which MACs are counted (the paper: 512 x 512).
    init_weights
        A ``.pt`` state dict to start from (``inherit_weights=True``); default: fresh weights.
    out_dir
        Parent folder of the stage's run folder (default ``$NNI_OUTPUT_DIR/phase2`` or a temporary one).
    recalibration_batches
        Training batches per member for ``member_bn='recalibrate'``.
    data, batch_size, seed, split_seed, patch_size, resize, val_fraction, precision, accelerator, devices, progress
        As in :func:`~nni_bixnas.training.fit` (``data`` is required). Phase 2 steps run on one device.

    Returns
    -------
    dict
        The reported final result.
    """
    import numpy as np

    from nni_bixnas.data import SegDataModule
    from nni_bixnas.training import NNIReporter, fit, nni_tensorboard_dir

    started = time.perf_counter()
    if devices not in ("auto", 1, [0], "1"):
        _logger.warning("Phase 2 steps run on one device; ignoring devices=%r", devices)
    data = require_data({"data": data}, "phase2_stage_unit")
    identity = dict(space=space, stage=stage, members=members, candidates=candidates, epochs=epochs,
                    milestones=milestones, gamma=gamma, lr=lr, step=step, mode=mode, member_bn=member_bn,
                    recalibration_batches=recalibration_batches, init_weights=init_weights, data=data,
                    batch_size=batch_size, seed=seed, split_seed=split_seed, patch_size=patch_size, resize=resize,
                    val_fraction=val_fraction)
    run_dir = _stage_dir(out_dir, stage, identity)
    init_seed = int(np.random.SeedSequence([int(seed), int(stage)]).generate_state(1)[0])
    torch.manual_seed(init_seed)
    supernet = build_space(space, **({"candidates": candidates} if candidates is not None else {}))
    if init_weights is not None:
        state = torch.load(init_weights, map_location="cpu", weights_only=True)  # a plain state dict of tensors
        own = supernet.state_dict()
        supernet.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)

    datamodule = SegDataModule(data=data, batch_size=batch_size, seed=seed, split_seed=split_seed, patch_size=patch_size,
                               resize=resize, val_fraction=val_fraction)
    datamodule.setup("fit")
    info = datamodule.info
    for name in ("in_channels", "num_classes"):
        declared, found = getattr(supernet, name, None), getattr(info, name, None)
        if declared is not None and found is not None and declared != found:
            raise ValueError(f"the search space has {name}={declared} but the data {data!r} has {found}")
    task = Phase2Task(
        supernet, stage, members, step=step, mode=mode, member_bn=member_bn, recalibration_batches=recalibration_batches,
        num_classes=int(getattr(info, "num_classes", 1)), lr=lr,
        milestones=default_milestones(epochs) if milestones is None else milestones, gamma=gamma,
    )
    _logger.info("Phase 2 stage %d: %d members, %d epochs, lr %.3g, step %s, mode %s -> %s",
                 stage, len(members), epochs, lr, step, mode, run_dir)
    fit(task, datamodule, max_epochs=epochs, out_dir=run_dir, seed=seed, precision=precision, accelerator=accelerator,
        devices=1, callbacks=[NNIReporter()], progress=progress, tensorboard_dir=nni_tensorboard_dir())

    weights = run_dir / "supernet.pt"
    from nni_bixnas.utils import atomic_torch_save

    atomic_torch_save(supernet.state_dict(), weights)
    supernet = supernet.cpu()
    population = []
    for i, member in enumerate(members):
        population.append({
            "sample": member,
            "iou": float(task.best_member_iou[i]),
            "best_epoch": int(task.best_member_epoch[i]),
            "macs": int(member_macs(supernet, space, member, macs_input_size)),
        })
    front = pareto_front([[1.0 - p["iou"], p["macs"]] for p in population])
    final = {
        "default": max(p["iou"] for p in population),
        "stage": int(stage),
        "population": population,
        "front": front,
        "phase": 2,
        "weights": str(weights),
        "seconds": time.perf_counter() - started,
    }
    nni.report_final_result(final)
    return final


# ----- the strategy -----------------------------------------------------------------------------------
class ProgressiveEvolution(Strategy):
    """BiX-NAS Phase 2: progressive evolution of skip sets, stage by stage, with skip fairness.

    Works on any model space whose searchable choices are :class:`~nni_bixnas.space.SkipSubset` with a
    ``stage`` and whose model implements the head/tail protocol (``set_active``, ``forward_head``,
    ``forward_tail``; see :mod:`nni_bixnas.strategy.fair_step`). Stages are searched from the last to the
    first; each stage is one job (:func:`phase2_stage_unit`) submitted to the engine.

    Parameters
    ----------
    candidates
        ``{label: indices}`` narrowing the candidate skips (Phase 1's output); other blocks keep their
        own candidates. Blocks of stages not yet searched read all their candidates, so every candidate
        set must fit the block's ``max_k``.
    samples
        ``s``: skip sets drawn per stage (each applied to every parent; population ``s x |parents|``).
    epochs
        Training epochs of every stage's SuperNet (authors: 40).
    keep
        ``(after the first stage, after the others)``: parents retained from the Pareto front (authors:
        3 then 2), or one int for both.
    step
        Fair step: ``'low_memory'`` (default; exact, memory of one member), ``'plain'`` (the paper's one
        big backward) or ``'naive'`` (each member's own full forward/backward, same gradients).
    mode
        ``'fair'`` (one optimiser step per batch on the mean loss) or ``'naive'`` (each member its own
        optimiser step, one after another on the shared weights: the unfair baseline, for comparison).
    member_bn
        How members are scored on validation: ``'recalibrate'`` (default; the higher supernet ranking
        fidelity in ``benchmarks/results/search_quality_fresh.md``) resets every BatchNorm per member,
        recalibrates it on ``recalibration_batches`` training batches and scores the member in eval mode
        (SPOS/FairNAS), independent of the validation batches; ``'batch'`` normalises each member with the
        batch's own BatchNorm statistics; ``'running'`` uses the running statistics all members share,
        as the authors do, which mixes the members' feature statistics (with a short training every
        member can then score about 0, and the Pareto selection follows MACs alone).
    lr_per_member
        Divide the learning rate by the population size, as the authors' code does (not in the paper).
    inherit_weights
        Start every stage from the previous stage's trained SuperNet instead of fresh weights (the
        authors re-initialise; Algorithm 1's "randomly initialized SuperNet weights"), and the first
        stage from ``initial_weights`` when given.
    initial_weights
        A state dict file the first stage starts from with ``inherit_weights`` (``BiXNAS`` passes Phase
        1's trained SuperNet, whose weights the Phase 2 SuperNet shares by name).
    keep_sequential_last
        In the last stage, always keep the sequential input (index 0) and sample the other candidates,
        as the released sampler does. Off by default: Algorithm 1 samples any non-empty subset, and the
        published BiX-Net (``dec_2_0 = [3]``) could not have come from the released sampler.
    milestones, gamma
        ``MultiStepLR`` schedule; default the authors' 10/20/30 of 40 epochs, scaled to ``epochs``.
    training
        Training settings for the units (``data``, ``batch_size``, ``seed``, ``lr``, ``patch_size``,
        ``val_fraction``, ``precision``, ``accelerator``, ``devices``); defaults come from the model
        space's evaluator (:func:`~nni_bixnas.strategy.units.training_settings`).
    out_dir
        Where the stages' run folders go (default ``$NNI_OUTPUT_DIR/phase2`` in a trial, else temporary).
    seed
        Seed of the strategy's private random state (skip-set sampling).
    macs_input_size
        ``(H, W)`` at which members' MACs are counted (the paper: 512 x 512).
    max_redraws
        Draws in a row without a new effective net after which a stage is taken to hold no more distinct
        nets (the authors redraw up to 500 times to avoid a duplicate skip set).
    recalibration_batches
        Training batches per member for ``member_bn='recalibrate'``.
    iou_tolerance
        A warning is logged when the IoUs of a stage's population span less than this (the stage then
        barely ranks its members).

    Attributes
    ----------
    history : list of dict
        Per finished stage: ``stage``, ``skip_sets``, ``population`` (``sample``, ``iou``, ``macs``,
        ``best_epoch``), ``front``, ``kept`` (indices into the population, best IoU first), ``seconds``.
    parents : list of dict
        The retained samples (after the last stage: the result).
    final_samples : list of dict
        The final architectures, best IoU first (empty until the search ends).

    See Also
    --------
    nni_bixnas.strategy.fair_step.fair_step : the shared-head step.
    nni_bixnas.strategy.pareto.select_parents : the selection.
    """

    def __init__(
        self,
        *,
        candidates: Optional[Mapping[str, Sequence[int]]] = None,
        samples: int = 15,
        epochs: int = 40,
        keep: Union[int, Sequence[int]] = (3, 2),
        step: str = "low_memory",
        mode: str = "fair",
        member_bn: str = "recalibrate",
        lr_per_member: bool = True,
        inherit_weights: bool = False,
        initial_weights: Optional[str] = None,
        keep_sequential_last: bool = False,
        milestones: Optional[Sequence[int]] = None,
        gamma: float = 0.1,
        training: Optional[Mapping[str, Any]] = None,
        out_dir: Optional[str] = None,
        seed: Optional[int] = None,
        macs_input_size: Sequence[int] = (512, 512),
        max_redraws: int = 500,
        recalibration_batches: int = 8,
        iou_tolerance: float = 1e-3,
    ) -> None:
        super().__init__()
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be a positive int, got {samples!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        if isinstance(keep, int) and not isinstance(keep, bool):
            keep = (keep, keep)
        if (not isinstance(keep, (tuple, list)) or len(keep) != 2
                or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in keep)):
            raise ValueError(f"keep must be a positive int or (first stage, later stages) of positive ints, got {keep!r}")
        if step not in FAIR_STEPS:
            raise ValueError(f"unknown step {step!r}; expected one of {', '.join(FAIR_STEPS)}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if member_bn not in MEMBER_BN:
            raise ValueError(f"unknown member_bn {member_bn!r}; expected one of {', '.join(MEMBER_BN)}")
        if milestones is not None and any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in milestones):
            raise ValueError(f"milestones must be positive epoch numbers, got {milestones!r}")
        if len(macs_input_size) != 2 or any(not isinstance(v, int) or v < 1 for v in macs_input_size):
            raise ValueError(f"macs_input_size must be (height, width) of positive ints, got {macs_input_size!r}")
        if isinstance(max_redraws, bool) or not isinstance(max_redraws, int) or max_redraws < 0:
            raise ValueError(f"max_redraws must be a non-negative int, got {max_redraws!r}")
        if isinstance(recalibration_batches, bool) or not isinstance(recalibration_batches, int) or recalibration_batches < 1:
            raise ValueError(f"recalibration_batches must be a positive int, got {recalibration_batches!r}")
        if isinstance(iou_tolerance, bool) or not isinstance(iou_tolerance, (int, float)) or not iou_tolerance >= 0:
            raise ValueError(f"iou_tolerance must be a number >= 0, got {iou_tolerance!r}")
        self.candidates = None if candidates is None else {k: sorted({int(i) for i in v}) for k, v in candidates.items()}
        self.samples, self.epochs, self.keep = samples, epochs, (int(keep[0]), int(keep[1]))
        self.step, self.mode, self.member_bn = step, mode, member_bn
        self.lr_per_member, self.inherit_weights = bool(lr_per_member), bool(inherit_weights)
        if initial_weights is not None and not isinstance(initial_weights, (str, os.PathLike)):
            raise ValueError(f"initial_weights must be the path of a state dict file or None, got {initial_weights!r}")
        self.initial_weights = None if initial_weights is None else str(initial_weights)
        self.keep_sequential_last = bool(keep_sequential_last)
        self.milestones = None if milestones is None else [int(m) for m in milestones]
        self.gamma = float(gamma)
        self.training = dict(training or {})
        self.out_dir = None if out_dir is None else str(out_dir)
        self.macs_input_size = [int(v) for v in macs_input_size]
        self.max_redraws = max_redraws
        self.recalibration_batches = recalibration_batches
        self.iou_tolerance = float(iou_tolerance)
        self._effective = None  # the space's effective_sample(sample), if it has one

        self._random_state = RandomState(seed)
        # RNG state after the last finished stage: a resumed search redraws the unfinished stage's skip sets.
        self._resume_rng = self._random_state.get_state()
        self.history: List[Dict[str, Any]] = []
        self.parents: List[Sample] = []
        self.final_samples: List[Sample] = []
        self._stage_index = 0
        self._stages: List[int] = []
        self._blocks: Dict[int, List[str]] = {}
        self._pool: Dict[str, List[int]] = {}
        self._max_k: Dict[str, int] = {}
        self._weights: Optional[str] = None
        self._runner: Optional[UnitRunner] = None

    def extra_repr(self) -> str:
        return (
            f"samples={self.samples}, epochs={self.epochs}, keep={self.keep}, step={self.step!r}, mode={self.mode!r}, "
            f"lr_per_member={self.lr_per_member}, inherit_weights={self.inherit_weights}, "
            f"initial_weights={self.initial_weights!r}, "
            f"keep_sequential_last={self.keep_sequential_last}, member_bn={self.member_bn!r}"
        )

    # -- set-up and checks ------------------------------------------------------------------------
    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        self._check_space(model_space)
        if self.candidates is not None:
            # Search (and freeze) the narrowed space: a narrowed set may exceed the full space's max_k.
            model_space = narrow_space(model_space, self.candidates)
            self._model_space = model_space
        mutables = model_space.simplify()
        skips = {label: m for label, m in mutables.items() if isinstance(m, SkipSubset)}
        pool, max_k = {}, {}
        for label, m in skips.items():
            if len(m.candidates) > m.max_k:
                raise ValueError(
                    f"{label} has {len(m.candidates)} candidates but max_k={m.max_k}: blocks of stages not yet searched "
                    "read all their candidates, which is not a valid sample; build the space with max_k=None (a narrowed "
                    "choice then takes max_k = |candidates|) or a larger max_k (Phase 1's 'code' variant exports the "
                    "sequential input besides its picks)"
                )
            pool[label], max_k[label] = list(m.candidates), m.max_k
        self._pool, self._max_k = pool, max_k
        stages = sorted({int(m.stage) for m in skips.values()}, reverse=True)
        self._blocks = {t: sorted(label for label, m in skips.items() if m.stage == t) for t in stages}
        if self._stages and self._stages != stages:
            raise ValueError(f"the loaded state searched stages {self._stages}, but this space has stages {stages}")
        self._stages = stages
        self._space_ref = space_reference(model_space)
        self._settings = training_settings(model_space, self.training)
        require_data(self._settings, "ProgressiveEvolution")
        self._effective = getattr(space_module(model_space), "effective_sample", None)
        if not self.parents:
            self.parents = [{label: list(pool[label]) if label in pool else m.default() for label, m in mutables.items()}]
        self._runner = UnitRunner(model_space, engine)
        _logger.info("Phase 2 over stages %s, %d blocks, s=%d, keep=%s", stages, len(skips), self.samples, self.keep)
        return model_space

    def _check_space(self, model_space: ExecutableModelSpace) -> None:
        mutables = model_space.simplify()
        skips = {label: m for label, m in mutables.items() if isinstance(m, SkipSubset)}
        if not skips:
            raise ValueError(
                f"the model space has no skip choices (SkipSubset mutables); ProgressiveEvolution searches skip "
                f"sets, found only {', '.join(f'{k} ({type(v).__name__})' for k, v in mutables.items()) or 'no mutables'}"
            )
        missing = sorted(label for label, m in skips.items() if m.stage is None)
        if missing:
            raise ValueError(f"skip choice(s) {', '.join(missing)} have no stage index (SkipSubset(stage=...)); "
                             "Phase 2 groups choices by stage")
        unknown = sorted(set(self.candidates or {}) - set(skips))
        if unknown:
            raise ValueError(f"candidates name unknown skip choice(s) {', '.join(unknown)}")
        for label, cands in (self.candidates or {}).items():
            if not cands:
                raise ValueError(f"the candidate set of {label} would be empty; every block needs at least one input")
            outside = [c for c in cands if c not in skips[label].candidates]
            if outside:
                raise ValueError(f"candidate {outside[0]} of {label} is not among the space's candidates {skips[label].candidates}")

    def _cleanup(self) -> None:
        if self._runner is not None:
            self._runner.close()

    # -- sampling ---------------------------------------------------------------------------------
    def _sample_block(self, label: str, last: bool) -> List[int]:
        pool, k_max, rs = self._pool[label], self._max_k[label], self._random_state
        if last and self.keep_sequential_last and 0 in pool:
            rest = [c for c in pool if c != 0]
            n = int(rs.randint(0, min(k_max - 1, len(rest)) + 1))
            return sorted([0] + [int(c) for c in rs.choice(rest, n, replace=False)]) if n else [0]
        n = int(rs.randint(1, k_max + 1))
        return sorted(int(c) for c in rs.choice(pool, n, replace=False))

    def _n_values(self, label: str, last: bool) -> int:
        """How many values the sampler can give ``label`` (1: the block is fixed, never drawn)."""
        pool, k_max = self._pool[label], self._max_k[label]
        if last and self.keep_sequential_last and 0 in pool:
            return sum(math.comb(len(pool) - 1, n) for n in range(0, k_max))
        return sum(math.comb(len(pool), n) for n in range(1, k_max + 1))

    def effective_key(self, sample: Mapping[str, Sequence[int]]) -> Tuple:
        """What ``sample`` computes, hashable: the choices of its live blocks (the space's
        ``effective_sample``; the whole sample for spaces without one)."""
        effective = self._effective(sample) if self._effective is not None else sample
        return tuple(sorted((label, tuple(sorted(int(i) for i in v))) for label, v in effective.items()))

    def sample_population(self, stage: int) -> Tuple[List[Sample], List[Sample]]:
        """Skip sets for ``stage`` and the members they make with the parents, distinct in what they compute.

        A skip set is drawn as the authors do (per block ``n ~ U{1..|C|}``, then ``n`` of ``C``) and applied to
        every parent; a member whose effective net (live blocks' choices) equals a parent's or another
        member's is dropped, and a skip set that adds no new member is redrawn. Blocks with a single
        possible value are fixed. Drawing stops at ``samples`` skip sets, or after ``max_redraws`` draws in a
        row without a new member: then every distinct net was found, and all of them are trained.

        Returns
        -------
        (skip_sets, members)
        """
        last = stage == self._stages[0]
        labels = self._blocks[stage]
        fixed = {label: self._sample_block(label, last) for label in labels if self._n_values(label, last) == 1}
        free = [label for label in labels if label not in fixed]
        seen = {self.effective_key(parent) for parent in self.parents}
        skip_sets: List[Sample] = []
        drawn: List[Tuple[int, Sample]] = []  # (parent index, member)
        misses = 0
        while free and len(skip_sets) < self.samples and misses <= self.max_redraws:
            skip_set = {**fixed, **{label: self._sample_block(label, last) for label in free}}
            new = []
            for p, parent in enumerate(self.parents):
                member = {**parent, **skip_set}
                key = self.effective_key(member)
                if key not in seen:
                    seen.add(key)
                    new.append((p, member))
            if new:
                skip_sets.append(skip_set)
                drawn.extend(new)
                misses = 0
            else:
                misses += 1
        members = [member for _, member in sorted(drawn, key=lambda pm: pm[0])]  # parent-major, as the authors
        if len(skip_sets) < self.samples:
            _logger.info("[stage %d] only %d distinct effective net(s) differ from the parents (samples=%d, %d fixed "
                         "block(s)); training all of them", stage, len(members), self.samples, len(fixed))
        return skip_sets, members

    # -- the search -------------------------------------------------------------------------------
    def _run(self) -> None:
        for index in range(self._stage_index, len(self._stages)):
            stage = self._stages[index]
            started = time.perf_counter()
            skip_sets, members = self.sample_population(stage)
            if not members:
                _logger.info("[stage %d] nothing to compare: every choice of this stage computes the parents' nets; "
                             "the parents carry over", stage)
                self.history.append({"stage": stage, "skip_sets": [], "population": [], "front": [], "kept": [],
                                     "seconds": time.perf_counter() - started})
                self._finish_stage(index)
                continue
            settings = dict(self._settings)
            base_lr = float(settings.pop("lr", 1e-3))
            lr = base_lr / len(members) if self.lr_per_member else base_lr
            _logger.info("[stage %d] %d skip sets x %d parents -> %d distinct members, lr %.3g",
                         stage, len(skip_sets), len(self.parents), len(members), lr)
            result = self._runner.run(
                phase2_stage_unit, self.parents[0],
                space=self._space_ref, stage=stage, members=members, candidates=self.candidates,
                epochs=self.epochs, milestones=self.milestones, gamma=self.gamma, lr=lr, step=self.step,
                mode=self.mode, member_bn=self.member_bn, recalibration_batches=self.recalibration_batches,
                macs_input_size=self.macs_input_size,
                init_weights=self._stage_weights(), out_dir=self.out_dir, **settings,
            )
            population = result["population"]
            if len(population) != len(members):
                raise RuntimeError(f"stage {stage}: the unit scored {len(population)} members, expected {len(members)}")
            keep = self.keep[0] if index == 0 else self.keep[1]
            ious, macs = [p["iou"] for p in population], [p["macs"] for p in population]
            kept = select_parents(ious, macs, keep)
            front = list(result["front"])
            _logger.info("[stage %d] Pareto front: %d member(s) for keep=%d%s", stage, len(front), keep,
                         "; the other parents are the best remaining by IoU" if len(front) < min(keep, len(population)) else "")
            spread = max(ious) - min(ious)
            if len(population) > 1 and spread < self.iou_tolerance:
                _logger.warning("[stage %d] the members' IoUs span only %.2g (< iou_tolerance %.2g): the stage barely "
                                "ranks them, so the selection follows MACs; train the stage longer", stage, spread,
                                self.iou_tolerance)
            self.history.append({
                "stage": stage, "skip_sets": skip_sets, "population": population, "front": front,
                "kept": kept, "seconds": time.perf_counter() - started,
            })
            self.parents = [dict(population[i]["sample"]) for i in kept]
            self._weights = result.get("weights")
            self._finish_stage(index)
            for rank, i in enumerate(kept):
                _logger.info("[stage %d] kept #%d: IoU %.4f, %.3f GMACs", stage, rank + 1, population[i]["iou"],
                             population[i]["macs"] / 1e9)
        self.final_samples = [dict(p) for p in self.parents]

    def _stage_weights(self) -> Optional[str]:
        """Where the next stage's SuperNet starts: fresh (the authors'), or with ``inherit_weights`` the previous
        stage's trained SuperNet, the first stage from ``initial_weights`` (e.g. Phase 1's) if given."""
        if not self.inherit_weights:
            return None
        return self._weights if self._weights is not None else self.initial_weights

    def _finish_stage(self, index: int) -> None:
        self._stage_index = index + 1
        self._resume_rng = self._random_state.get_state()

    # -- results ----------------------------------------------------------------------------------
    def list_models(self, sort: bool = True, limit: Optional[int] = None) -> Iterator[ExecutableModelSpace]:
        """The final architectures, frozen, best IoU first, with their IoU as metric.

        (The engine's models are the stage units; their samples are only the parents they started from.)
        ``sort`` is accepted for compatibility: the final architectures are always ranked.
        """
        if self._status in (StrategyStatus.INITIALIZED, StrategyStatus.EMPTY) and not self.final_samples:
            raise RuntimeError("Strategy has not been run.")
        scores = self.final_scores()
        for rank, (sample, iou) in enumerate(zip(self.final_samples, scores)):
            if limit is not None and rank >= limit:
                break
            model = self.model_space.freeze(sample)
            model.metrics.final = iou
            yield model

    def final_scores(self) -> List[float]:
        """Validation IoU of :attr:`final_samples` (in their last stage), in the same order."""
        scored = [h for h in self.history if h["population"]]  # a stage with nothing to compare keeps the parents
        if not self.final_samples or not scored:
            return []
        last = scored[-1]
        return [float(last["population"][i]["iou"]) for i in last["kept"]]

    def final_genes(self) -> List[Gene]:
        """The final architectures as BiO-Net++ :class:`~nni_bixnas.space.Gene` objects, best first."""
        from nni_bixnas.space import BiONetPlusPlus

        ref = getattr(self, "_space_ref", None)
        if ref is None or not (isinstance(ref["symbol"], type) and issubclass(ref["symbol"], BiONetPlusPlus)):
            raise TypeError("final_genes() needs a BiONetPlusPlus search space; use final_samples for other spaces")
        kwargs = ref["kwargs"]
        return [Gene.from_sample(s, kwargs.get("iterations", 3), kwargs.get("levels", 4)) for s in self.final_samples]

    def state_dict(self) -> dict:
        """History, parents, stage index and RNG state as of the last finished stage (a resume redoes the next)."""
        return {
            "history": copy.deepcopy(self.history),
            "parents": copy.deepcopy(self.parents),
            "final_samples": copy.deepcopy(self.final_samples),
            "stage_index": self._stage_index,
            "stages": list(self._stages),
            "weights": self._weights,
            "random_state": self._resume_rng,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        stages = list(state_dict["stages"])
        if self._stages and stages and stages != self._stages:
            raise ValueError(f"the state searched stages {stages}, but this space has stages {self._stages}")
        self.history = copy.deepcopy(list(state_dict["history"]))
        self.parents = copy.deepcopy(list(state_dict["parents"]))
        self.final_samples = copy.deepcopy(list(state_dict.get("final_samples", [])))
        self._stage_index = int(state_dict["stage_index"])
        self._stages = stages or self._stages
        self._weights = state_dict.get("weights")
        self._random_state.set_state(state_dict["random_state"])
        self._resume_rng = self._random_state.get_state()
