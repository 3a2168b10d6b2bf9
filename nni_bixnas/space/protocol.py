"""The head/tail protocol a supernet implements to take part in Phase 2 (skip fairness, paper §2.3).

:func:`~nni_bixnas.strategy.supernet.fair_step.fair_step` runs the stages shared by a population once (the head)
and then every member's own stages (its tail) on the head's output; see :mod:`nni_bixnas.strategy.supernet.fair_step`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Protocol, Sequence, runtime_checkable

import torch

__all__ = ["Phase2Supernet"]


@runtime_checkable
class Phase2Supernet(Protocol):
    """A supernet whose forward splits into a head (stages ``0 .. stage - 1``) and a tail (the rest).

    ``isinstance(model, Phase2Supernet)`` checks only that the three methods exist; the contract below
    is what the Phase 2 strategies rely on. For every sample made active and every ``stage``,
    ``forward_tail(forward_head(x, stage))`` equals the full forward of ``x``.
    """

    def set_active(self, sample: Optional[Mapping[str, Sequence[int]]]) -> None:
        """Make the next forwards run ``sample``.

        Parameters
        ----------
        sample
            ``{label: sorted indices}``: per skip-choice label, the incoming streams to fuse. Labels not in
            ``sample`` keep their current value; ``None`` clears every choice back to its default.
        """

    def forward_head(self, x: torch.Tensor, stage: int) -> Any:
        """Run stages ``0 .. stage - 1`` on ``x`` under the active sample.

        Parameters
        ----------
        x
            The network input, ``(batch, channels, height, width)``.
        stage
            The first stage the tail runs, ``0 <= stage <= n_stages``.

        Returns
        -------
        Any
            The features the later stages need: a dataclass whose fields are tensors, tuples of tensors
            or plain values, a tuple of tensors, or a tensor (the forms
            :func:`~nni_bixnas.strategy.supernet.fair_step.detach_features` can replace by detached leaves).
        """

    def forward_tail(self, features: Any) -> torch.Tensor:
        """Run the stages from the head's ``stage`` on, and the output head, under the active sample.

        Parameters
        ----------
        features
            A :meth:`forward_head` output, possibly computed under another active sample (Phase 2 runs the
            head once with the union of the members' choices). It must not be modified: every member's
            tail reads the same features.

        Returns
        -------
        torch.Tensor
            The logits.
        """
