"""U-Net (Ronneberger et al., 2015), in the configuration that matches the BiX-NAS paper's baseline."""

from __future__ import annotations

import torch
import torch.nn as nn

from nni_bixnas._checks import divisible_input

from .size_rule import SizeRule

__all__ = ["UNet"]


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``levels`` poolings, widths ``base * 2**i``, 3x3 stride-2 transposed-conv up-sampling.

    With ``base=32`` and ``levels=4`` it has 8.64M parameters, the paper's U-Net (Table 1): the paper does
    not say which U-Net it trained; halving the original widths (64 -> 32) and using 3x3 transposed
    convolutions, as the authors' BiO-Net code does for its up-sampling, reproduces its size.

    Parameters
    ----------
    in_channels, num_classes
        Image channels; output channels (logits).
    base
        Width of the first level.
    levels
        Number of poolings; inputs must be divisible by ``2 ** levels``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base: int = 32, levels: int = 4) -> None:
        super().__init__()
        if levels < 1 or base < 1:
            raise ValueError(f"levels and base must be positive, got levels={levels}, base={base}")
        self.in_channels, self.num_classes, self.levels = in_channels, num_classes, levels
        widths = [base * 2**i for i in range(levels + 1)]
        self.down = nn.ModuleList(
            [_double_conv(in_channels if i == 0 else widths[i - 1], widths[i]) for i in range(levels)]
        )
        self.pool = nn.MaxPool2d(2)
        self.bottom = _double_conv(widths[-2], widths[-1])
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(widths[i + 1], widths[i], 3, stride=2, padding=1, output_padding=1)
             for i in reversed(range(levels))]
        )
        self.dec = nn.ModuleList([_double_conv(2 * widths[i], widths[i]) for i in reversed(range(levels))])
        self.out = nn.Conv2d(widths[0], num_classes, 1)

    def size_rule(self) -> SizeRule:
        """Sides divisible by ``2 ** levels`` (``forward`` refuses other sizes)."""
        return SizeRule(2**self.levels, f"2 ** levels with levels={self.levels}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        divisible_input(x.shape, 2**self.levels, "2 ** levels")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, block, skip in zip(self.up, self.dec, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.out(x)
