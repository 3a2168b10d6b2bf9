"""All members' tails of a BiO-Net++ Phase 2 step in one batched forward.

The members of a population share the head (stages before ``stage``) and differ in their tails. Instead of
one tail forward per member, the tails run once on a batch of ``B * M`` images (``M`` members), laid out
b-major as ``(B, M, C, H, W)``:

- convolutions, pooling and resizing see ``(B * M, C, H, W)`` (shared weights, per-image work);
- a block fuses its inputs with per-member weights (``1 / k`` on the member's ``k`` chosen streams), the
  same mean as :class:`~nni_bixnas.space.SkipFusion`;
- BatchNorm normalises every member with its own batch statistics ("ghost" BatchNorm): the tensor is
  viewed as ``(B, M * C, H, W)``, so the native kernel computes statistics per (member, channel) over
  ``(B, H, W)``, exactly what one member's forward computes over its ``B`` images. Running statistics are
  then updated member after member in member order, as the low-memory step's sequential tails do;
- a block that is not live in a member (its output never reaches the head) passes that member's
  sequential input through, as the model's own forward does, and only the members it is live in compute it.

So every member's logits, loss and gradients are those of its own tail (``tests/test_batched_tails.py``
checks them against :func:`~nni_bixnas.strategy.supernet.fair_step.fair_step` ``step='low_memory'`` in float64),
at the memory of keeping every tail's graph alive until one backward (``step='plain'``).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Set

import torch
import torch.nn as nn
import torch.nn.functional as F

from .gene import parse_label
from .mutables import resize_to

__all__ = ["forward_tails"]


class _Batch:
    """A tensor per member, ``(B, M, C, H, W)``; ``M == 1`` means one tensor shared by every member."""

    __slots__ = ("data",)

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    @classmethod
    def shared(cls, x: torch.Tensor) -> "_Batch":
        return cls(x.unsqueeze(1))

    @property
    def members(self) -> int:
        return self.data.shape[1]

    @property
    def size(self):
        return tuple(self.data.shape[-2:])

    def flat(self) -> torch.Tensor:
        b, m = self.data.shape[:2]
        return self.data.reshape(b * m, *self.data.shape[2:])

    def map(self, fn) -> "_Batch":
        """``fn`` applied to every image (a function of ``(N, C, H, W)`` tensors, per image)."""
        b, m = self.data.shape[:2]
        out = fn(self.flat())
        return _Batch(out.reshape(b, m, *out.shape[1:]))

    def take(self, index: Optional[torch.Tensor]) -> "_Batch":
        """The members at ``index`` (a shared tensor stays shared)."""
        if index is None or self.members == 1:
            return self
        return _Batch(self.data.index_select(1, index))

    def member(self, i: int) -> torch.Tensor:
        return self.data[:, 0 if self.members == 1 else i]


class _RunningStats:
    """BatchNorm running-statistics updates, applied after the forward in the order sequential tails make them:
    member after member, each member's in forward order (the bridge's BatchNorms serve several stages)."""

    def __init__(self) -> None:
        self.updates: List[tuple] = []

    def record(self, bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, var: torch.Tensor,
               users: Sequence[int]) -> None:
        """Per-slot batch ``mean`` and unbiased ``var`` (``slots * C``) of ``bn``'s input for members ``users``."""
        slots = mean.numel() // bn.num_features
        mean, var = mean.view(slots, -1), var.view(slots, -1)
        self.updates.append((bn, {u: 0 if slots == 1 else j for j, u in enumerate(users)}, mean, var))

    @torch.no_grad()
    def apply(self, members: int) -> None:
        for member in range(members):
            for bn, slot, mean, var in self.updates:
                if member not in slot:
                    continue
                bn.num_batches_tracked.add_(1)
                factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
                # through .data, as BatchNorm's kernel updates them: without bumping the version counter of
                # buffers an earlier forward (the head's bridge) saved for its backward
                for buffer, value in ((bn.running_mean, mean), (bn.running_var, var)):
                    buffer.data.mul_(1 - factor).add_(value[slot[member]].to(buffer.dtype), alpha=factor)


def _batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: _Batch, users: Sequence[int], stats: _RunningStats) -> _Batch:
    """``bn`` applied to every member with its own statistics; ``x``'s slots are the members ``users`` (or one
    tensor shared by all of them)."""
    b, m, c = x.data.shape[:3]
    grouped = x.data.reshape(b, m * c, *x.data.shape[3:])
    weight = None if bn.weight is None else bn.weight.repeat(m)
    bias = None if bn.bias is None else bn.bias.repeat(m)
    if bn.training or bn.running_mean is None:
        if bn.training and bn.track_running_stats and bn.running_mean is not None:
            # momentum 1: the kernel leaves each slot's batch mean and unbiased variance in the buffers
            mean = torch.zeros(m * c, dtype=bn.running_mean.dtype, device=grouped.device)
            var = torch.ones(m * c, dtype=bn.running_var.dtype, device=grouped.device)
            out = F.batch_norm(grouped, mean, var, weight, bias, True, 1.0, bn.eps)
            stats.record(bn, mean, var, users)
        else:
            out = F.batch_norm(grouped, None, None, weight, bias, True, 0.0, bn.eps)
    else:
        out = F.batch_norm(grouped, bn.running_mean.repeat(m), bn.running_var.repeat(m), weight, bias, False, 0.0,
                           bn.eps)
    return _Batch(out.reshape(b, m, c, *x.data.shape[3:]))


