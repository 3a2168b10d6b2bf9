"""Input sizes a registry network can train on: divisible by its depth, and its deepest BatchNorm seeing
two or more values a channel (checked by :func:`~nni_bixnas.training.fit` before the run folder is made).

Each registry network carries its own rule (its ``size_rule()`` method, a
:class:`~nni_bixnas.models.size_rule.SizeRule`):

- U-Net and R2U-Net: sides divisible by ``2 ** levels`` (both refuse other sizes in ``forward``);
- BiO-Net and BiO-Net++ (BiX-Net): ``2 ** (levels + 1)``;
- NAS-Unet: any size (a node resizes the smaller of its inputs; multiples of ``2 ** (depth + 1)`` only keep
  every node aligned), and no BatchNorm (GroupNorm), so nothing to check;
- Auto-DeepLab: any size (every level is resized to its ``ceil`` half), but its ASPP's image-pooling
  BatchNorm sees one value a channel and image whatever the size: training batches need 2+ images.
"""

from __future__ import annotations

from typing import Optional

import pytorch_lightning as pl
import torch.nn as nn

from nni_bixnas._checks import is_int
from nni_bixnas.models.size_rule import SizeRule
from nni_bixnas.training.task import SegmentationTask

__all__ = ["SizeRule", "check_input_size", "check_model_input", "size_rule"]


def size_rule(model: nn.Module) -> Optional[SizeRule]:
    """The :class:`SizeRule` a network gives (its ``size_rule()``), ``None`` for other networks (nothing is
    checked)."""
    rule = getattr(model, "size_rule", None)
    return rule() if callable(rule) else None


def check_input_size(task: SegmentationTask, datamodule: pl.LightningDataModule, info) -> None:
    """Inputs must be divisible by the network's depth, and its deepest BatchNorm must see 2+ values a channel."""
    name = task.hparams.get("model_name") or type(task.model).__name__
    check_model_input(task.model, name, info, getattr(datamodule, "batch_size", None))


def check_model_input(model: nn.Module, name: str, info, batch_size: Optional[int]) -> None:
    """:func:`check_input_size` for a network ``model`` called ``name``, the data's
    :class:`~nni_bixnas.data.build.DatasetInfo` ``info`` and the training ``batch_size`` (``None``: unknown).

    Raises
    ------
    ValueError
        Naming the network, the sizes (or batches) it cannot take and what to use instead.
    """
    rule, size = size_rule(model), getattr(info, "image_size", None)
    if rule is None or not size:
        return
    divisor, why, crop = rule.divisor, rule.why, getattr(info, "crop_size", None)
    for what, (h, w) in (("training crops (patch_size)" if crop else "items", crop or size), ("items", size)):
        if h % divisor or w % divisor:
            raise ValueError(
                f"{name} needs inputs divisible by {divisor} ({why}), but the {what} of the data are {h}x{w}; "
                f"use a patch_size/resize (--patch-size/--resize) that is a multiple of {divisor}"
            )
    n_train = getattr(info, "n_train", None)
    if not (is_int(batch_size) and is_int(n_train) and n_train > 0) or not has_batch_norm(model):
        return
    smallest = min(batch_size, n_train % batch_size or batch_size, n_train)
    batches = f"({n_train} training items, batch_size {batch_size})"
    if rule.pooled and smallest < 2:
        raise ValueError(
            f"{name} trains on batches of 2 or more images ({rule.pooled} sees one value a channel and image, "
            f"whatever the size), but the smallest training batch holds 1 image {batches}; use a batch_size >= 2 "
            "that leaves no last batch of one image"
        )
    h, w = crop or size
    if smallest * (h // divisor) * (w // divisor) < 2:
        raise ValueError(
            f"{h}x{w} training inputs shrink to 1x1 at the deepest BatchNorm of {name} (divided by {divisor}, "
            f"{why}) and the smallest training batch holds 1 image {batches}: one value per channel, which "
            f"BatchNorm cannot train on; use larger inputs, e.g. {2 * divisor}x{2 * divisor} "
            "(--patch-size/--resize), or a batch_size >= 2 that leaves no last batch of one image"
        )


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
