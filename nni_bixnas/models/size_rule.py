"""What input sizes a network takes: each registry network answers ``size_rule()`` with a :class:`SizeRule`
(checked by :func:`~nni_bixnas.training.fit` before the run folder is made,
:mod:`nni_bixnas.training.input_size`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["SizeRule"]


@dataclass(frozen=True)
class SizeRule:
    """The input sizes a network takes.

    Attributes
    ----------
    divisor : int
        Input sides must be multiples of it (1: any size); the deepest map is ``size / divisor``.
    why : str
        Where the divisor comes from, for messages (e.g. ``'2 ** levels with levels=4'``).
    pooled : str or None
        Set when a BatchNorm follows a global pooling (one value a channel and image whatever the size):
        what that BatchNorm is, for messages.
    """

    divisor: int
    why: str
    pooled: Optional[str] = None
