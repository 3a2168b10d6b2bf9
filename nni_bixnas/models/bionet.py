"""BiO-Net (Xiang et al., MICCAI 2020): recurrent bi-directional U-Net with concatenating skips.

As the authors' PyTorch code (``tiangexiang/BiO-Net:pytorch_version/model.py``): widths ``32 * 2**i``,
Conv-ReLU-BN, convolutions shared across iterations with BatchNorm per iteration, forward skips
concatenated into the decoders and backward skips (the previous iteration's decoder outputs)
concatenated into the encoders, 3x3 stride-2 transposed convolutions up, ``integrate=False``.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn

from nni_bixnas._checks import divisible_input

from .size_rule import SizeRule

__all__ = ["BiONet"]


def _crb(conv: nn.Module, c: int) -> List[nn.Module]:
    return [conv, nn.ReLU(inplace=True), nn.BatchNorm2d(c)]


def _deconv(c: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(c, c, 3, stride=2, padding=1, output_padding=1)


class BiONet(nn.Module):
    """BiO-Net with ``iterations`` recurrences and ``levels`` levels.

    Parameters
    ----------
    in_channels, num_classes
        Image channels; output channels (logits).
    iterations
        Recurrences ``T`` (3 in the BiX-NAS paper's comparison).
    levels
        Levels; inputs must be divisible by ``2 ** (levels + 1)``.
    base
        Width of the first level (32).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1, iterations: int = 3, levels: int = 4,
                 base: int = 32) -> None:
        super().__init__()
        if iterations < 1 or levels < 1 or base < 1:
            raise ValueError(f"iterations, levels and base must be positive, got {iterations}, {levels}, {base}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.iterations, self.levels = iterations, levels
        f = [base * 2**i for i in range(levels + 1)]
        self.stem = nn.Sequential(
            *_crb(nn.Conv2d(in_channels, f[0], 3, padding=1), f[0]),
            *_crb(nn.Conv2d(f[0], f[0], 3, padding=1), f[0]),
            *_crb(nn.Conv2d(f[0], f[0], 3, padding=1), f[0]),
            nn.MaxPool2d(2),
        )
        enc_convs = [(nn.Conv2d(2 * f[l], f[l], 3, padding=1), nn.Conv2d(f[l], f[l], 3, padding=1),
                      nn.Conv2d(f[l], f[l + 1], 3, padding=1)) for l in range(levels)]
        dec_convs = []
        for l in range(levels):
            c_in, c_out = f[levels - l] + f[levels - 1 - l], f[levels - 1 - l]
            dec_convs.append((nn.Conv2d(c_in, c_out, 3, padding=1), nn.Conv2d(c_out, c_out, 3, padding=1),
                              _deconv(c_out)))
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for _ in range(iterations):
            for l, (c1, c2, c3) in enumerate(enc_convs):
                self.encoders.append(nn.ModuleList([
                    nn.Sequential(*_crb(c1, f[l]), *_crb(c2, f[l])),
                    nn.Sequential(*_crb(c3, f[l + 1]), nn.MaxPool2d(2)),
                ]))
            for l, (c1, c2, c3) in enumerate(dec_convs):
                c = f[levels - 1 - l]
                self.decoders.append(nn.ModuleList([
                    nn.Sequential(*_crb(c1, c), *_crb(c2, c)),
                    nn.Sequential(*_crb(c3, c)),
                ]))
        self.bridge = nn.Sequential(
            *_crb(nn.Conv2d(f[-1], f[-1], 3, padding=1), f[-1]),
            *_crb(nn.Conv2d(f[-1], f[-1], 3, padding=1), f[-1]),
            *_crb(_deconv(f[-1]), f[-1]),
        )
        self.head = nn.Sequential(
            *_crb(nn.Conv2d(f[0], f[0], 3, padding=1), f[0]),
            *_crb(nn.Conv2d(f[0], f[0], 3, padding=1), f[0]),
            nn.Conv2d(f[0], num_classes, 1),
        )

    def size_rule(self) -> SizeRule:
        """Sides divisible by ``2 ** (levels + 1)`` (``forward`` refuses other sizes)."""
        return SizeRule(2 ** (self.levels + 1), f"2 ** (levels + 1) with levels={self.levels}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        divisible_input(x.shape, 2 ** (self.levels + 1), "2 ** (levels + 1)")
        x = self.stem(x)
        enc: List[torch.Tensor] = [None] * self.levels
        dec: List[torch.Tensor] = [None] * self.levels
        e = d = 0
        for _ in range(self.iterations):
            h = x
            for l in range(self.levels):
                back = dec[-1 - l]
                h = self.encoders[e][0](torch.cat([h, h if back is None else back], dim=1))
                enc[l] = h
                h = self.encoders[e][1](h)
                e += 1
            h = self.bridge(h)
            for l in range(self.levels):
                h = self.decoders[d][0](torch.cat([h, enc[-1 - l]], dim=1))
                dec[l] = h
                h = self.decoders[d][1](h)
                d += 1
        return self.head(h)
