"""R2U-Net: the recurrent residual U-Net of Alom et al., in the configuration of the BiX-NAS paper's Table 1.

Sources
-------
- M. Z. Alom, M. Hasan, C. Yakopcic, T. M. Taha, V. K. Asari, "Recurrent Residual Convolutional Neural
  Network based on U-Net (R2U-Net) for Medical Image Segmentation", arXiv:1802.06955 (2018); the BiX-NAS
  paper cites its nuclei version (NAECON 2018) as [1]. U-Net whose double convolutions are replaced by
  recurrent residual convolutional units (RRCU): two recurrent convolutional layers (RCL), each one 3x3
  convolution unfolded over ``t`` time steps with shared weights, around a residual connection.
- The widely used PyTorch definition, ``R2U_Net`` in ``LeeJunHyun/Image_Segmentation`` (``network.py``,
  commit 7a6e5f9): a 1x1 convolution in front of each RRCU (so the residual has the block's width),
  ``Conv-BN-ReLU`` applied ``t + 1`` times per RCL (``x1 = f(x)``, then ``t`` times ``x1 = f(x + x1)``),
  5 widths ``64 * 2**i``, 2x2 max pooling, up-sampling by nearest ``nn.Upsample`` + 3x3 Conv-BN-ReLU,
  concatenating skips, a 1x1 head (logits). We write our own module after that definition.

Configuration for Table 1 (9.78M params, 197.16 GMACs at 1x3x512x512): the BiX-NAS paper does not give
it. The layout above with base width 32 (not 64) and ``t = 3`` reproduces both figures, counted the
paper's way (:func:`nni_bixnas.profile.count_complexity`, each module call once): 9,778,785 parameters
(-0.01%) and 197,157,191,680 MACs (-0.001%). The parameter count does not depend on ``t``; with
LeeJunHyun's default ``t = 2`` the MACs are 153.415 G (-22.2%), and their base 64 gives 39,091,393
parameters and 611.772 GMACs (t = 2). A recurrent step adds MACs but no parameters: one more step adds
exactly the 43.742 G missing at ``t = 2``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from nni_bixnas._checks import divisible_input

from .size_rule import SizeRule

__all__ = ["R2UNet"]


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class RecurrentConv(nn.Module):
    """Recurrent convolutional layer: one Conv-BN-ReLU unit ``f`` applied ``t + 1`` times.

    ``h = f(x)``, then ``t`` times ``h = f(x + h)`` (the feed-forward input is re-added at every step).
    """

    def __init__(self, channels: int, t: int) -> None:
        super().__init__()
        self.t = t
        self.unit = _conv_bn_relu(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.unit(x)
        for _ in range(self.t):
            h = self.unit(x + h)
        return h


class RRCNNBlock(nn.Module):
    """Recurrent residual unit: a 1x1 projection ``p``, then ``p + RCL(RCL(p))``."""

    def __init__(self, c_in: int, c_out: int, t: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(c_in, c_out, 1)
        self.rcnn = nn.Sequential(RecurrentConv(c_out, t), RecurrentConv(c_out, t))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return x + self.rcnn(x)


class R2UNet(nn.Module):
    """R2U-Net with ``levels`` poolings, widths ``base * 2**i``, ``t`` recurrent steps per RCL.

    Parameters
    ----------
    in_channels, num_classes
        Image channels; output channels (logits, no final activation).
    base
        Width of the first level (32 for the paper's Table 1; Alom et al.'s PyTorch port uses 64).
    t
        Recurrent steps of each recurrent convolutional layer (its unit runs ``t + 1`` times); 3 for Table 1.
    levels
        Number of poolings; inputs must be divisible by ``2 ** levels``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base: int = 32, t: int = 3,
                 levels: int = 4) -> None:
        super().__init__()
        if levels < 1 or base < 1 or t < 0:
            raise ValueError(f"need levels >= 1, base >= 1, t >= 0; got levels={levels}, base={base}, t={t}")
        self.in_channels, self.num_classes, self.levels = in_channels, num_classes, levels
        widths = [base * 2**i for i in range(levels + 1)]
        self.pool = nn.MaxPool2d(2)
        self.encoders = nn.ModuleList(
            [RRCNNBlock(in_channels if i == 0 else widths[i - 1], widths[i], t) for i in range(levels + 1)]
        )
        self.ups = nn.ModuleList(
            [nn.Sequential(nn.Upsample(scale_factor=2), _conv_bn_relu(widths[i + 1], widths[i]))
             for i in reversed(range(levels))]
        )
        self.decoders = nn.ModuleList([RRCNNBlock(2 * widths[i], widths[i], t) for i in reversed(range(levels))])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def size_rule(self) -> SizeRule:
        """Sides divisible by ``2 ** levels`` (``forward`` refuses other sizes)."""
        return SizeRule(2**self.levels, f"2 ** levels with levels={self.levels}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        divisible_input(x.shape, 2**self.levels, "2 ** levels")
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for up, decoder in zip(self.ups, self.decoders):
            x = decoder(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)
