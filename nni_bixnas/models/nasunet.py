"""NAS-Unet (Weng et al., "NAS-Unet: Neural Architecture Search for Medical Image Segmentation", IEEE Access 7,
2019), the BiX-NAS paper's Table 1 baseline.

Written from the authors' code (github.com/tianbaochou/NasUnet, commit 38f54d6): ``models/nas_unet.py``
(``NasUnet``, ``BuildCell``), ``util/prim_ops_set.py`` (the primitives) and ``models/geno_searched.py``
(``NASUNET = NAS_UNET_V2``, the DownSC/UpSC genotype searched on PASCAL VOC and transferred to the medical
datasets; the one the authors' VOC, CHAOS, PROMISE12 and bladder configs train).

Configuration: stems ``1x1`` (full resolution) and ``3x3``/stride 2, both ``4 * width`` channels; ``depth``
DownSC cells, ``depth + 1`` UpSC cells (the last one back at full resolution), each cell of 3 nodes
concatenated (``3 * width`` channels, ``double_down_channel=False``); GroupNorm with 16 channels a group
(one group when the width is not a multiple of 16); a bias-free ``1x1`` head. ``width=72, depth=5`` is the
configuration that gives the BiX-NAS Table 1 figures (2.42M, 67.31G): 2,438,516 parameters (+0.77%) and
67.375 GMACs (+0.10%) at 1x3x512x512, counted as ptflops 0.6.6 does (GroupNorm and adaptive pooling
included, as :mod:`nni_bixnas.profile` counts them). The authors' configs use widths 16-64 and depths 4-6;
NAS-Unet's own paper reports about 0.8M parameters for its smaller setting. BiX-NAS does not state its setting; no other
(width, depth) of this genotype lands within 2% of both figures (checked for depths 3-7).

Two details are kept from the authors' code because the counts depend on them: the up-sampling primitives
are ``3x3``/stride-2 transposed convolutions without output padding (``2h - 1`` rows), and a node whose two
inputs differ in size resizes the smaller one (nearest neighbour), so any input size works; sides that are
multiples of ``2 ** (depth + 1)`` keep every node aligned. Left out: the head's GroupNorm, which the authors
build but never call (``ops_order='weight'``; 2 * ``num_classes`` parameters), and the unused auxiliary head.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .size_rule import SizeRule

__all__ = ["NASUNET_GENOTYPE", "NasUnet"]

#: ``models/geno_searched.py::NAS_UNET_V2`` (``NASUNET``): ``(primitive, input)`` pairs, two per node; input 0 is
#: the cell's skip/previous-previous state, 1 the previous cell, ``k >= 2`` node ``k - 2``.
NASUNET_GENOTYPE: Dict[str, Sequence] = {
    "down": [("down_conv", 1), ("down_dep_conv", 0), ("down_cweight", 1), ("down_dil_conv", 0),
             ("down_dil_conv", 1), ("down_conv", 0)],
    "down_concat": (2, 3, 4),
    "up": [("identity", 0), ("up_cweight", 1), ("identity", 2), ("up_cweight", 1), ("cweight", 3),
           ("up_conv", 1)],
    "up_concat": (2, 3, 4),
}


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(c // 16 if c % 16 == 0 else 1, c)


def _conv(c_in: int, c_out: int, k: int = 3, stride: int = 1, dilation: int = 1, depthwise: bool = False,
          transpose: bool = False) -> List[nn.Module]:
    """The weight layers of the authors' ``ConvOps`` (``padding = dilation * (k // 2)``, no bias)."""
    pad = dilation * (k // 2)
    if transpose:
        groups = c_in if depthwise else 1
        layers = [nn.ConvTranspose2d(c_in, c_out, k, stride, pad, dilation=1 if depthwise else dilation,
                                     groups=groups, bias=False)]
        return layers + ([nn.Conv2d(c_in, c_out, 1, bias=False)] if depthwise else [])
    if depthwise:
        return [nn.Conv2d(c_in, c_in, k, stride, pad, dilation, groups=c_in, bias=False),
                nn.Conv2d(c_in, c_out, 1, bias=False)]
    return [nn.Conv2d(c_in, c_out, k, stride, pad, dilation, bias=False)]


def _conv_op(c: int, **kw) -> nn.Sequential:
    """``ConvOps(..., ops_order='weight_norm_act')``: convolution, GroupNorm, ReLU."""
    return nn.Sequential(*_conv(c, c, **kw), _gn(c), nn.ReLU(inplace=True))


class ChannelWeight(nn.Module):
    """``CWeightOp``: squeeze-and-excitation channel weighting; with ``stride=2`` then a ``3x3``/stride-2
    (transposed) convolution and GroupNorm."""

    def __init__(self, c: int, stride: int = 1, transpose: bool = False) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(c, c // 16), nn.ReLU(inplace=True), nn.Linear(c // 16, c), nn.Sigmoid())
        self.resample = nn.Sequential(*_conv(c, c, stride=2, transpose=transpose), _gn(c)) if stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        x = x * self.fc(self.pool(x).view(b, c)).view(b, c, 1, 1)
        return self.resample(x) if self.resample is not None else x


_PRIMITIVES = {
    "identity": lambda c: nn.Identity(),
    "cweight": lambda c: ChannelWeight(c),
    "dil_conv": lambda c: _conv_op(c, dilation=2),
    "dep_conv": lambda c: _conv_op(c, depthwise=True),
    "shuffle_conv": lambda c: _conv_op(c),
    "conv": lambda c: _conv_op(c),  # 'has_shuffle' is a no-op with one group
    "avg_pool": lambda c: nn.AvgPool2d(2, 2, count_include_pad=False),
    "max_pool": lambda c: nn.MaxPool2d(2, 2),
    "down_cweight": lambda c: ChannelWeight(c, stride=2),
    "down_dil_conv": lambda c: _conv_op(c, stride=2, dilation=2),
    "down_dep_conv": lambda c: _conv_op(c, stride=2, depthwise=True),
    "down_conv": lambda c: _conv_op(c, stride=2),
    "up_cweight": lambda c: ChannelWeight(c, stride=2, transpose=True),
    "up_dep_conv": lambda c: _conv_op(c, stride=2, depthwise=True, transpose=True),
    "up_conv": lambda c: _conv_op(c, stride=2, transpose=True),
    "up_dil_conv": lambda c: _conv_op(c, stride=2, dilation=2, transpose=True),
}


def _preprocess(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """``ConvOps(k=1, ops_order='act_weight_norm')``."""
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, 1, stride, bias=False), _gn(c_out))


class Cell(nn.Module):
    """A DownSC (``kind='down'``) or UpSC cell of ``len(ops) // 2`` nodes, each the sum of two primitives."""

    def __init__(self, genotype: Dict[str, Sequence], c_prev_prev: int, c_prev: int, c: int, kind: str) -> None:
        super().__init__()
        ops: Sequence[Tuple[str, int]] = genotype[kind]
        self.preprocess0 = _preprocess(c_prev_prev, c, stride=2 if kind == "down" else 1)
        self.preprocess1 = _preprocess(c_prev, c)
        self.ops = nn.ModuleList(_PRIMITIVES[name](c) for name, _ in ops)
        self.inputs = [i for _, i in ops]
        self.concat = tuple(genotype[f"{kind}_concat"])
        self.out_channels = len(self.concat) * c

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for j in range(len(self.ops) // 2):
            h1 = self.ops[2 * j](states[self.inputs[2 * j]])
            h2 = self.ops[2 * j + 1](states[self.inputs[2 * j + 1]])
            if h1.shape[2:] != h2.shape[2:]:  # as the authors: resize the smaller to the larger
                if h1.shape[2] > h2.shape[2] or h1.shape[3] > h2.shape[3]:
                    h2 = F.interpolate(h2, size=h1.shape[2:])
                else:
                    h1 = F.interpolate(h1, size=h2.shape[2:])
            states.append(h1 + h2)
        return torch.cat([states[i] for i in self.concat], dim=1)


class NasUnet(nn.Module):
    """NAS-Unet: ``depth`` DownSC and ``depth + 1`` UpSC cells on a U-like backbone.

    Parameters
    ----------
    in_channels, num_classes
        Image channels; output channels (logits, full resolution).
    width
        Channels of a node (``c`` in the authors' code); stems have ``4 * width``, cells ``3 * width``.
    depth
        Number of DownSC cells; the deepest features are at stride ``2 ** (depth + 1)``.
    genotype
        ``{'down': [...], 'down_concat': ..., 'up': [...], 'up_concat': ...}``; default
        :data:`NASUNET_GENOTYPE`.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1, width: int = 72, depth: int = 5,
                 genotype: Dict[str, Sequence] = None) -> None:
        super().__init__()
        if width < 16 or depth < 1:
            raise ValueError(f"width must be >= 16 and depth >= 1, got width={width}, depth={depth}")
        genotype = genotype or NASUNET_GENOTYPE
        self.in_channels, self.num_classes, self.depth = in_channels, num_classes, depth
        stem = 4 * width
        self.stem0 = nn.Sequential(nn.Conv2d(in_channels, stem, 1, bias=False), _gn(stem))
        self.stem1 = nn.Sequential(nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False), _gn(stem))
        skips, c_prev_prev, c_prev = [stem, stem], stem, stem
        self.down = nn.ModuleList()
        for _ in range(depth):
            cell = Cell(genotype, c_prev_prev, c_prev, width, "down")
            self.down.append(cell)
            c_prev_prev, c_prev = c_prev, cell.out_channels
            skips.append(c_prev)
        self.up = nn.ModuleList()
        for i in range(depth + 1):
            cell = Cell(genotype, skips[-(i + 2)], c_prev, width, "up")
            self.up.append(cell)
            c_prev = cell.out_channels
        self.head = nn.Conv2d(c_prev, num_classes, 1, bias=False)

    def size_rule(self) -> SizeRule:
        """Any size (multiples of ``2 ** (depth + 1)`` only keep every node aligned); GroupNorm, no BatchNorm."""
        return SizeRule(1, "any size: a node resizes the smaller of its inputs")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0, s1 = self.stem0(x), self.stem1(x)
        states = [s0, s1]
        for cell in self.down:
            s0, s1 = s1, cell(s0, s1)
            states.append(s1)
        for i, cell in enumerate(self.up):
            s1 = cell(states[-(i + 2)], s1)
        return self.head(s1)
