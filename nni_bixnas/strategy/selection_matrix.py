"""Phase 1 of BiX-NAS: narrow every skip choice with a learnable selection matrix.

The supernet is a copy of the model space in which every :class:`~nni_bixnas.space.SkipChoice` is
replaced by a :class:`SelectionMatrixFusion`; its weights and all matrices are trained jointly by the
one training loop (:func:`nni_bixnas.training.fit`) as one NNI engine job
(:func:`selection_matrix_unit`), and each choice's candidate set is read from its matrix.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import nni
import torch
import torch.nn as nn
import torch.nn.functional as F
from numpy.random import RandomState

from nni.mutable import Categorical, MutableAnnotation, Sample, SampleValidationError
from nni.nas.execution import ExecutionEngine
from nni.nas.space import ExecutableModelSpace
from nni.nas.strategy import Strategy

from nni_bixnas.space.mutables import SkipChoice, SkipSubset, resize_to
from nni_bixnas.strategy.units import (
    TRAINING_KEYS,
    UnitRunner,
    build_space,
    inner_module,
    narrow_space,
    require_data,
    space_reference,
    training_settings,
)
from nni_bixnas.utils import PathLike, atomic_torch_save, atomic_write, seed_everything

_logger = logging.getLogger(__name__)

__all__ = ["SelectionMatrix", "SelectionMatrixFusion", "VARIANTS", "selection_matrix_unit", "to_supernet"]

#: Forward variants of :class:`SelectionMatrixFusion`: the authors' code, or the paper's Eq. 1.
VARIANTS = ("code", "paper")

CANDIDATES_FILE = "candidates.json"
HEATMAP_FILE = "selection_matrices.png"
WEIGHTS_FILE = "supernet.pt"


def unique_weights(picks: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """Per-column weights ``1 / count`` of the input each column picks, and the number of distinct picks.

    Columns voting for the same input therefore count once in total.

    Examples
    --------
    >>> unique_weights(torch.tensor([2, 0, 2]))
    (tensor([0.5000, 1.0000, 0.5000]), 2)
    """
    _, inverse, counts = torch.unique(picks, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].to(torch.float32), int(counts.numel())


class SelectionMatrixFusion(nn.Module):
    """Differentiable stand-in for a :class:`~nni_bixnas.space.SkipChoice`: a learnable selection matrix.

    The matrix ``M`` has one row per input the matrix chooses among (its *rows*, see below) and
    ``k = max_k`` columns (``N - 2`` by default); it is initialised with ``xavier_uniform_``. A forward
    pass

    1. resizes every row input to the block's size (bilinear, ``align_corners=True``: the convention
       of :func:`~nni_bixnas.space.fuse`) and stacks them, ``(..., n_rows)``;
    2. draws ``score = gumbel_softmax(M, tau, hard, dim=0)`` (each column a distribution over the rows);
    3. selects ``sel = stack @ score``, ``(..., k)``;
    4. weights column ``j`` by ``1 / count`` of its pick, so columns voting for the same input count once;
    5. averages: ``variant='code'`` gives ``(sum_j w_j sel_j + x) / (n_unique + 1)``, ``'paper'`` gives
       ``sum_j w_j sel_j / n_unique``.

    Two variants:

    ``'code'`` (default) is the authors' released Phase 1 (``Phase1model.py``): soft Gumbel samples
    (``hard=False``), uniqueness from the **noise-free** column argmax of ``M``, and the sequential
    input ``x`` (index 0) **always added** on top of the selections, hence the ``+ 1`` in the divisor.
    Since ``x`` is always fused, the rows are the *other* candidates only (the authors' matrix also
    has a row for ``x``, so a column picking it counted ``x`` twice), and :meth:`export` returns
    ``{0} | picks``: exactly the inputs the forward fuses when the matrix is confident.

    ``'paper'`` is Eq. 1 of the paper: straight-through one-hot columns (``hard=True``) over all
    candidates and the unique picks averaged, with no forced ``x``. Uniqueness is counted on the
    sampled one-hot columns (so the forward value is exactly the mean of the distinct inputs picked
    this pass); with a confident matrix these coincide with the noise-free argmax that
    :meth:`export` returns.

    In both variants the Gumbel noise is drawn in ``eval()`` too: the paper's "unified forward behaviour
    during training and inference" (Phase 1 validation is therefore stochastic, as in the authors' code).

    Input order: index 0 is the block's sequential input and the other indices follow the model
    space, i.e. the project's one gene convention. The authors' Phase 1 stacks ``skip + [x]`` (``x``
    last) but their Phase 2 reads ``[x] + skip``, and they export Phase 1 argmaxes without remapping;
    keeping the space's order avoids that mismatch, so exported indices need no remap.

    Parameters
    ----------
    choice
        The :class:`SkipChoice` (or its :class:`SkipSubset`) to replace; its label, ``n_inputs``,
        ``candidates``, ``max_k``, ``stage`` and ``level`` are kept.
    tau
        Gumbel-softmax temperature (the authors use PyTorch's default 1.0).
    variant
        ``'code'`` or ``'paper'`` (see above).
    """

    def __init__(self, choice: SkipChoice | SkipSubset, tau: float = 1.0, variant: str = "code") -> None:
        super().__init__()
        subset = choice.choice if isinstance(choice, SkipChoice) else choice
        if not isinstance(subset, SkipSubset):
            raise TypeError(f"SelectionMatrixFusion replaces a SkipChoice or SkipSubset, got {type(choice).__name__}")
        _check_tau(tau)
        _check_variant(variant)
        self.label: str = subset.label
        self.n_inputs = subset.n_inputs
        self.candidates: List[int] = list(subset.candidates)
        self.k = subset.max_k
        self.stage, self.level = subset.stage, subset.level
        self.tau = float(tau)
        self.variant = variant
        #: The sequential input is fused by every forward ('code' with 0 among the candidates).
        self.always_sequential = variant == "code" and 0 in self.candidates
        #: The inputs the matrix rows stand for (gene indices).
        self.rows: List[int] = [c for c in self.candidates if not (self.always_sequential and c == 0)]
        self.matrix = nn.Parameter(torch.empty(len(self.rows), self.k))
        if self.rows:
            nn.init.xavier_uniform_(self.matrix)

    @property
    def chosen(self) -> List[int]:
        """The inputs a forward reads: all candidates (the supernet is dense over them). Reachability
        helpers of the model spaces read this."""
        return list(self.candidates)

    def extra_repr(self) -> str:
        return (f"{self.label!r}, candidates={self.candidates}, rows={self.rows}, k={self.k}, tau={self.tau}, "
                f"variant={self.variant!r}")

    def forward(self, inputs: Sequence[torch.Tensor], size: Optional[Sequence[int]] = None) -> torch.Tensor:
        size = tuple(inputs[0].shape[-2:] if size is None else size)
        if not self.rows:  # 'code' narrowed to the sequential input alone
            return resize_to(inputs[0], size)
        stack = torch.stack([resize_to(inputs[i], size) for i in self.rows], dim=-1)  # (..., n_rows)
        score = F.gumbel_softmax(self.matrix, tau=self.tau, hard=self.variant == "paper", dim=0)  # (n_rows, k)
        selected = stack @ score.to(stack.dtype)  # (..., k)
        picks = (self.matrix if self.variant == "code" else score).detach().argmax(dim=0)
        weights, n_unique = unique_weights(picks)
        fused = selected @ weights.to(device=selected.device, dtype=selected.dtype)
        if self.always_sequential:
            return (fused + resize_to(inputs[0], size)) / (n_unique + 1)
        return fused / n_unique

    @torch.no_grad()
    def probabilities(self) -> torch.Tensor:
        """Noise-free ``softmax(M, dim=0)`` as an ``N x k`` matrix (rows of inputs the matrix does not
        choose among are 0; in ``'code'`` that includes the always-fused sequential input)."""
        full = torch.zeros(self.n_inputs, self.k)
        if self.rows:
            full[self.rows] = F.softmax(self.matrix.detach().float().cpu(), dim=0)
        return full

    @torch.no_grad()
    def export(self) -> List[int]:
        """The candidate set the forward fuses: the distinct column argmaxes of ``M`` (gene indices),
        plus the sequential input 0 in ``'code'``; sorted."""
        picks = {self.rows[i] for i in self.matrix.detach().argmax(dim=0).tolist()} if self.rows else set()
        return sorted(picks | ({0} if self.always_sequential else set()))


def to_supernet(space: nn.Module, *, tau: float = 1.0, variant: str = "code") -> Tuple[nn.Module, Dict[str, SelectionMatrixFusion]]:
    """A deep copy of ``space`` with every :class:`SkipChoice` replaced by a :class:`SelectionMatrixFusion`.

    Returns
    -------
    (supernet, fusions)
        The copy and its fusion modules by label.

    Raises
    ------
    ValueError
        If the space holds no :class:`SkipChoice`, or two of them share a label.
    """
    supernet = copy.deepcopy(space)
    fusions: Dict[str, SelectionMatrixFusion] = {}
    for name, module in list(supernet.named_modules()):
        if not isinstance(module, SkipChoice):
            continue
        if module.label in fusions:
            raise ValueError(f"two SkipChoice modules share the label {module.label!r}; a selection matrix needs one per label")
        fusion = SelectionMatrixFusion(module, tau=tau, variant=variant)
        parent_name, _, child = name.rpartition(".")
        parent = supernet.get_submodule(parent_name) if parent_name else supernet
        parent._modules[child] = fusion  # works for plain modules, ModuleList and ModuleDict alike
        fusions[module.label] = fusion
    if not fusions:
        raise ValueError(f"{type(space).__name__} holds no SkipChoice module; SelectionMatrix searches skip subsets only")
    return supernet, fusions


def _unit_out_dir(out_dir: Optional[str]) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    nni_output = os.environ.get("NNI_OUTPUT_DIR")
    if nni_output:
        return Path(nni_output) / "phase1"
    return Path(tempfile.mkdtemp(prefix="bixnas-phase1-"))


def format_matrix(rows: Sequence[Sequence[float]]) -> str:
    """Rows of probabilities as aligned text, one line per input (index first)."""
    return "\n".join(f"  {i}: " + " ".join(f"{v:.3f}" for v in row) for i, row in enumerate(rows))


def selection_matrix_unit(
    model: nn.Module,
    *,
    space: Dict[str, Any],
    epochs: int,
    training: Optional[Dict[str, Any]] = None,
    out_dir: Optional[str] = None,
    tau: float = 1.0,
    variant: str = "code",
    seed: int = 0,
    progress: bool = False,
) -> Dict[str, Any]:
    """Train the selection-matrix supernet of ``space`` and report the candidate sets (one engine job).

    The model space is rebuilt from ``space`` (:func:`~nni_bixnas.strategy.units.space_reference`),
    turned into a supernet by :func:`to_supernet` and trained by :func:`nni_bixnas.training.fit`: one Adam
    over the weights and the matrices, inverse-time decay per epoch, the best-validation-IoU checkpoint
    kept. Every epoch's validation IoU goes to NNI as an intermediate result. The best checkpoint is then
    loaded and exported into ``out_dir``: ``candidates.json`` and ``selection_matrices.png`` (one panel of
    softmax probabilities per choice), and the final result is reported with ``nni.report_final_result``.

    Parameters
    ----------
    model
        The frozen model the engine passes in (the space's default sample); unused: the unit trains the
        supernet of the whole space.
    space
        ``{'symbol': class, 'kwargs': dict}`` of the model space.
    epochs
        Training epochs.
    training
        Settings of :func:`~nni_bixnas.training.fit` (keys of
        :data:`~nni_bixnas.strategy.units.TRAINING_KEYS` except ``seed``).
    out_dir
        Run folder; default ``$NNI_OUTPUT_DIR/phase1`` in a trial, else a new temporary folder. A
        folder holding an interrupted run of the same configuration is resumed.
    tau, variant
        See :class:`SelectionMatrixFusion`.
    seed
        Seeds the supernet's initialisation (weights and matrices), the data and the training RNG.
    progress
        Show Lightning's progress bar.

    Returns
    -------
    dict
        The reported final result: ``{'default': best validation IoU, 'dice', 'best_epoch',
        'candidates': {label: [indices]}, 'probabilities': {label: N x k rows}, 'phase': 1,
        'out_dir', 'heatmap', 'weights'}``; ``weights`` is ``supernet.pt``, the best checkpoint's weights
        without the selection matrices (a state dict Phase 2 can start from).
    """
    from nni_bixnas.strategy._plots import write_heatmaps
    from nni_bixnas.training import NNIReporter, fit, nni_tensorboard_dir

    _check_epochs(epochs)
    _check_tau(tau)
    _check_variant(variant)
    training = dict(training or {})
    if "seed" in training:
        raise ValueError("pass the unit's seed as `seed`, not inside `training`")
    unknown = sorted(set(training) - set(TRAINING_KEYS))
    if unknown:
        raise ValueError(f"unknown training setting(s) {', '.join(unknown)}; expected some of {', '.join(TRAINING_KEYS)}")
    run_dir = _unit_out_dir(out_dir)

    seed_everything(seed)  # the supernet's initial weights and matrices
    supernet, fusions = to_supernet(build_space(space), tau=tau, variant=variant)
    _logger.info("Phase 1 supernet: %d selection matrices (%s), %d epochs, out_dir %s", len(fusions), variant, epochs, run_dir)
    data = require_data(training, "selection_matrix_unit")
    training.pop("data")
    result = fit(
        supernet,
        data,
        max_epochs=epochs,
        out_dir=run_dir,
        seed=seed,
        callbacks=[NNIReporter()],
        progress=progress,
        tensorboard_dir=nni_tensorboard_dir(),
        **training,
    )
    checkpoint_path = result.best_checkpoint if result.best_checkpoint.is_file() else result.last_checkpoint
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)  # our own file
    state = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    supernet.load_state_dict(state)
    weights = run_dir / WEIGHTS_FILE  # the trained weights without the matrices: Phase 2 may start from them
    atomic_torch_save({k: v for k, v in supernet.state_dict().items() if not k.endswith(".matrix")}, weights)

    candidates = {label: fusion.export() for label, fusion in fusions.items()}
    probabilities = {label: fusion.probabilities().tolist() for label, fusion in fusions.items()}
    for label in fusions:
        _logger.info("Selection matrix %s -> candidates %s; softmax over inputs (rows) per selection (columns):\n%s",
                     label, candidates[label], format_matrix(probabilities[label]))
    best_iou = float("nan") if result.best_iou is None else float(result.best_iou)
    heatmap = run_dir / HEATMAP_FILE
    write_heatmaps(heatmap, {f"{label} {candidates[label]}": rows for label, rows in probabilities.items()},
                   title=f"Phase 1 selection matrices ({variant}, epoch {result.best_epoch}, val IoU {best_iou:.4f})")
    final = {
        "default": best_iou,
        "dice": None if result.best_dice is None else float(result.best_dice),
        "best_epoch": int(result.best_epoch),
        "candidates": candidates,
        "probabilities": probabilities,
        "phase": 1,
        "out_dir": str(run_dir),
        "heatmap": str(heatmap),
        "weights": str(weights),
    }
    with atomic_write(run_dir / CANDIDATES_FILE) as handle:
        json.dump({**final, "variant": variant, "tau": tau, "seed": seed, "epochs": epochs}, handle, indent=2)
    nni.report_final_result(final)
    return final


def _check_epochs(epochs: Any) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")


def _check_tau(tau: Any) -> None:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau (Gumbel-softmax temperature) must be a finite number > 0, got {tau!r}")


def _check_variant(variant: Any) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(map(repr, VARIANTS))}")


class SelectionMatrix(Strategy):
    """Phase 1 of BiX-NAS: narrow every skip choice to a candidate set with learnable selection matrices.

    Works on any model space whose decisions are :class:`~nni_bixnas.space.SkipSubset` mutables held by
    :class:`~nni_bixnas.space.SkipChoice` modules (BiO-Net++, or a space of your own). The strategy
    submits **one** job to the engine (:func:`selection_matrix_unit`): a copy of the space in which every
    ``SkipChoice`` is a :class:`SelectionMatrixFusion` is trained for ``epochs`` epochs, weights and
    matrices together by one Adam (lr 1e-3, inverse-time decay per epoch) in the one training loop, and
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
    variant
        ``'code'`` (the authors' released Phase 1: soft Gumbel, sequential input always added) or
        ``'paper'`` (Eq. 1: straight-through one-hot columns, unique picks averaged). See
        :class:`SelectionMatrixFusion`.
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
        variant: str = "code",
        training: Optional[Mapping[str, Any]] = None,
        out_dir: Optional[PathLike] = None,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        _check_epochs(epochs)
        _check_tau(tau)
        _check_variant(variant)
        if training is not None and not isinstance(training, Mapping):
            raise ValueError(f"training must be a dict of training settings, got {type(training).__name__}")
        training = dict(training or {})
        unknown = sorted(set(training) - set(TRAINING_KEYS))
        if unknown:
            raise ValueError(f"unknown training setting(s) {', '.join(unknown)}; expected some of {', '.join(TRAINING_KEYS)}")
        for name, value in [("seed", seed), ("training['seed']", training.get("seed"))]:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be an int or None, got {value!r}")
        if out_dir is not None and not isinstance(out_dir, (str, os.PathLike)):
            raise ValueError(f"out_dir must be a path or None, got {out_dir!r}")
        self.epochs = epochs
        self.tau = float(tau)
        self.variant = variant
        self.training = training
        self.out_dir = None if out_dir is None else str(out_dir)
        self.seed = seed
        self._random_state = RandomState(seed)
        self._fixed: Dict[str, Any] = {}  # values of trivial (single-valued) categorical choices
        self._default_sample: Sample = {}
        self.result: Optional[Dict[str, Any]] = None
        self.candidates: Optional[Dict[str, List[int]]] = None
        self.probabilities: Optional[Dict[str, List[List[float]]]] = None

    def extra_repr(self) -> str:
        return f"epochs={self.epochs}, tau={self.tau}, variant={self.variant!r}, seed={self.seed}"

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
        inner = inner_module(model_space)
        name = type(inner if isinstance(inner, nn.Module) else model_space).__name__
        if not skips:
            raise ValueError(f"the model space {name} has no skip choices (SkipSubset); SelectionMatrix searches skip subsets only")
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
        require_data(training_settings(model_space, self.training), "SelectionMatrix")
        self._fixed = fixed
        self._default_sample = {}
        model_space.default(memo=self._default_sample)
        _logger.info("SelectionMatrix: %d skip choices to narrow: %s", len(skips), ", ".join(skips))
        return model_space

    def _run(self) -> None:
        if self.result is not None:
            _logger.info("Phase 1 result restored from the state dict; not training again.")
            return
        if not self.wait_for_resource():
            _logger.warning("No budget left for the Phase 1 job; SelectionMatrix ends without a result.")
            return
        settings = training_settings(self.model_space, self.training)
        seed = self.seed if self.seed is not None else settings.get("seed")
        if seed is None:
            seed = int(self._random_state.randint(2**31 - 1))
        settings.pop("seed", None)
        _logger.info("Phase 1: training the selection-matrix supernet for %d epochs (seed %d, variant %r).",
                     self.epochs, seed, self.variant)
        runner = UnitRunner(self.model_space, self.engine)
        try:
            result = runner.run(
                selection_matrix_unit,
                sample=self._default_sample,
                space=space_reference(self.model_space),
                epochs=self.epochs,
                training=settings,
                out_dir=self.out_dir,
                tau=self.tau,
                variant=self.variant,
                seed=int(seed),
            )
        finally:
            runner.close()
        self._accept(result)

    def _accept(self, result: Dict[str, Any]) -> None:
        candidates = result.get("candidates")
        if not isinstance(candidates, dict) or not candidates:
            raise ValueError(f"the Phase 1 result has no 'candidates': {sorted(result)}")
        self.result = dict(result)
        self.candidates = {label: sorted(int(i) for i in value) for label, value in candidates.items()}
        self.probabilities = {label: [list(map(float, row)) for row in rows] for label, rows in result.get("probabilities", {}).items()}
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
