"""MACs of a population member's fixed network, counted once per distinct architecture.

:func:`architecture_key` is the one key of "which net is this" that the member caches share (MACs here,
latency in :mod:`~nni_bixnas.strategy.supernet.member_latency`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Mapping, Sequence

import torch.nn as nn

from nni_bixnas.space.gene import Gene

__all__ = ["member_macs", "architecture_key"]

_MACS_CACHE: Dict[str, int] = {}


def architecture_key(space: Dict[str, Any], sample: Mapping[str, Sequence[int]], frozen: nn.Module,
                     *extra: Any) -> str:
    """A digest of the net ``sample`` computes in ``space`` (``frozen`` is its fixed network) and of ``extra``
    (what else the cached value depends on: the input size, the device).

    For BiO-Net++ (a ``frozen.gene``) the net is :meth:`~nni_bixnas.space.Gene.live_choices`: blocks that
    never reach the head do not count; for other spaces, the whole sample.
    """
    gene = getattr(frozen, "gene", None)
    if isinstance(gene, Gene):  # BiO-Net++: blocks that never reach the head do not count
        arch = gene.live_choices()
    else:
        arch = {label: list(v) for label, v in sample.items()}
    symbol = getattr(space["symbol"], "__qualname__", str(space["symbol"]))
    text = json.dumps([symbol, space["kwargs"], arch, *extra], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def member_macs(supernet: nn.Module, space: Dict[str, Any], sample: Mapping[str, Sequence[int]],
                input_size: Sequence[int] = (512, 512)) -> int:
    """MACs of ``sample``'s fixed network (``supernet.freeze(sample)``), cached by architecture."""
    from nni_bixnas.profile import count_complexity

    frozen = supernet.freeze(dict(sample))
    key = architecture_key(space, sample, frozen, list(input_size))
    if key not in _MACS_CACHE:
        _MACS_CACHE[key] = count_complexity(frozen.cpu(), input_size=tuple(input_size)).macs
    return _MACS_CACHE[key]
