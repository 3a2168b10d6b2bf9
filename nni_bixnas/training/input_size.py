"""Input sizes a registry network can train on: divisible by its depth, and its deepest BatchNorm seeing
two or more values a channel (checked by :func:`~nni_bixnas.training.fit` before the run folder is made)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch.nn as nn

from nni_bixnas._checks import is_int
from nni_bixnas.training.task import SegmentationTask

__all__ = ["check_input_size", "size_rule"]

def size_rule(model: nn.Module):
    """``(divisor, why)`` of the registry networks' input sizes (their deepest map is ``size / divisor``)."""
    from nni_bixnas.models.bionet import BiONet
    from nni_bixnas.models.unet import UNet
    from nni_bixnas.space.bionet_pp import BiONetPlusPlus

    if isinstance(model, UNet):
        return 2**model.levels, f"2 ** levels with levels={model.levels}"
    if isinstance(model, (BiONet, BiONetPlusPlus)):
        return 2 ** (model.levels + 1), f"2 ** (levels + 1) with levels={model.levels}"
    return None


def check_input_size(task: SegmentationTask, datamodule: pl.LightningDataModule, info) -> None:
    """Inputs must be divisible by the network's depth, and its deepest BatchNorm must see 2+ values a channel."""
    rule, size = size_rule(task.model), getattr(info, "image_size", None)
    if rule is None or not size:
        return
    (divisor, why), crop = rule, getattr(info, "crop_size", None)
    name = task.hparams.get("model_name") or type(task.model).__name__
    for what, (h, w) in (("training crops (patch_size)" if crop else "items", crop or size), ("items", size)):
        if h % divisor or w % divisor:
            raise ValueError(
                f"{name} needs inputs divisible by {divisor} ({why}), but the {what} of the data are {h}x{w}; "
                f"use a patch_size/resize (--patch-size/--resize) that is a multiple of {divisor}"
            )
    batch_size, n_train = getattr(datamodule, "batch_size", None), getattr(info, "n_train", None)
    if not (is_int(batch_size) and is_int(n_train) and n_train > 0):
        return
    smallest = min(batch_size, n_train % batch_size or batch_size, n_train)
    h, w = crop or size
    if smallest * (h // divisor) * (w // divisor) < 2 and has_batch_norm(task.model):
        raise ValueError(
            f"{h}x{w} training inputs shrink to 1x1 at the deepest BatchNorm of {name} (divided by {divisor}, "
            f"{why}) and the smallest training batch holds 1 image ({n_train} training items, batch_size "
            f"{batch_size}): one value per channel, which BatchNorm cannot train on; use larger inputs, e.g. "
            f"{2 * divisor}x{2 * divisor} (--patch-size/--resize), or a batch_size >= 2 that leaves no last batch "
            "of one image"
        )


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
