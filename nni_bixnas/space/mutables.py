"""Custom NNI mutables for multi-scale skip choices.

:class:`SkipSubset` is the decision (a non-empty subset of a block's incoming streams);
:class:`SkipChoice` is the module a model space holds; its frozen form, :class:`SkipFusion`, is plain
PyTorch: resize every chosen stream bilinearly to the block's size, then take the element-wise mean.
"""

from __future__ import annotations

import itertools
from typing import Iterator, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from nni.mutable import (
    LabeledMutable,
    MutableSymbol,
    Sample,
    SampleMissingError,
    SampleValidationError,
    auto_label,
    ensure_frozen,
)
from nni.nas.nn.pytorch import MutableModule
from numpy.random import RandomState

__all__ = ["SkipSubset", "SkipChoice", "SkipFusion", "fuse", "resize_to"]


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``x`` resized to ``size`` (bilinear, ``align_corners=True``); unchanged if it already has that size."""
    size = tuple(size)
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    return x


def fuse(
    inputs: Sequence[Optional[torch.Tensor]], chosen: Sequence[int], size: Optional[Sequence[int]] = None
) -> torch.Tensor:
    """Resize ``inputs[i]`` for ``i`` in ``chosen`` to ``size`` (default: ``inputs[0]``'s) and average them.

    Resizing is bilinear with ``align_corners=True``, as in the authors' BiX-Net (``Phase2model.Block``).
    """
    if size is None:
        size = inputs[0].shape[-2:]
    picked = [resize_to(inputs[i], size) for i in chosen]
    if len(picked) == 1:
        return picked[0]
    # bit for bit torch.stack(picked).mean(0), which sums in this order and divides, without the stacked copy
    total = picked[0] + picked[1]
    for t in picked[2:]:
        total.add_(t)
    return total.div_(len(picked))


class SkipSubset(MutableSymbol):
    """A non-empty subset, of size at most ``max_k``, of a block's candidate incoming streams.

    The value is a sorted list of stream indices (index 0 is the block's sequential input). NNI's
    ``CategoricalMultiple(n_chosen=None)`` would also allow the empty set, which is not a network.

    Parameters
    ----------
    n_inputs
        Number of incoming streams ``N`` of the block.
    max_k
        Largest subset size; default ``N - 2`` (the paper's ``k in [1, N-2]``) over all ``N`` streams,
        and ``|candidates|`` when ``candidates`` narrows the choice (Algorithm 1 samples ``1 .. |C|``
        from a narrowed set; Phase 1 may narrow a block to up to ``N - 1`` streams). Never more than
        the number of candidates.
    candidates
        The streams this choice may pick from (default all ``N``). Narrowing the candidates (Phase 1's
        output) keeps the label, so samples stay comparable.
    stage, level
        Where the block sits (extraction stage and level). Strategies group choices by ``stage``.
    label
        The mutable's label (``enc_{it}_{lvl}`` / ``dec_{it}_{lvl}`` in BiO-Net++).
    """

    def __init__(
        self,
        n_inputs: int,
        max_k: Optional[int] = None,
        *,
        candidates: Optional[Sequence[int]] = None,
        stage: Optional[int] = None,
        level: Optional[int] = None,
        label: Optional[str] = None,
    ) -> None:
        if n_inputs < 1:
            raise ValueError(f"n_inputs must be >= 1, got {n_inputs}")
        narrowed = candidates is not None
        candidates = list(range(n_inputs)) if candidates is None else sorted(set(int(c) for c in candidates))
        if not candidates:
            raise ValueError(f"skip choice {label!r}: the candidate set is empty; a block needs at least one input")
        bad = [c for c in candidates if not 0 <= c < n_inputs]
        if bad:
            raise ValueError(f"skip choice {label!r}: candidate {bad[0]} is out of range 0..{n_inputs - 1}")
        if max_k is None:
            max_k = len(candidates) if narrowed else max(1, n_inputs - 2)
        if max_k < 1:
            raise ValueError(f"skip choice {label!r}: max_k must be >= 1, got {max_k}")
        self.label: str = auto_label(label)
        self.n_inputs = n_inputs
        self.candidates = candidates
        self.max_k = min(max_k, len(candidates))
        self.stage = stage
        self.level = level

    def extra_repr(self) -> str:
        return (
            f"{self.n_inputs}, max_k={self.max_k}, candidates={self.candidates}, "
            f"stage={self.stage}, level={self.level}, label={self.label!r}"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def equals(self, other) -> bool:
        return isinstance(other, SkipSubset) and self.extra_repr() == other.extra_repr()

    def leaf_mutables(self, is_leaf) -> Iterator[LabeledMutable]:
        yield self

    def check_contains(self, sample: Sample) -> Optional[SampleValidationError]:
        if self.label not in sample:
            return SampleMissingError(self.label, list(sample.keys()))
        value = sample[self.label]
        if not isinstance(value, (list, tuple)) or not value:
            return SampleValidationError(f"{self.label}: {value!r} is not a non-empty list of input indices")
        if len(set(value)) != len(value):
            return SampleValidationError(f"{self.label}: {value!r} repeats an index")
        if len(value) > self.max_k:
            return SampleValidationError(f"{self.label}: {value!r} has more than max_k={self.max_k} inputs")
        outside = [v for v in value if v not in self.candidates]
        if outside:
            return SampleValidationError(f"{self.label}: {outside[0]!r} is not among the candidates {self.candidates}")
        return None

    def freeze(self, sample: Sample) -> List[int]:
        self.validate(sample)
        return sorted(int(v) for v in sample[self.label])

    def subsets(self) -> Iterator[List[int]]:
        """Every admissible value, smallest subsets first."""
        for k in range(1, self.max_k + 1):
            for combo in itertools.combinations(self.candidates, k):
                yield list(combo)

    def default(self, memo: Optional[Sample] = None) -> List[int]:
        memo = {} if memo is None else memo
        err = self.check_contains(memo)
        if isinstance(err, SampleMissingError):
            memo[self.label] = self.candidates[: self.max_k]
        return self.freeze(memo)

    def random(self, memo: Optional[Sample] = None, random_state: Optional[RandomState] = None) -> List[int]:
        memo = {} if memo is None else memo
        random_state = random_state if random_state is not None else RandomState()
        err = self.check_contains(memo)
        if isinstance(err, SampleMissingError):
            k = int(random_state.randint(1, self.max_k + 1))
            memo[self.label] = sorted(int(i) for i in random_state.choice(self.candidates, k, replace=False))
        return self.freeze(memo)

    def grid(self, memo: Optional[Sample] = None, granularity: Optional[int] = None) -> Iterator[List[int]]:
        memo = {} if memo is None else memo
        err = self.check_contains(memo)
        if isinstance(err, SampleMissingError):
            for subset in self.subsets():
                memo[self.label] = subset
                yield self.freeze(memo)
            memo.pop(self.label)
        else:
            yield self.freeze(memo)

    def as_legacy_dict(self) -> dict:
        # Makes the dimension visible in the NNI web UI's search-space view.
        return {"_type": "choice", "_value": list(self.subsets())}


class SkipFusion(nn.Module):
    """Frozen skip choice: resize the ``chosen`` streams to the block's size and average them.

    Parameters
    ----------
    chosen
        Indices of the streams to fuse (index 0 is the sequential input).
    """

    def __init__(self, chosen: Sequence[int]) -> None:
        super().__init__()
        if not chosen:
            raise ValueError("SkipFusion needs at least one chosen input")
        self.chosen = sorted(int(c) for c in chosen)

    def extra_repr(self) -> str:
        return f"chosen={self.chosen}"

    def forward(self, inputs: Sequence[torch.Tensor], size: Optional[Sequence[int]] = None) -> torch.Tensor:
        return fuse(inputs, self.chosen, size)


class SkipChoice(MutableModule):
    """Model-space module for a :class:`SkipSubset` decision.

    Un-frozen, it fuses ``active`` (set by a strategy, e.g. one Phase 2 tail at a time) or, by default,
    the dry-run value of its choice. Frozen, it becomes a :class:`SkipFusion`.

    Parameters
    ----------
    n_inputs, max_k, candidates, stage, level, label
        See :class:`SkipSubset`.
    """

    def __init__(
        self,
        n_inputs: int,
        max_k: Optional[int] = None,
        *,
        candidates: Optional[Sequence[int]] = None,
        stage: Optional[int] = None,
        level: Optional[int] = None,
        label: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.choice = self.add_mutable(
            SkipSubset(n_inputs, max_k, candidates=candidates, stage=stage, level=level, label=label)
        )
        self._dry_run = ensure_frozen(self.choice)
        self.active: Optional[List[int]] = None

    @property
    def label(self) -> str:
        return self.choice.label

    @property
    def chosen(self) -> List[int]:
        """The streams the next forward reads."""
        return list(self.active) if self.active is not None else list(self._dry_run)

    @classmethod
    def create_fixed_module(cls, sample: dict, n_inputs: int, max_k: Optional[int] = None, **kwargs) -> SkipFusion:
        return SkipFusion(SkipSubset(n_inputs, max_k, **kwargs).freeze(sample))

    def freeze(self, sample: Sample) -> SkipFusion:
        return SkipFusion(self.choice.freeze(sample))

    def extra_repr(self) -> str:
        return self.choice.extra_repr()

    def forward(self, inputs: Sequence[torch.Tensor], size: Optional[Sequence[int]] = None) -> torch.Tensor:
        return fuse(inputs, self.chosen, size)