def _sequential(modules: nn.Module, x: _Batch, users: Sequence[int], stats: _RunningStats) -> _Batch:
    """A ``Sequential`` of convolutions, BatchNorms, activations and pooling, BatchNorm per member."""
    for module in modules:
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            x = _batch_norm(module, x, users, stats)
        else:
            x = x.map(module)
    return x


_CONSTANTS: Dict[tuple, torch.Tensor] = {}


def _constant(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor on ``device``, copied there once: a population is fixed for a whole stage, and a
    host-to-GPU copy per block per step would stall the host each time."""
    key = (values, dtype, str(device))
    tensor = _CONSTANTS.get(key)
    if tensor is None:
        if len(_CONSTANTS) >= 4096:
            _CONSTANTS.clear()
        tensor = _CONSTANTS[key] = torch.tensor(values, dtype=dtype, device=device)
    return tensor


def _fuse(inputs: Sequence[_Batch], chosen: Sequence[Sequence[int]]) -> _Batch:
    """Per member ``j``, the mean of ``inputs[i]`` for ``i`` in ``chosen[j]``, resized to ``inputs[0]``'s size."""
    m = len(chosen)
    size = inputs[0].size
    used = sorted({i for c in chosen for i in c})
    if all(list(c) == list(chosen[0]) for c in chosen):  # every member reads the same streams
        picked = [inputs[i].map(lambda t: resize_to(t, size)) for i in chosen[0]]
        if len(picked) == 1:
            return picked[0]
        width = max(p.members for p in picked)
        return _Batch(torch.stack([p.data.expand(-1, width, *p.data.shape[2:]) for p in picked]).mean(0))
    total = None
    for i in used:
        resized = inputs[i].map(lambda t: resize_to(t, size)).data
        weight = _constant(tuple(1.0 / len(c) if i in c else 0.0 for c in chosen), resized.dtype,
                           resized.device).view(1, m, 1, 1, 1)
        term = resized * weight
        total = term if total is None else total + term
    return _Batch(total)


def _block(model: nn.Module, label: str, kind: str, level: int, inputs: Sequence[_Batch],
           chosen: Sequence[Sequence[int]], users: Sequence[int], stats: _RunningStats) -> _Batch:
    block, convs = model.blocks[label], model.level_convs(kind, parse_label(label)[0] // 2, level)
    x = _fuse(inputs, chosen)
    x = _batch_norm(block.bn1, x.map(convs[0]), users, stats).map(block.act)
    return _batch_norm(block.bn2, x.map(convs[1]), users, stats).map(block.act)


def _stack_members(parts: List[torch.Tensor]) -> _Batch:
    return _Batch(torch.stack(parts, dim=1))


def forward_tails(model: nn.Module, features, members: Sequence[Mapping[str, Sequence[int]]]) -> List[torch.Tensor]:
    """Every member's logits, from one batched forward of the tails.

    Parameters
    ----------
    model
        A :class:`~nni_bixnas.space.BiONetPlusPlus` supernet.
    features
        :meth:`~nni_bixnas.space.BiONetPlusPlus.forward_head`'s output (never modified).
    members
        Full samples; the tails run ``features.stage ..`` of each.

    Returns
    -------
    list of torch.Tensor
        Member ``i``'s logits, ``(B, classes, H, W)``, equal to ``forward_tail(features)`` with member ``i``
        active.
    """
    if not members:
        raise ValueError("forward_tails needs at least one member")
    choices: List[Dict[str, List[int]]] = []
    skipped: List[Set[str]] = []
    for member in members:
        model.set_active(member)
        choices.append(model.current_choices())
        skipped.append(model._skipped())
    device = features.stem.device
    m_all = len(members)
    everyone = list(range(m_all))
    stats = _RunningStats()

    stem = _Batch.shared(features.stem)
    previous = [_Batch.shared(t) for t in features.previous]
    bridge = None if features.bridge is None else _Batch.shared(features.bridge)
    for stage in range(features.stage, model.n_stages):
        it, is_decoder = divmod(stage, 2)
        kind = "dec" if is_decoder else "enc"
        outputs: List[_Batch] = []
        x = bridge if is_decoder else stem
        for level in range(model.levels):
            label = f"{kind}_{it}_{level}"
            if level > 0:
                x = outputs[-1].map(lambda t: model._to_next_level(t, is_decoder))
            live = [i for i in range(m_all) if label not in skipped[i]] if label in model.blocks else []
            if live:
                index = None if len(live) == m_all else _constant(tuple(live), torch.long, device)
                inputs = [v.take(index) for v in (x, *previous)]
                computed = _block(model, label, kind, level, inputs, [choices[i][label] for i in live], live,
                                  stats)
                if len(live) < m_all:
                    slot = {i: j for j, i in enumerate(live)}
                    computed = _stack_members([computed.member(slot[i]) if i in slot else x.member(i)
                                               for i in range(m_all)])
                x = computed
            outputs.append(x)
        if not is_decoder:
            pooled = outputs[-1].map(lambda t: F.max_pool2d(t, 2))
            bridge = _sequential(model.bridge, pooled, everyone, stats)
            target = outputs[-1].size
            bridge = bridge.map(lambda t: F.interpolate(t, size=target, mode="bilinear", align_corners=True))
        previous = outputs
    last = previous[-1]
    out = last.map(lambda t: F.interpolate(t, size=features.input_size, mode="bilinear", align_corners=True))
    logits = _sequential(model.head, out, everyone, stats)
    stats.apply(m_all)
    return [logits.member(i) for i in range(m_all)]
