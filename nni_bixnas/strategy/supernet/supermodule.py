"""The Phase 1 supernet: every skip choice of a space replaced by a learnable selection matrix.

:class:`SelectionMatrixFusion` stands in for a :class:`~nni_bixnas.space.SkipChoice`; :func:`to_supernet`
makes the substitution in a copy of a space. Trained by :func:`~nni_bixnas.strategy.units.selection_matrix_unit`
for :class:`~nni_bixnas.strategy.SelectionMatrix`.
"""

from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from nni_bixnas._checks import one_of, positive_number
from nni_bixnas.space.mutables import SkipChoice, SkipSubset, resize_to

__all__ = ["SelectionMatrixFusion", "VARIANTS", "to_supernet", "unique_weights", "check_tau", "check_variant"]

#: Forward variants of :class:`SelectionMatrixFusion`: the authors' code, or the paper's Eq. 1.
VARIANTS = ("code", "paper")


def check_tau(tau, name: str = "tau") -> float:
    return positive_number(name, tau, " (Gumbel-softmax temperature)")


def check_variant(variant) -> str:
    return one_of("variant", variant, VARIANTS)


def unique_weights(picks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-column weights ``1 / count`` of the input each column picks, and the number of distinct picks.

    Columns voting for the same input therefore count once in total. Both results are tensors on
    ``picks``' device, computed without a host synchronisation (``torch.unique`` and ``int()`` would
    stall the GPU once per choice per forward): ``count_j`` is the number of columns equal to column
    ``j``, and the distinct picks number ``sum_j 1 / count_j``.

    Examples
    --------
    >>> unique_weights(torch.tensor([2, 0, 2]))
    (tensor([0.5000, 1.0000, 0.5000]), tensor(2.))
    """
    counts = (picks.unsqueeze(0) == picks.unsqueeze(1)).sum(dim=1).to(torch.float32)
    weights = 1.0 / counts
    return weights, weights.sum().round()


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
        check_tau(tau)
        check_variant(variant)
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
        n_unique = n_unique.to(selected.dtype)
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


def to_supernet(space: nn.Module, *, tau: float = 1.0,
                variant: str = "code") -> Tuple[nn.Module, Dict[str, SelectionMatrixFusion]]:
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
            raise ValueError(f"two SkipChoice modules share the label {module.label!r}; "
                             "a selection matrix needs one per label")
        fusion = SelectionMatrixFusion(module, tau=tau, variant=variant)
        parent_name, _, child = name.rpartition(".")
        parent = supernet.get_submodule(parent_name) if parent_name else supernet
        parent._modules[child] = fusion  # works for plain modules, ModuleList and ModuleDict alike
        fusions[module.label] = fusion
    if not fusions:
        raise ValueError(f"{type(space).__name__} holds no SkipChoice module; "
                         "SelectionMatrix searches skip subsets only")
    return supernet, fusions
