"""MACs of a population member's fixed network, counted once per distinct architecture."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Mapping, Sequence

import torch.nn as nn

from nni_bixnas.space.gene import Gene

__all__ = ["member_macs"]

_MACS_CACHE: Dict[str, int] = {}


def _macs_key(space: Dict[str, Any], sample: Mapping[str, Sequence[int]], frozen: nn.Module,
              size: Sequence[int]) -> str:
    gene = getattr(frozen, "gene", None)
    if isinstance(gene, Gene):  # BiO-Net++: blocks that never reach the head do not count
        arch = gene.live_choices()
    else:
        arch = {label: list(v) for label, v in sample.items()}
    symbol = getattr(space["symbol"], "__qualname__", str(space["symbol"]))
    text = json.dumps([symbol, space["kwargs"], arch, list(size)], sort_keys=True, default=str)
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
