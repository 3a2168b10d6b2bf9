"""Phase 1 of BiX-NAS: narrow every skip choice with a learnable selection matrix.

The supernet is a copy of the model space in which every :class:`~nni_bixnas.space.SkipChoice` is
replaced by a :class:`~nni_bixnas.strategy.supernet.supermodule.SelectionMatrixFusion`; its weights and all
matrices are trained jointly by the one training loop as one NNI engine job
(:func:`~nni_bixnas.strategy.units.selection_matrix_unit`), and each choice's candidate set is read from
its matrix.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict, Iterator, List, Mapping, Optional

import torch.nn as nn
from nni.mutable import Categorical, MutableAnnotation, Sample, SampleValidationError
from nni.nas.execution import ExecutionEngine
from nni.nas.space import ExecutableModelSpace
from nni.nas.strategy import Strategy
from numpy.random import RandomState

from nni_bixnas._checks import non_negative_int, optional_int, optional_path, positive_int
from nni_bixnas.space.mutables import SkipChoice, SkipSubset
from nni_bixnas.strategy import units
from nni_bixnas.strategy.runner import NoBudget, UnitRunner
from nni_bixnas.strategy.settings import check_training, named_settings, training_settings
from nni_bixnas.strategy.supernet.spaces import inner_module, narrow_space, space_name, space_reference
from nni_bixnas.strategy.supernet.supermodule import check_tau, check_variant
from nni_bixnas.utils import PathLike

_logger = logging.getLogger(__name__)

__all__ = ["SelectionMatrix"]


class SelectionMatrix(Strategy):
    """Phase 1 of BiX-NAS: narrow every skip choice to a candidate set with learnable selection matrices.

    Works on any model space whose decisions are :class:`~nni_bixnas.space.SkipSubset` mutables held by
    :class:`~nni_bixnas.space.SkipChoice` modules (BiO-Net++, or a space of your own). The strategy
    submits **one** job to the engine (:func:`~nni_bixnas.strategy.units.selection_matrix_unit`): a copy of
    the space in which every ``SkipChoice`` is a
    :class:`~nni_bixnas.strategy.supernet.supermodule.SelectionMatrixFusion` is trained for ``epochs``
    epochs, weights and matrices together by one Adam (lr 1e-3, inverse-time decay per epoch) in the one
    training loop, and
    the best-validation-IoU checkpoint is exported. Per choice the **candidate set** is the distinct
    column argmaxes of its matrix (index 0 = the sequential input), plus the sequential input in the
    ``'code'`` variant, whose forward always fuses it: what Phase 1 exports is what it trained.

    After :meth:`run`, :attr:`candidates` holds ``{label: [indices]}`` (what Phase 2 searches within),
    :attr:`probabilities` the softmax matrices (``N x k`` rows), and :attr:`result` the job's whole final
    result; :meth:`list_models` yields the narrowed architecture (every choice fusing its candidate set).
    The unit's folder holds ``candidates.json`` and a heat-map PNG of the matrices.

    Parameters
    ----------
    epochs
        Training epochs of the supernet (300 in the paper).
    tau
        Gumbel-softmax temperature (1.0 in the authors' code).
    tau_final
        ``None`` (default, the authors' constant ``tau``), or the temperature of the last epoch: ``tau`` is
        annealed geometrically from ``tau`` to ``tau_final`` (as GDAS and SNAS do), so that the late epochs
        train forwards close to the one-hot export
        (:func:`~nni_bixnas.strategy.supernet.tau_schedule.annealed_tau`).
    variant
        ``'code'`` (the authors' released Phase 1: soft Gumbel, sequential input always added) or
        ``'paper'`` (Eq. 1: straight-through one-hot columns, unique picks averaged). See
        :class:`~nni_bixnas.strategy.supernet.supermodule.SelectionMatrixFusion`.
    training
        Overrides of the training settings (``data``, ``batch_size``, ``lr``, ``patch_size``,
        ``val_fraction``, ``precision``, ``accelerator``, ``devices``); the rest come from the
        experiment's evaluator when it is a ``FunctionalEvaluator`` (e.g.
        :func:`nni_bixnas.training.make_evaluator`).
    out_dir
        The unit's run folder (checkpoints, history, ``candidates.json``, heat map); default
        ``$NNI_OUTPUT_DIR/phase1`` of the job, else a temporary folder.
    seed
        Seed of the supernet training. ``None`` takes ``training['seed']``, else the evaluator's ``seed``,
        else draws one from the strategy's own random state. The same seed gives the same candidates on the same
        machine.
    unit_retries
        How many times the Phase 1 job is submitted again after its trial failed (it resumes from its
        run folder).

    Examples
    --------
    >>> from nni.nas.experiment import NasExperiment
    >>> space = BiONetPlusPlus()
    >>> strategy = SelectionMatrix(epochs=300, seed=0)
    >>> NasExperiment(space, make_evaluator(data="monuseg:/data/MoNuSeg"), strategy).run()
    >>> strategy.candidates["dec_0_0"]
    [0, 2]

    See Also
    --------
    nni_bixnas.strategy.progressive_evolution.ProgressiveEvolution : Phase 2, which searches the candidates.
    """

    def __init__(
        self,
        *,
        epochs: int = 300,
        tau: float = 1.0,
        tau_final: Optional[float] = None,
        variant: str = "code",
        training: Optional[Mapping[str, Any]] = None,
        out_dir: Optional[PathLike] = None,
        seed: Optional[int] = None,
        unit_retries: int = 1,
    ) -> None:
        super().__init__()
        self.epochs, self.tau, self.variant = positive_int("epochs", epochs), check_tau(tau), check_variant(variant)
        self.tau_final = None if tau_final is None else check_tau(tau_final, "tau_final")
        self.training = check_training(training)
        self.seed = optional_int("seed", seed)
        self.out_dir = optional_path("out_dir", out_dir)
        self.unit_retries = non_negative_int("unit_retries", unit_retries)
        self._random_state = RandomState(seed)
        self._fixed: Dict[str, Any] = {}  # values of trivial (single-valued) categorical choices
        self._default_sample: Sample = {}
        self.result: Optional[Dict[str, Any]] = None
        self.candidates: Optional[Dict[str, List[int]]] = None
        self.probabilities: Optional[Dict[str, List[List[float]]]] = None

    def extra_repr(self) -> str:
        annealed = "" if self.tau_final is None else f", tau_final={self.tau_final}"
        return f"epochs={self.epochs}, tau={self.tau}{annealed}, variant={self.variant!r}, seed={self.seed}"

    # ----- lifecycle ----------------------------------------------------------------------------------
    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        skips, fixed, rejected = [], {}, []
        for label, mutable in model_space.simplify().items():
            if isinstance(mutable, SkipSubset):
                skips.append(label)
            elif isinstance(mutable, Categorical) and len(mutable.values) == 1:
                fixed[label] = mutable.values[0]  # a "choice" of one value is no decision
            elif isinstance(mutable, MutableAnnotation):
                continue
            else:
                rejected.append(f"{label!r} ({type(mutable).__name__})")
        inner, name = inner_module(model_space), space_name(model_space)
        if not skips:
            raise ValueError(f"the model space {name} has no skip choices (SkipSubset); "
                             "SelectionMatrix searches skip subsets only")
        if rejected:
            raise ValueError(
                f"the model space {name} has choices SelectionMatrix cannot search: {', '.join(rejected)}; it searches "
                "skip subsets (SkipSubset) only; fix the other choices (e.g. a LayerChoice of one candidate) "
                "or search them with another strategy"
            )
        if isinstance(inner, nn.Module):
            held = {m.label for m in inner.modules() if isinstance(m, SkipChoice)}
            loose = sorted(set(skips) - held)
            if loose:
                raise ValueError(
                    f"skip choice(s) {', '.join(loose)} of {name} are not held by a SkipChoice module; "
                    "SelectionMatrix replaces SkipChoice modules by selection matrices"
                )
        space_reference(model_space)  # fails early if the space cannot be rebuilt inside the job
        training_settings(model_space, self.training, who="SelectionMatrix")  # no data: an error before training
        self._fixed = fixed
        self._default_sample = {}
        model_space.default(memo=self._default_sample)
        _logger.info("SelectionMatrix: %d skip choices to narrow: %s", len(skips), ", ".join(skips))
        return model_space

    def _run(self) -> None:
        if self.result is not None:
            _logger.info("Phase 1 result restored from the state dict; not training again.")
            return
        seed = self.seed if self.seed is not None else named_settings(self.model_space, self.training).get("seed")
        if seed is None:
            seed = int(self._random_state.randint(2**31 - 1))
        settings = training_settings(self.model_space, self.training).replace(seed=int(seed))
        _logger.info("Phase 1: training the selection-matrix supernet for %d epochs (seed %d, variant %r).",
                     self.epochs, seed, self.variant)
        try:
            with UnitRunner(self.model_space, self.engine, retries=self.unit_retries) as runner:
                result = runner.run(
                    units.selection_matrix_unit, self._default_sample, space=space_reference(self.model_space),
                    epochs=self.epochs, training=settings.to_dict(), out_dir=self.out_dir, tau=self.tau,
                    variant=self.variant, **({} if self.tau_final is None else {"tau_final": self.tau_final}),
                )
        except NoBudget:
            _logger.warning("No budget left for the Phase 1 job; SelectionMatrix ends without a result.")
            return
        self._accept(result)

    def _accept(self, result: Dict[str, Any]) -> None:
        candidates = result.get("candidates")
        if not isinstance(candidates, dict) or not candidates:
            raise ValueError(f"the Phase 1 result has no 'candidates': {sorted(result)}")
        self.result = dict(result)
        self.candidates = {label: sorted(int(i) for i in value) for label, value in candidates.items()}
        self.probabilities = {label: [list(map(float, row)) for row in rows]
                              for label, rows in result.get("probabilities", {}).items()}
        _logger.info("Phase 1 done: best validation IoU %s at epoch %s; candidates %s; heat map %s",
                     result.get("default"), result.get("best_epoch"), self.candidates, result.get("heatmap"))

    # ----- results ------------------------------------------------------------------------------------
    @property
    def sample(self) -> Sample:
        """The narrowed architecture: every skip choice fusing its whole candidate set."""
        if self.candidates is None:
            raise RuntimeError("SelectionMatrix has no result yet; run it (or load a state dict with one) first")
        return {**self._fixed, **self.candidates}

    def list_models(self, sort: bool = True, limit: Optional[int] = None) -> Iterator[ExecutableModelSpace]:
        """The narrowed architecture as a frozen model whose metric is the supernet's best validation IoU.

        Parameters
        ----------
        sort, limit
            As in :meth:`nni.nas.strategy.Strategy.list_models` (there is one model).
        """
        if limit is not None and limit < 1:
            return
        try:
            model = self.model_space.freeze(self.sample)
        except SampleValidationError:  # a candidate set larger than the full space's max_k
            model = narrow_space(self.model_space, self.candidates).freeze(self.sample)
        model.metrics.final = self.result.get("default")
        yield model

    def state_dict(self) -> dict:
        return {"random_state": self._random_state.get_state(), "result": copy.deepcopy(self.result)}

    def load_state_dict(self, state_dict: dict) -> None:
        self._random_state.set_state(state_dict["random_state"])
        if state_dict.get("result") is not None:
            self._accept(state_dict["result"])
