"""Phase 2 of BiX-NAS: progressive evolutionary search with skip fairness (paper §2.2-2.3, Algorithm 1).

At stage ``t`` (from the last to the first) ``s`` skip sets for the blocks of stage ``t`` are applied to
every retained parent; one SuperNet trains the population with a shared head
(:mod:`~nni_bixnas.strategy.supernet.fair_step`) in one job of the engine
(:func:`~nni_bixnas.strategy.units.phase2_stage_unit`), and the parents of the next stage are selected
from the Pareto front of ``(1 - IoU, MACs)`` (or latency).

Faithful to the authors' code (``shared/notes/official-code.md`` §3): a fresh SuperNet per stage, Adam
with ``lr = 1e-3 / population``, ``MultiStepLR`` at epochs 10/20/30 of 40 (gamma 0.1), best IoU over the
epochs, 3 parents after the first stage and 2 after the others. Fixed: every tail reads the head's own
features (the released code lets tails read a previous tail's features from stage 4 down), and the
released code's crash at the end of epoch 1.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from nni.nas.execution import ExecutionEngine
from nni.nas.space import ExecutableModelSpace
from nni.nas.strategy.base import Strategy, StrategyStatus
from numpy.random import RandomState

from nni_bixnas import _checks as check
from nni_bixnas.space.gene import Gene
from nni_bixnas.strategy import units
from nni_bixnas.strategy.pareto import SELECTIONS, select_parents
from nni_bixnas.strategy.records import Sample, StageRecord, final_scores, population_of
from nni_bixnas.strategy.runner import NoBudget, UnitRunner
from nni_bixnas.strategy.settings import check_training, training_settings
from nni_bixnas.strategy.skip_sampler import SkipSetSampler
from nni_bixnas.strategy.stage_log import log_kept, log_selection
from nni_bixnas.strategy.supernet.member_latency import LatencySettings, resolve_device
from nni_bixnas.strategy.supernet.member_macs import member_macs
from nni_bixnas.strategy.supernet.phase2_task import check_step_mode_bn
from nni_bixnas.strategy.supernet.spaces import bionet_genes, phase2_module, phase2_space, space_reference

_logger = logging.getLogger(__name__)

__all__ = ["ProgressiveEvolution"]

#: What the selection minimises beside ``1 - IoU``.
OBJECTIVES = ("macs", "latency")


class ProgressiveEvolution(Strategy):
    """BiX-NAS Phase 2: progressive evolution of skip sets, stage by stage, with skip fairness.

    Works on any model space whose searchable choices are :class:`~nni_bixnas.space.SkipSubset` with a
    ``stage`` and whose model implements the head/tail protocol (``set_active``, ``forward_head``,
    ``forward_tail``; see :mod:`nni_bixnas.strategy.supernet.fair_step`). Stages are searched from the last to the
    first; each stage is one job (:func:`~nni_bixnas.strategy.units.phase2_stage_unit`) submitted to the engine.

    Parameters
    ----------
    candidates
        ``{label: indices}`` narrowing the candidate skips (Phase 1's output); blocks of stages not yet
        searched read all their candidates, so every candidate set must fit the block's ``max_k``.
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
        How members are scored (:class:`~nni_bixnas.strategy.supernet.phase2_task.Phase2Task`):
        ``'recalibrate'`` (default; the better ranking fidelity measured) gives each member BatchNorm
        statistics of its own from ``recalibration_batches`` training batches; ``'batch'`` each batch's own;
        ``'running'`` the statistics all members share, as the authors.
    lr_per_member
        Divide the learning rate by the population size, as the authors' code does (not in the paper).
    inherit_weights, initial_weights
        Start every stage from the previous stage's SuperNet, the first from ``initial_weights`` if given
        (``BiXNAS`` passes Phase 1's), instead of fresh weights as the authors (Algorithm 1).
    keep_sequential_last
        In the last stage, always keep the sequential input (index 0), as the released sampler does; off by
        default, as Algorithm 1 (the published BiX-Net's ``dec_2_0 = [3]`` could not come from that sampler).
    milestones, gamma
        ``MultiStepLR`` schedule; default the authors' 10/20/30 of 40 epochs, scaled to ``epochs``.
    training
        Training settings of the units (fields of :class:`~nni_bixnas.settings.TrainingSettings`); defaults
        come from the experiment's evaluator (:func:`~nni_bixnas.strategy.settings.training_settings`).
    out_dir
        Where the stages' run folders go (default ``$NNI_OUTPUT_DIR/phase2`` in a trial, else temporary).
    seed
        Seed of the strategy's private random state (skip-set sampling).
    macs_input_size
        ``(H, W)`` at which members' MACs are counted (the paper: 512 x 512).
    selection, selection_se
        How a stage keeps its parents and the last its pick (:func:`~nni_bixnas.strategy.pareto.select_parents`):
        ``'one_se'`` (default, the measured one) puts first, cheapest first, the members within ``selection_se``
        paired standard errors of the best member's IoU; ``'iou'`` is the authors' front ranked by IoU.
    objective
        What the Pareto front trades against IoU: ``'macs'`` (default, the paper's) or ``'latency'``, each
        member's fixed network timed in the strategy's process, once per distinct net in the whole search
        (the timings are in :meth:`state_dict`: a resume does not time again).
    latency_input_size, latency_repeats, latency_warmup, latency_device
        The timing (:attr:`latency`, a :class:`~nni_bixnas.strategy.supernet.member_latency.LatencySettings`;
        ``latency_input_size`` defaults to ``macs_input_size``).
    max_redraws
        Draws in a row without a new net after which a stage holds no more distinct nets (authors: 500).
    recalibration_batches
        Training batches per member for ``member_bn='recalibrate'``.
    iou_tolerance
        A warning is logged when the IoUs of a stage's population span less than this.
    unit_retries
        How many times a failed stage's job is submitted again (it resumes from its checkpoint).

    Attributes
    ----------
    history : list of StageRecord
        Per finished stage: its skip sets, population, Pareto front, kept parents and wall time.
    parents : list of dict
        The retained samples (after the last stage: the result).
    final_samples : list of dict
        The final architectures in the selection's order, the pick first (empty until the search ends).
    latency : LatencySettings
        The ``latency_*`` options.

    See Also
    --------
    nni_bixnas.strategy.supernet.fair_step.fair_step : the shared-head step.
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
        selection: str = "one_se",
        selection_se: float = 1.0,
        objective: str = "macs",
        latency_input_size: Optional[Sequence[int]] = None,
        latency_repeats: int = 5,
        latency_warmup: int = 2,
        latency_device: Optional[str] = None,
        max_redraws: int = 500,
        recalibration_batches: int = 8,
        iou_tolerance: float = 1e-3,
        unit_retries: int = 1,
    ) -> None:
        super().__init__()
        keep = check.positive_ints("keep", [keep, keep] if check.is_int(keep) else keep, 2,
                             "a positive int or (first stage, later stages) of positive ints")
        if milestones is not None:
            milestones = check.positive_ints("milestones", milestones, what="positive epoch numbers")
        macs_input_size = check.positive_ints("macs_input_size", macs_input_size, 2, "(height, width) of positive ints")
        self.candidates = None if candidates is None else {
            k: sorted({int(i) for i in v}) for k, v in candidates.items()}
        self.samples, self.epochs = check.positive_int("samples", samples), check.positive_int("epochs", epochs)
        self.keep, self.milestones, self.gamma = tuple(keep), milestones, float(gamma)
        self.step, self.mode, self.member_bn = check_step_mode_bn(step, mode, member_bn)
        self.lr_per_member, self.inherit_weights = bool(lr_per_member), bool(inherit_weights)
        self.initial_weights = check.optional_path("initial_weights", initial_weights, "the path of a state dict file")
        self.keep_sequential_last, self.macs_input_size = bool(keep_sequential_last), macs_input_size
        self.training, self.out_dir = check_training(training), check.optional_path("out_dir", out_dir)
        self.max_redraws = check.non_negative_int("max_redraws", max_redraws)
        self.recalibration_batches = check.positive_int("recalibration_batches", recalibration_batches)
        self.iou_tolerance = check.non_negative_number("iou_tolerance", iou_tolerance)
        self.unit_retries = check.non_negative_int("unit_retries", unit_retries)
        self.objective = check.one_of("objective", objective, OBJECTIVES)
        self.selection = check.one_of("selection", selection, SELECTIONS)
        self.selection_se = check.non_negative_number("selection_se", selection_se)
        self.latency = LatencySettings(macs_input_size if latency_input_size is None else latency_input_size,
                                       latency_repeats, latency_warmup, latency_device)

        self._random_state = RandomState(seed)
        # RNG state after the last finished stage: a resumed search redraws the unfinished stage's skip sets.
        self._resume_rng = self._random_state.get_state()
        self.history: List[StageRecord] = []
        self.parents: List[Sample] = []
        self.final_samples: List[Sample] = []
        self._stage_index = 0
        self._stages: List[int] = []
        self._sampler: Optional[SkipSetSampler] = None
        self._weights: Optional[str] = None
        self._latency_ms: Dict[str, float] = {}  # this search's timings by architecture key (in its state)
        self._device = self.latency.device

    def extra_repr(self) -> str:
        names = ("samples", "epochs", "keep", "step", "mode", "lr_per_member", "inherit_weights", "initial_weights",
                 "keep_sequential_last", "member_bn", "selection")
        names += ("selection_se",) if self.selection == "one_se" else ()
        options = {name: getattr(self, name) for name in names + ("objective",)}
        options.update(self.latency.options() if self.objective == "latency" else {})
        return ", ".join(f"{name}={value!r}" for name, value in options.items())

    # -- set-up and checks ------------------------------------------------------------------------
    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        model_space, skips, stages = phase2_space(model_space, self.candidates)
        self._model_space = model_space
        if self._stages and self._stages != stages:
            raise ValueError(f"the loaded state searched stages {self._stages}, but this space has stages {stages}")
        self._stages = stages
        self._module = phase2_module(model_space)
        self._sampler = SkipSetSampler.from_skips(
            skips, samples=self.samples, keep_sequential_last=self.keep_sequential_last, max_redraws=self.max_redraws,
            effective=getattr(self._module, "effective_sample", None),
        )
        self._space_ref = space_reference(model_space)
        self._settings = training_settings(model_space, self.training, who="ProgressiveEvolution")
        if self.objective == "latency":
            self._device = resolve_device(self.latency.device, self._settings.accelerator)
        if not self.parents:
            self.parents = [{label: list(skips[label].candidates) if label in skips else m.default()
                             for label, m in model_space.simplify().items()}]
        _logger.info("Phase 2 over stages %s, %d blocks, s=%d, keep=%s", stages, len(skips), self.samples, self.keep)
        return model_space

    # -- sampling ---------------------------------------------------------------------------------
    def effective_key(self, sample: Mapping[str, Sequence[int]]) -> Tuple:
        """What ``sample`` computes, hashable (see :meth:`SkipSetSampler.effective_key`)."""
        return self._sampler.effective_key(sample)

    def sample_population(self, stage: int) -> Tuple[List[Sample], List[Sample]]:
        """Skip sets for ``stage`` and their distinct members with :attr:`parents`, drawn from the strategy's
        private RNG (see :meth:`SkipSetSampler.sample_population`)."""
        return self._sampler.sample_population(stage, self.parents, self._random_state)

    # -- the search -------------------------------------------------------------------------------
    def _run(self) -> None:
        with UnitRunner(self.model_space, self.engine, retries=self.unit_retries) as runner:
            for index in range(self._stage_index, len(self._stages)):
                try:
                    self._run_stage(runner, index)
                except NoBudget as err:
                    _logger.warning("Phase 2 stops before stage %d: %s", self._stages[index], err)
                    return
        self.final_samples = [dict(p) for p in self.parents]

    def _run_stage(self, runner: UnitRunner, index: int) -> None:
        stage, started = self._stages[index], time.perf_counter()
        skip_sets, members = self.sample_population(stage)
        if not members:
            _logger.info("[stage %d] nothing to compare: every choice of this stage computes the parents' nets; "
                         "the parents carry over", stage)
            self.history.append(StageRecord(stage, [], [], [], [], time.perf_counter() - started))
            self._finish_stage(index)
            return
        lr = self._settings.lr / len(members) if self.lr_per_member else self._settings.lr
        _logger.info("[stage %d] %d skip sets x %d parents -> %d distinct members, lr %.3g",
                     stage, len(skip_sets), len(self.parents), len(members), lr)
        # MACs and latency depend on the architecture only: measured here once per net (cached), not in the trial
        macs = [member_macs(self._module, self._space_ref, m, self.macs_input_size) for m in members]
        latency = self.latency.time_members(self._module, self._space_ref, members, self._device, self._latency_ms,
                                            stage) if self.objective == "latency" else None
        result = runner.run(
            units.phase2_stage_unit, self.parents[0],
            space=self._space_ref, stage=stage, members=members, candidates=self.candidates,
            epochs=self.epochs, milestones=self.milestones, gamma=self.gamma, step=self.step,
            mode=self.mode, member_bn=self.member_bn, recalibration_batches=self.recalibration_batches,
            macs_input_size=self.macs_input_size, member_macs=macs, member_latency=latency,
            init_weights=self._stage_weights(), out_dir=self.out_dir,
            training=self._settings.replace(lr=lr).to_dict(),
        )
        population = population_of(result, stage, len(members))
        keep = self.keep[0] if index == 0 else self.keep[1]
        ious, costs, image_ious = zip(*[(m.iou, m.cost(self.objective), m.image_iou) for m in population])
        kept = select_parents(ious, costs, keep, selection=self.selection, image_ious=image_ious,
                              n_se=self.selection_se)
        front = [int(i) for i in result["front"]]
        log_selection(stage, population, front, keep, selection=self.selection, selection_se=self.selection_se,
                      iou_tolerance=self.iou_tolerance, objective=self.objective)
        record = StageRecord(stage, skip_sets, population, front, kept, time.perf_counter() - started)
        self.history.append(record)
        self.parents = [dict(m.sample) for m in record.parents]
        self._weights = result.get("weights")
        self._finish_stage(index)
        log_kept(stage, record.parents)

    def _stage_weights(self) -> Optional[str]:
        """Where the next stage's SuperNet starts: fresh (the authors'), or with ``inherit_weights`` the previous
        stage's trained SuperNet, the first stage from ``initial_weights`` (e.g. Phase 1's) if given."""
        return (self._weights if self._weights is not None else self.initial_weights) if self.inherit_weights else None

    def _finish_stage(self, index: int) -> None:
        self._stage_index, self._resume_rng = index + 1, self._random_state.get_state()

    # -- results ----------------------------------------------------------------------------------
    def list_models(self, sort: bool = True, limit: Optional[int] = None) -> Iterator[ExecutableModelSpace]:
        """The final architectures, frozen, with their last stage's IoU as metric; ``sort`` (NNI's contract)
        orders them by metric, descending, ``limit`` caps their number (the engine's models are the stages)."""
        if self._status in (StrategyStatus.INITIALIZED, StrategyStatus.EMPTY) and not self.final_samples:
            raise RuntimeError("Strategy has not been run.")
        ranked = list(zip(self.final_samples, self.final_scores()))
        if sort:
            ranked.sort(key=lambda pair: pair[1], reverse=True)
        for sample, iou in ranked[:limit]:
            model = self.model_space.freeze(sample)
            model.metrics.final = iou
            yield model

    def final_scores(self) -> List[float]:
        """Validation IoU of :attr:`final_samples` (in their last stage), in the same order."""
        return final_scores(self.history) if self.final_samples else []

    def final_genes(self) -> List[Gene]:
        """The final architectures as BiO-Net++ :class:`~nni_bixnas.space.Gene` objects, best first."""
        return bionet_genes(getattr(self, "_space_ref", None), self.final_samples)

    def state_dict(self) -> dict:
        """History, parents, stage index and RNG state as of the last finished stage (a resume redoes the next);
        the objective, and every latency timed so far (a resume does not time a net again)."""
        return {"history": [h.to_dict() for h in self.history], "parents": copy.deepcopy(self.parents),
                "final_samples": copy.deepcopy(self.final_samples), "stage_index": self._stage_index,
                "stages": list(self._stages), "weights": self._weights, "random_state": self._resume_rng,
                "objective": self.objective, "selection": self.selection, "latency_ms": dict(self._latency_ms)}

    def load_state_dict(self, state_dict: dict) -> None:
        stages, objective = list(state_dict["stages"]), state_dict.get("objective", "macs")
        if self._stages and stages and stages != self._stages:
            raise ValueError(f"the state searched stages {stages}, but this space has stages {self._stages}")
        if objective != self.objective:
            raise ValueError(f"the state searched with objective {objective!r}, but this strategy has objective "
                             f"{self.objective!r}")
        self.history = [StageRecord.from_dict(h) for h in state_dict["history"]]
        self.parents = copy.deepcopy(list(state_dict["parents"]))
        self.final_samples = copy.deepcopy(list(state_dict.get("final_samples", [])))
        self._stage_index, self._stages = int(state_dict["stage_index"]), stages or self._stages
        self._weights = state_dict.get("weights")
        self._random_state.set_state(state_dict["random_state"])
        self._resume_rng = self._random_state.get_state()
        self._latency_ms = {str(k): float(v) for k, v in state_dict.get("latency_ms", {}).items()}
