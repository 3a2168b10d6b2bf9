"""The one complexity counter: parameters and MACs the way the BiX-NAS paper counted them.

The paper's figures are ptflops (0.6.6) counts at a 1x3x512x512 input, each module *call* counted once
(``shared/notes/official-code.md`` §1 "Parameters and MACs"). We count with our own forward hooks on
leaf modules, because NNI's FLOPs profiler cannot infer shapes through ``F.interpolate`` or transposed
convolutions, and the authors' ``get_flops`` double-counts modules registered twice.

Counted per call (ptflops conventions):

- ``Conv2d``: ``out.numel() * c_in/groups * kh * kw`` (+ ``out.numel()`` for a bias);
- ``ConvTranspose2d``: ``out_spatial * c_in * c_out/groups * kh * kw`` (+ ``out.numel()`` for a bias);
- ``BatchNorm``: ``2 * numel`` (affine) or ``numel``; ``ReLU``: ``numel``; pooling: ``in.numel()``;
- ``Upsample``: ``out.numel()``; ``Linear``: ``in.numel() * out_features`` (+ bias);
- a skip fusion (:class:`~nni_bixnas.space.mutables.SkipFusion`): ``len(chosen) * out.numel()`` — the
  authors resize every chosen stream with an ``nn.Upsample`` module, which ptflops counts.

Not counted (as in ptflops): functional ops (``F.interpolate``, ``F.max_pool2d``, additions, means),
sigmoid/softmax. Parameters shared between modules are counted once.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Sequence, Type

import torch
import torch.nn as nn

from .space.mutables import SkipChoice, SkipFusion

__all__ = ["Complexity", "count_complexity", "count_params", "register_macs_rule"]


@dataclasses.dataclass(frozen=True)
class Complexity:
    """Parameter count and multiply-accumulates of one forward pass."""

    params: int
    macs: int

    def __str__(self) -> str:
        return f"{self.params / 1e6:.3f}M params, {self.macs / 1e9:.3f} GMACs"


def _conv(m: nn.Conv2d, inp, out) -> int:
    kh, kw = m.kernel_size
    macs = out.numel() * (m.in_channels // m.groups) * kh * kw
    return macs + (out.numel() if m.bias is not None else 0)


def _deconv(m: nn.ConvTranspose2d, inp, out) -> int:
    # ptflops 0.6.6 counts every *output* position (4x the true work of a stride-2 deconv); the paper's
    # BiO-Net figure (115.67G) is only reproduced this way.
    kh, kw = m.kernel_size
    positions = out.shape[0] * out.shape[2] * out.shape[3]
    macs = positions * m.in_channels * (m.out_channels // m.groups) * kh * kw
    return macs + (out.numel() if m.bias is not None else 0)


def _bn(m: nn.modules.batchnorm._BatchNorm, inp, out) -> int:
    return inp[0].numel() * (2 if m.affine else 1)


def _norm(m: nn.GroupNorm, inp, out) -> int:  # ptflops 0.6.6 counts GroupNorm as its BatchNorm
    return inp[0].numel() * (2 if m.affine else 1)


def _linear(m: nn.Linear, inp, out) -> int:
    return inp[0].numel() * m.out_features + (out.numel() if m.bias is not None else 0)


def _fusion(m, inp, out) -> int:
    return len(m.chosen) * out.numel()


_RULES: Dict[Type[nn.Module], Callable] = {
    nn.Conv2d: _conv,
    nn.ConvTranspose2d: _deconv,
    nn.BatchNorm2d: _bn,
    nn.GroupNorm: _norm,
    nn.ReLU: lambda m, i, o: o.numel(),
    nn.MaxPool2d: lambda m, i, o: i[0].numel(),
    nn.AvgPool2d: lambda m, i, o: i[0].numel(),
    nn.AdaptiveAvgPool2d: lambda m, i, o: i[0].numel(),
    nn.Upsample: lambda m, i, o: o.numel(),
    nn.Linear: _linear,
    SkipFusion: _fusion,
    SkipChoice: _fusion,
}


def register_macs_rule(module_type: Type[nn.Module], rule: Callable[[nn.Module, tuple, torch.Tensor], int]) -> None:
    """Count calls of ``module_type`` with ``rule(module, inputs, output) -> MACs`` (e.g. a custom fusion)."""
    _RULES[module_type] = rule


def count_params(model: nn.Module) -> int:
    """Number of parameters, each shared tensor counted once."""
    return sum(p.numel() for p in model.parameters())


def count_complexity(
    model: nn.Module,
    input_size: Sequence[int] = (512, 512),
    in_channels: Optional[int] = None,
    batch_size: int = 1,
) -> Complexity:
    """Parameters and MACs of ``model`` on a ``batch_size x in_channels x H x W`` input.

    Parameters
    ----------
    model
        A fixed network (a frozen architecture); an un-frozen BiO-Net++ space counts its current choices.
    input_size
        ``(H, W)``; the paper used 512 x 512.
    in_channels
        Defaults to ``model.in_channels`` if it has one, else 3.
    batch_size
        The paper used 1.
    """
    if len(input_size) != 2 or min(input_size) < 1:
        raise ValueError(f"input_size must be (height, width) with positive values, got {tuple(input_size)}")
    in_channels = in_channels if in_channels is not None else getattr(model, "in_channels", 3)
    total = [0]

    def hook(module, inputs, output):
        rule = _RULES.get(type(module))
        if rule is not None:
            total[0] += int(rule(module, inputs, output))

    handles = [m.register_forward_hook(hook) for m in model.modules() if type(m) in _RULES]
    was_training = model.training
    try:
        model.eval()
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(batch_size, in_channels, *input_size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return Complexity(count_params(model), total[0])
