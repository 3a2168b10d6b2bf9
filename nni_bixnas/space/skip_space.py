"""Reading and setting the skip choices of a model space built from :class:`SkipChoice` modules."""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import torch.nn as nn

from .mutables import SkipChoice

__all__ = ["SkipSpaceMixin"]


class SkipSpaceMixin:
    """``skip_choices``, ``current_choices`` and ``set_active`` of a space whose blocks fuse their inputs
    with a :class:`SkipChoice` (searched) or a :class:`~nni_bixnas.space.SkipFusion` (fixed).

    A subclass implements :meth:`fusion_modules`, and :meth:`fallback_choice` if a block may have no fusion
    module (or one without ``chosen``).
    """

    def fusion_modules(self) -> Dict[str, Optional[nn.Module]]:
        """Every block's fusion module by label, in the space's label order; ``None`` for a block not built.

        Returns
        -------
        dict
            ``{label: module or None}``; a module is a :class:`SkipChoice`, a
            :class:`~nni_bixnas.space.SkipFusion` or a strategy's stand-in, read through its ``chosen``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement fusion_modules()")

    def fallback_choice(self, label: str) -> List[int]:
        """What :meth:`current_choices` reports for a block without a fusion module or one without ``chosen``.

        Parameters
        ----------
        label
            The block's label.

        Returns
        -------
        list of int
            The inputs the block is taken to read.
        """
        raise NotImplementedError(f"{type(self).__name__}: block {label!r} has no fusion module with `chosen`")

    def skip_choices(self) -> Dict[str, SkipChoice]:
        """The searchable blocks' :class:`SkipChoice` modules, by label (empty for a fixed network).

        Returns
        -------
        dict
            ``{label: SkipChoice}``, in the order of :meth:`fusion_modules`.
        """
        return {label: fusion for label, fusion in self.fusion_modules().items() if isinstance(fusion, SkipChoice)}

    def current_choices(self) -> Dict[str, List[int]]:
        """What every block reads in the next forward (``chosen`` of its fusion module).

        Returns
        -------
        dict
            ``{label: indices}`` for every label of :meth:`fusion_modules`.
        """
        out = {}
        for label, fusion in self.fusion_modules().items():
            chosen = getattr(fusion, "chosen", None)
            out[label] = self.fallback_choice(label) if chosen is None else list(chosen)
        return out

    def set_active(self, sample: Optional[Mapping[str, Sequence[int]]]) -> None:
        """Make the supernet run ``sample``; see :meth:`~nni_bixnas.space.Phase2Supernet.set_active`.

        Parameters
        ----------
        sample
            ``{label: indices}`` (stored sorted); labels not given keep their value. ``None`` restores the
            defaults (every choice's dry-run value).
        """
        for label, choice in self.skip_choices().items():
            if sample is None:
                choice.active = None
            elif label in sample:
                choice.active = sorted(int(i) for i in sample[label])
