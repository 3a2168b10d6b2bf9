"""Drawing a Phase 2 stage's population: skip sets applied to every parent, distinct in what they compute."""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from numpy.random import RandomState

__all__ = ["SkipSetSampler"]

_logger = logging.getLogger(__name__)

Sample = Dict[str, List[int]]


class SkipSetSampler:
    """The authors' skip-set sampler, with members de-duplicated by the network they compute.

    Parameters
    ----------
    pool
        ``{label: candidate indices}`` of every searched block.
    max_k
        ``{label: most inputs a block may fuse}``.
    blocks
        ``{stage: labels}`` of the blocks of every stage.
    last_stage
        The stage searched first (the last extraction stage).
    samples
        Skip sets to draw per stage.
    keep_sequential_last
        In ``last_stage``, always keep the sequential input 0 (the released sampler).
    max_redraws
        Draws in a row without a new member after which every distinct net counts as found.
    effective
        ``effective(sample) -> sample`` of the space's live blocks (``None``: the whole sample).
    """

    def __init__(self, pool: Mapping[str, Sequence[int]], max_k: Mapping[str, int], blocks: Mapping[int, Sequence[str]],
                 last_stage: int, *, samples: int, keep_sequential_last: bool, max_redraws: int,
                 effective: Optional[Callable[[Sample], Sample]] = None) -> None:
        self.pool, self.max_k = {k: list(v) for k, v in pool.items()}, dict(max_k)
        self.blocks = {int(t): list(v) for t, v in blocks.items()}
        self.last_stage = last_stage
        self.samples, self.keep_sequential_last, self.max_redraws = samples, keep_sequential_last, max_redraws
        self.effective = effective

    @classmethod
    def from_skips(cls, skips: Mapping[str, Any], **kwargs) -> "SkipSetSampler":
        """The sampler of a space's staged skip choices (``{label: SkipSubset}``); ``kwargs`` as the constructor's."""
        stages = sorted({int(m.stage) for m in skips.values()}, reverse=True)
        blocks = {t: sorted(label for label, m in skips.items() if m.stage == t) for t in stages}
        return cls({label: m.candidates for label, m in skips.items()}, {label: m.max_k for label, m in skips.items()},
                   blocks, stages[0], **kwargs)

    def _keeps_sequential(self, label: str, last: bool) -> bool:
        return last and self.keep_sequential_last and 0 in self.pool[label]

    def sample_block(self, label: str, last: bool, rs: RandomState) -> List[int]:
        """One block's inputs: ``n ~ U{1..max_k}``, then ``n`` distinct candidates (the authors' draw)."""
        pool, k_max = self.pool[label], self.max_k[label]
        if self._keeps_sequential(label, last):
            rest = [c for c in pool if c != 0]
            n = int(rs.randint(0, min(k_max - 1, len(rest)) + 1))
            return sorted([0] + [int(c) for c in rs.choice(rest, n, replace=False)]) if n else [0]
        n = int(rs.randint(1, k_max + 1))
        return sorted(int(c) for c in rs.choice(pool, n, replace=False))

    def n_values(self, label: str, last: bool) -> int:
        """How many values the sampler can give ``label`` (1: the block is fixed, never drawn)."""
        pool, k_max = self.pool[label], self.max_k[label]
        if self._keeps_sequential(label, last):
            return sum(math.comb(len(pool) - 1, n) for n in range(0, k_max))
        return sum(math.comb(len(pool), n) for n in range(1, k_max + 1))

    def effective_key(self, sample: Mapping[str, Sequence[int]]) -> Tuple:
        """What ``sample`` computes, hashable: the choices of its live blocks."""
        effective = self.effective(sample) if self.effective is not None else sample
        return tuple(sorted((label, tuple(sorted(int(i) for i in v))) for label, v in effective.items()))

    def sample_population(self, stage: int, parents: Sequence[Sample],
                          rs: RandomState) -> Tuple[List[Sample], List[Sample]]:
        """Skip sets for ``stage`` and the members they make with ``parents``, distinct in what they compute.

        A skip set is drawn as the authors do and applied to every parent; a member whose effective net
        (live blocks' choices) equals a parent's or another member's is dropped, and a skip set that adds
        no new member is redrawn. Blocks with a single possible value are fixed. Drawing stops at
        ``samples`` skip sets, or after ``max_redraws`` draws in a row without a new member: then every
        distinct net was found, and all of them are trained. A parent none of whose members is new (e.g.
        all its blocks of this stage are dead) stays a candidate: it is a member itself, with the first
        skip set applied (the same effective net).

        Returns
        -------
        (skip_sets, members)
            Members parent-major, as the authors order them.
        """
        last = stage == self.last_stage
        labels = self.blocks[stage]
        fixed = {label: self.sample_block(label, last, rs) for label in labels if self.n_values(label, last) == 1}
        free = [label for label in labels if label not in fixed]
        seen = {self.effective_key(parent) for parent in parents}
        skip_sets: List[Sample] = []
        drawn: List[Tuple[int, Sample]] = []  # (parent index, member)
        misses = 0
        while free and len(skip_sets) < self.samples and misses <= self.max_redraws:
            skip_set = {**fixed, **{label: self.sample_block(label, last, rs) for label in free}}
            new = []
            for p, parent in enumerate(parents):
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
        if skip_sets:
            fertile = {p for p, _ in drawn}
            drawn.extend((p, {**parent, **skip_sets[0]}) for p, parent in enumerate(parents) if p not in fertile)
        members = [member for _, member in sorted(drawn, key=lambda pm: pm[0])]
        if len(skip_sets) < self.samples:
            _logger.info("[stage %d] only %d distinct effective net(s) differ from the parents (samples=%d, %d fixed "
                         "block(s)); training all of them", stage, len(members), self.samples, len(fixed))
        return skip_sets, members
