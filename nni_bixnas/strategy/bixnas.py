"""BiX-NAS: Phase 1 (selection matrix) -> Phase 2 (progressive evolution) -> [finalist check] -> retraining
of the winner."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

import torch
from nni.nas.execution import ExecutionEngine
from nni.nas.space import ExecutableModelSpace
from nni.nas.strategy import Strategy
from numpy.random import RandomState

from nni_bixnas._checks import non_negative_int, non_negative_number
from nni_bixnas.settings import TrainingSettings
from nni_bixnas.utils import atomic_torch_save

from . import records, units
from .finalists import FinalistCheck
from .progressive_evolution import ProgressiveEvolution
from .runner import NoBudget, UnitRunner, add_unit_listener
from .selection_matrix import SelectionMatrix
from .settings import TRAINING_KEYS, check_training, training_settings

_logger = logging.getLogger(__name__)

__all__ = ["BiXNAS"]

STATE_FILE = "bixnas_state.pt"


class BiXNAS(FinalistCheck, Strategy):
    """The whole BiX-NAS search: :class:`SelectionMatrix`, then :class:`ProgressiveEvolution` on its
    candidates, then retraining the best architecture with several seeds.

    Every expensive unit (the Phase 1 SuperNet, each Phase 2 stage, each retraining) is one job of the
    engine, so the chain runs in-process (``NasExperiment`` from Python) and as trials of an NNI training
    service (``nnictl`` through :mod:`nni_bixnas.experiment`).

    Parameters
    ----------
    phase1
        Keyword arguments of :class:`SelectionMatrix` (e.g. ``{'epochs': 300}``).
    phase2
        Keyword arguments of :class:`ProgressiveEvolution` (e.g. ``{'samples': 15, 'epochs': 40}``). With
        ``inherit_weights=True`` the first stage starts from Phase 1's trained SuperNet and every later
        stage from the previous one (ours, for small budgets; the authors train every stage afresh).
    retrain
        ``None`` or ``False`` to skip retraining; else a dict with ``seeds`` (default ``[0, 1, 2]``, distinct)
        and keyword arguments of :func:`~nni_bixnas.training.train_and_report` (``max_epochs``, ...). The
        seeds are independent units, submitted together: with ``trialConcurrency: N`` N of them train at
        once. Their mean ± std is in :attr:`result` (``retrained_iou_mean``, ...), ``result.json`` and
        :meth:`summary_line`, and (several seeds) the ``default`` of one last trial,
        :func:`~nni_bixnas.strategy.units.retrained_result_unit`.
    training
        Training settings shared by every unit (a dict of ``data``, ``batch_size``, ``patch_size``, ..., or a
        :class:`~nni_bixnas.settings.TrainingSettings`); by default those of the experiment's evaluator.
    out_dir
        Where units write checkpoints, plots and the chain's state (``bixnas_state.pt``) and results
        (``result.json``, ``gene.txt``). With ``resume=True`` an existing state there is loaded, and the
        search continues after the last finished unit.
    seed
        Seed of the chain's private RNG; each phase gets its own seed from it.
    resume
        Load ``out_dir/bixnas_state.pt`` if present.
    unit_retries
        How many times any unit (Phase 1, a Phase 2 stage, a retraining) is submitted again after its
        trial failed, e.g. was killed; a unit resumes from its run folder.
    finalist_epochs, finalist_tolerance
        ``0`` (default): the winner is Phase 2's first final architecture. Else each is first trained
        standalone this long and the winner is Phase 2's first within ``finalist_tolerance`` IoU of the best
        (ours; :mod:`nni_bixnas.strategy.finalists`). Scores in :attr:`finalists` and ``result.json``.
    """

    def __init__(
        self,
        phase1: Optional[Dict[str, Any]] = None,
        phase2: Optional[Dict[str, Any]] = None,
        retrain: Optional[Dict[str, Any]] = None,
        training: Optional[Union[Dict[str, Any], TrainingSettings]] = None,
        out_dir: Optional[str] = None,
        seed: Optional[int] = None,
        resume: bool = True,
        unit_retries: int = 1,
        finalist_epochs: int = 0,
        finalist_tolerance: float = 0.05,
    ) -> None:
        super().__init__()
        training = check_training(training)  # a dict, or a TrainingSettings
        for name, value in [("phase1", phase1), ("phase2", phase2)]:
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"{name} must be a dict of keyword arguments, got {type(value).__name__}")
        if retrain not in (None, False) and not isinstance(retrain, dict):
            raise ValueError(f"retrain must be None, False or a dict, got {type(retrain).__name__}")
        self.phase1_kwargs = dict(phase1 or {})
        self.phase2_kwargs = dict(phase2 or {})
        for forbidden in ("training", "out_dir", "seed", "unit_retries"):
            if forbidden in self.phase1_kwargs or forbidden in self.phase2_kwargs:
                raise ValueError(f"set {forbidden!r} on BiXNAS, not inside phase1/phase2")
        if "candidates" in self.phase2_kwargs:
            raise ValueError("phase2 must not set 'candidates': they come from Phase 1")
        self.retrain_kwargs: Optional[Dict[str, Any]] = None if retrain in (None, False) else dict(retrain)
        if self.retrain_kwargs is not None:
            seeds = self.retrain_kwargs.setdefault("seeds", [0, 1, 2])
            if not seeds or not all(isinstance(s, int) for s in seeds) or len(set(seeds)) != len(seeds):
                raise ValueError(f"retrain['seeds'] must be a non-empty list of distinct ints, got {seeds!r}")
            from nni_bixnas.training.evaluator import check_arguments

            check_arguments({k: v for k, v in self.retrain_kwargs.items() if k != "seeds"}, prefix="retrain.")
        self.training = dict(training or {})
        self.out_dir = None if out_dir is None else str(out_dir)
        self.resume = bool(resume)
        self.unit_retries = non_negative_int("unit_retries", unit_retries)
        self.finalist_epochs = non_negative_int("finalist_epochs", finalist_epochs)
        self.finalist_tolerance = non_negative_number("finalist_tolerance", finalist_tolerance)
        self.seed = seed
        self._random_state = RandomState(seed)
        self._phase_seeds = [int(v) for v in self._random_state.randint(2**31 - 1, size=2)]
        self.phase1 = self._build_phase1()
        # Phase 2 is built once Phase 1's candidates exist; build it now only to validate its arguments.
        ProgressiveEvolution(**self.phase2_kwargs, training=self.training, seed=self._phase_seeds[1],
                             unit_retries=self.unit_retries)
        self.phase2: Optional[ProgressiveEvolution] = None
        self.retrained: List[Dict[str, Any]] = []
        #: The finalist check's results, one per final architecture (``index`` into Phase 2's order).
        self.finalists: List[Dict[str, Any]] = []
        self.headline_reported = False  # the trial of the retrained IoU mean has run
        self.result: Optional[Dict[str, Any]] = None
        self._pending_phase2_state: Optional[dict] = None
        self._remove_listener = None

    def _build_phase1(self) -> SelectionMatrix:
        return SelectionMatrix(**self.phase1_kwargs, training=self.training, out_dir=self._sub_dir("phase1"),
                               seed=self._phase_seeds[0], unit_retries=self.unit_retries)

    def _sub_dir(self, name: str) -> Optional[str]:
        return None if self.out_dir is None else str(Path(self.out_dir) / name)

    def extra_repr(self) -> str:
        finalists = (f", finalist_epochs={self.finalist_epochs}, finalist_tolerance={self.finalist_tolerance}"
                     if self.finalist_epochs else "")
        return (f"phase1={self.phase1_kwargs}, phase2={self.phase2_kwargs}, retrain={self.retrain_kwargs}, "
                f"out_dir={self.out_dir!r}, seed={self.seed}{finalists}")

    # -- lifecycle --------------------------------------------------------------------------------
    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        training_settings(model_space, self.training, who="BiXNAS")  # no data: an error before any training
        if self.out_dir is not None and self.resume and (Path(self.out_dir) / STATE_FILE).is_file():
            path = Path(self.out_dir) / STATE_FILE
            _logger.info("Resuming BiX-NAS from %s", path)
            # Before Phase 1 is initialised, so that it is rebuilt under the saved phase seeds.
            self.load_state_dict(torch.load(path, weights_only=False))  # our own resume state (trusted, see README)
        self.phase1.initialize(model_space, engine)
        if self.out_dir is not None:
            self._remove_listener = add_unit_listener(engine, self.save_state)
        return model_space

    def _cleanup(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None

    def save_state(self) -> None:
        """Write :meth:`state_dict` to ``out_dir/bixnas_state.pt`` (atomically)."""
        if self.out_dir is not None:
            atomic_torch_save(self.state_dict(), Path(self.out_dir) / STATE_FILE)

    def _run(self) -> None:
        if self.phase1.result is None:
            self.phase1.run()
        else:
            _logger.info("Phase 1 already finished; candidates restored.")
        self.save_state()
        if self.phase1.result is None:
            return  # no budget for Phase 1 (logged)
        if self.phase2 is None:
            self._start_phase2()
        if not self.phase2.final_samples:
            self.phase2.run()
        self.save_state()
        if not self.phase2.final_samples:
            return  # the budget ran out during Phase 2 (logged); a resume with more budget continues
        if self.finalist_epochs and not self._check_finalists():
            return  # the budget ran out (logged); a resume with more budget continues
        if self.retrain_kwargs is not None:
            try:
                self._retrain()
            except NoBudget as err:
                _logger.warning("Retraining stops after %d seed(s): %s", len(self.retrained), err)
            try:
                self._report_headline()
            except NoBudget as err:
                _logger.warning("No trial reports the retrained IoU mean (it is in result.json): %s", err)
        self._finish()
        self.save_state()

    def _start_phase2(self) -> None:
        kwargs = dict(self.phase2_kwargs)
        if kwargs.get("inherit_weights") and kwargs.get("initial_weights") is None:
            kwargs["initial_weights"] = self.phase1.result.get("weights")  # the first stage starts from Phase 1
        self.phase2 = ProgressiveEvolution(
            candidates=self.phase1.candidates, **kwargs, training=self.training,
            out_dir=self._sub_dir("phase2"), seed=self._phase_seeds[1], unit_retries=self.unit_retries,
        )
        self.phase2.initialize(self.model_space, self.engine)
        if self._pending_phase2_state is not None:
            self.phase2.load_state_dict(self._pending_phase2_state)
            self._pending_phase2_state = None

    def _retrain(self) -> None:
        """Retrain the winner once per seed not retrained yet, all submitted together (NNI's
        ``trialConcurrency`` of them run at once); each seed is recorded and saved as soon as it ends."""
        winner = self.final_samples[0]
        kwargs = {k: v for k, v in self.retrain_kwargs.items() if k != "seeds"}
        settings = training_settings(self.model_space, self.training).replace(
            **{k: v for k, v in kwargs.items() if k in TRAINING_KEYS})
        kwargs = {k: v for k, v in kwargs.items() if k not in TRAINING_KEYS}
        seeds = self.retrain_kwargs["seeds"]
        done = {record.get("seed") for record in self.retrained}
        todo = [seed for seed in seeds if seed not in done]
        if done:
            _logger.info("Retraining: seed(s) %s already finished", sorted(s for s in seeds if s in done))
        # A single seed's trial also reports the headline (mean, std over the seeds) for the web UI; with
        # several, they run concurrently and none sees the others: _report_headline runs one more trial.
        headline = {"earlier_ious": []} if len(seeds) == 1 else {}
        jobs = []
        for seed in todo:
            out_dir = self._sub_dir(f"retrain/seed_{seed}")
            jobs.append((units.retrain_unit, winner, {**kwargs, "training": settings.replace(seed=seed).to_dict(),
                                                      "out_dir": out_dir, **headline}))

        def record(index: int, result: Dict[str, Any]) -> None:
            seed, out_dir = todo[index], jobs[index][2]["out_dir"]
            checkpoint = None if out_dir is None else str(Path(out_dir) / "checkpoints" / "best.ckpt")
            self.retrained.append({"seed": seed, **result, "checkpoint": checkpoint})
            self.retrained.sort(key=lambda r: seeds.index(r["seed"]) if r.get("seed") in seeds else len(seeds))
            _logger.info("Retrained the winner with seed %d: IoU %s", seed, result.get("default"))
            self.save_state()

        if jobs:
            _logger.info("Retraining the winner with seed(s) %s", todo)
            # on the space Phase 2 searched (narrowed)
            with UnitRunner(self.phase2.model_space, self.engine, retries=self.unit_retries) as runner:
                runner.run_many(jobs, on_result=record)
        summary = records.retrained_headline([r.get("default") for r in self.retrained])
        if summary:
            _logger.info("Retrained IoU %.4f ± %.4f over %d seed(s)", summary["retrained_iou_mean"],
                         summary["retrained_iou_std"], summary["retrained_seeds"])

    def _report_headline(self) -> None:
        """With several seeds, all retrained: one more trial (no training, ``unit: result``) whose ``default``
        is their IoU mean, labelled so, for the web UI (the seeds ran concurrently: none knew the others').
        One seed's trial reports the headline itself."""
        seeds = self.retrain_kwargs["seeds"]
        by_seed = {r.get("seed"): r for r in self.retrained}
        if self.headline_reported or len(seeds) < 2 or any(seed not in by_seed for seed in seeds):
            return
        ious = [by_seed[seed].get("default") for seed in seeds]
        complexity = self._final_complexity()
        with UnitRunner(self.phase2.model_space, self.engine, retries=self.unit_retries) as runner:
            runner.run(units.retrained_result_unit, self.final_samples[0], seeds=list(seeds), ious=ious,
                       **complexity)
        self.headline_reported = True
        self.save_state()

    def _finish(self) -> None:
        samples, order = self.final_samples, self._final_order()
        result: Dict[str, Any] = {
            "candidates": self.phase1.candidates,
            "final_samples": samples,
            "phase2_history": [{k: v for k, v in h.to_dict().items() if k != "skip_sets"} for h in self.phase2.history],
            "retrained": self.retrained,
            "split": records.split_record(training_settings(self.model_space, self.training).split_seed,
                                          self.phase1.result),
        }
        if self.finalist_epochs:
            result["finalists"] = {"epochs": self.finalist_epochs, "tolerance": self.finalist_tolerance,
                                   "phase2_order": self.phase2.final_samples, "order": order,
                                   "results": self.finalists}
        try:
            phase2_genes = self.phase2.final_genes()
            genes = [phase2_genes[i] for i in order]
            result["genes"] = [g.to_text() for g in genes]
        except TypeError:
            genes = []
        result.update(records.retrained_headline([r.get("default") for r in self.retrained],
                                                 [r.get("final_iou") for r in self.retrained]))
        result.update(self._final_complexity())
        self.result = result
        if self.out_dir is not None:
            records.write_result(Path(self.out_dir), result, genes[0].to_text() if genes else None)
        _logger.info("BiX-NAS finished: best sample %s", samples[0])

    def _final_complexity(self) -> Dict[str, int]:
        return records.final_complexity(self.retrained, self.phase2.model_space, self.final_samples[0])

    def summary_line(self) -> Optional[str]:
        """One line naming the found net (:func:`~nni_bixnas.strategy.records.summary_line` of :attr:`result`);
        ``None`` before the search finished. The nnictl bridge ends the dispatcher log with it."""
        return None if self.result is None else records.summary_line(self.result)

    # -- results and state -------------------------------------------------------------------------
    def list_models(self, sort: bool = True, limit: Optional[int] = None) -> Iterator[ExecutableModelSpace]:
        """The final architectures, frozen, with their Phase 2 IoU as metric (see
        :meth:`ProgressiveEvolution.list_models`); retrained IoUs are in :attr:`retrained` and :attr:`result`."""
        if self.phase2 is None:
            raise RuntimeError("Strategy has not been run.")
        return self.phase2.list_models(sort=sort, limit=limit)

    def state_dict(self) -> dict:
        return {
            "phase1": self.phase1.state_dict(),
            "phase2": None if self.phase2 is None else self.phase2.state_dict(),
            "retrained": copy.deepcopy(self.retrained),
            "finalists": copy.deepcopy(self.finalists),
            "final_samples": copy.deepcopy(self.final_samples),  # the winner first (read by experiment.export)
            "headline_reported": self.headline_reported,
            "random_state": self._random_state.get_state(),
            "phase_seeds": list(self._phase_seeds),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self._random_state.set_state(state_dict["random_state"])
        seeds = [int(v) for v in state_dict["phase_seeds"]]
        if seeds != self._phase_seeds and self.phase1._model_space is None:
            # With seed=None a fresh draw differs from the saved seeds, and an interrupted Phase 1 run
            # folder would refuse to resume under another seed: rebuild Phase 1 (not initialised yet).
            self._phase_seeds = seeds
            self.phase1 = self._build_phase1()
        self._phase_seeds = seeds
        self.phase1.load_state_dict(state_dict["phase1"])
        self.retrained = copy.deepcopy(list(state_dict.get("retrained", [])))
        self.finalists = copy.deepcopy(list(state_dict.get("finalists", [])))
        self.headline_reported = bool(state_dict.get("headline_reported", False))
        if state_dict.get("phase2") is not None:
            if self.phase2 is not None:
                self.phase2.load_state_dict(state_dict["phase2"])
            else:
                self._pending_phase2_state = state_dict["phase2"]
