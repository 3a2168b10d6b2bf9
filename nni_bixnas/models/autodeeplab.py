"""Auto-DeepLab (Liu et al., "Auto-DeepLab: Hierarchical Neural Architecture Search for Semantic Image
Segmentation", CVPR 2019), the searched network with the DeepLabv3+ head, a BiX-NAS Table 1 baseline.

Written from the authors' release (tensorflow/models ``research/deeplab/core/nas_network.py::hnasnet`` and
``nas_cell.py::NASBaseCell``; the ASPP and decoder of ``research/deeplab/model.py``); PyTorch ports read for
comparison: NoamRosenberg/autodeeplab (``retrain_model/``; since 2019-09 its atrous ops are separable and since
2019-10 its first cell is at stride 8, so it is smaller: 9.78M at F=32) and MenghaoGuo/AutoDeeplab (search only).

Configuration (the authors'): stem ``3x3``/2 (64), ``3x3`` (64), ``3x3``/2 (128); 12 cells on the searched
path ``[0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1]`` (level ``l`` = stride ``4 * 2**l``, ``F * 2**l`` filters a
node, 5 nodes concatenated); the searched cell (:data:`CELL`): ``atrous_kxk`` is a full ``kxk`` convolution
with rate 2, ``separable_kxk_2`` two ReLU-separable-conv-BN layers. Head (DeepLabv3+): ReLU, ASPP at
stride 8 (``1x1``, three ``3x3`` atrous convolutions, image pooling; 256 channels; ``1x1`` projection,
dropout 0.1), decoder from cell 2 (stride 4; ``1x1`` to 48 channels, two ``3x3`` convolutions of 256),
``1x1`` logits, bilinear up-sampling. With 19 classes this reproduces the Auto-DeepLab paper's sizes:
F = 20, 32, 48 give 10.15M, 21.62M, 44.42M (Auto-DeepLab-S/M/L).

BiX-NAS Table 1 (27.13M, 60.33G) is none of S/M/L and does not say its F; no F of this network reaches both
figures within 2%: the nearest, ``filter_multiplier=36`` (the default), gives 26,514,577 parameters (-2.27%)
and 60.62 GMACs at 1x3x512x512 (+0.48%; ptflops 0.6.6 conventions); F = 37 gives 27.82M (+2.55%) and
62.21G (+3.1%). ASPP rates are (12, 24, 36), DeepLab's for output stride 8; they change neither count.
Resizing (between levels, stride-2 atrous ops, the head) is bilinear with aligned corners, as in the
authors' code, to each level's size (``ceil`` halving), so any input size works.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .size_rule import SizeRule

__all__ = ["AutoDeepLab", "CELL", "PATH"]

#: ``hnasnet``'s ``(operation, hidden state)`` pairs, two per block; state 0 is the cell's input, 1 the
#: previous-previous cell, ``k >= 2`` block ``k - 2``. Blocks are summed; the 5 blocks are concatenated.
CELL: Tuple[Tuple[str, int], ...] = (
    ("atrous_5x5", 1), ("separable_3x3_2", 0), ("separable_3x3_2", 1), ("atrous_3x3", 0),
    ("separable_3x3_2", 3), ("separable_3x3_2", 1), ("separable_5x5_2", 4), ("separable_5x5_2", 2),
    ("separable_5x5_2", 3), ("atrous_5x5", 5),
)
#: The searched network-level path: the level of each of the 12 cells (level ``l`` is stride ``4 * 2**l``).
PATH: Tuple[int, ...] = (0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1)


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return x if x.shape[2:] == tuple(size) else F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _relu_conv_bn(c_in: int, c_out: int, k: int = 1, stride: int = 1, dilation: int = 1,
                  separable: bool = False) -> nn.Sequential:
    pad = dilation * (k // 2)
    if separable:
        conv = [nn.Conv2d(c_in, c_in, k, stride, pad, dilation, groups=c_in, bias=False),
                nn.Conv2d(c_in, c_out, 1, bias=False)]
    else:
        conv = [nn.Conv2d(c_in, c_out, k, stride, pad, dilation, bias=False)]
    return nn.Sequential(nn.ReLU(), *conv, nn.BatchNorm2d(c_out))


def _conv_bn_relu(c_in: int, c_out: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU())


class _Operation(nn.Module):
    """``NASBaseCell._apply_conv_operation`` for the ``separable_kxk_n`` and ``atrous_kxk`` operations."""

    def __init__(self, name: str, f: int, stride: int) -> None:
        super().__init__()
        k = int(name.split("x")[1][0])
        self.downsample = name.startswith("atrous") and stride == 2
        if name.startswith("separable"):
            n = int(name.rsplit("_", 1)[1])
            self.body = nn.Sequential(*[_relu_conv_bn(f, f, k, stride if i == 0 else 1, separable=True)
                                        for i in range(n)])
        else:  # stride 2: bilinear halving, then rate 1
            self.body = _relu_conv_bn(f, f, k, dilation=1 if self.downsample else 2)

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        return self.body(_resize(x, size) if self.downsample else x)


class Cell(nn.Module):
    """``NASBaseCell``: ``1x1`` projections of the input and the previous-previous cell, then the blocks."""

    def __init__(self, c_in: int, c_prev: int, f: int, stride: int) -> None:
        super().__init__()
        self.pre = _relu_conv_bn(c_in, f)
        self.pre_prev = _relu_conv_bn(c_prev, f) if c_prev != f else nn.Identity()
        self.ops = nn.ModuleList(_Operation(name, f, stride if i < 2 else 1) for name, i in CELL)
        self.inputs = [i for _, i in CELL]
        self.out_channels = len(CELL) // 2 * f

    def forward(self, x: torch.Tensor, prev: torch.Tensor, size) -> torch.Tensor:
        states = [self.pre(x), self.pre_prev(_resize(prev, x.shape[2:]))]
        for j in range(len(self.ops) // 2):
            a, b = self.inputs[2 * j], self.inputs[2 * j + 1]
            states.append(self.ops[2 * j](states[a], size) + self.ops[2 * j + 1](states[b], size))
        return torch.cat(states[2:], dim=1)


class AutoDeepLab(nn.Module):
    """The searched Auto-DeepLab network with the DeepLabv3+ ASPP and decoder.

    Parameters
    ----------
    in_channels, num_classes
        Image channels; output channels (logits, input resolution).
    filter_multiplier
        ``F``: filters a block at stride 4 (the paper's S/M/L are 20/32/48).
    path
        Level (0-3: stride 4-32) of each cell; consecutive levels differ by at most one.
    aspp_rates
        Atrous rates of the ASPP's ``3x3`` branches.
    aspp_channels, low_level_channels
        Width of the ASPP and decoder; of the projected low-level (cell 2) features.

    Training needs batches of two or more images (the image-pooling branch's BatchNorm sees one value a
    channel and image); evaluation takes any batch.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1, filter_multiplier: int = 36,
                 path: Sequence[int] = PATH, aspp_rates: Sequence[int] = (12, 24, 36), aspp_channels: int = 256,
                 low_level_channels: int = 48) -> None:
        super().__init__()
        path = tuple(path)
        if len(path) < 3 or path[0] not in (0, 1) or any(abs(b - a) > 1 for a, b in zip(path, path[1:])) \
                or not all(0 <= level <= 3 for level in path):
            raise ValueError(f"path must list levels 0-3 that change by at most 1 a cell (>= 3 cells), got {path}")
        self.in_channels, self.num_classes, self.path = in_channels, num_classes, path
        self.stem0 = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                   nn.Conv2d(64, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64))
        self.stem1 = nn.Sequential(nn.ReLU(), nn.Conv2d(64, 128, 3, 2, 1, bias=False), nn.BatchNorm2d(128))
        channels: List[int] = [64, 128]
        self.cells = nn.ModuleList()
        for i, level in enumerate(path):
            stride = 2 if level > (path[i - 1] if i else 0) else 1
            self.cells.append(Cell(channels[-1], channels[-2], filter_multiplier * 2**level, stride))
            channels.append(self.cells[-1].out_channels)
        c, a = channels[-1], aspp_channels
        self.aspp = nn.ModuleList([_conv_bn_relu(c, a)] + [_conv_bn_relu(c, a, 3, r) for r in aspp_rates])
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_bn_relu(c, a))
        self.project = nn.Sequential(_conv_bn_relu((len(aspp_rates) + 2) * a, a), nn.Dropout(0.1))
        self.low_level = _conv_bn_relu(channels[4], low_level_channels)
        self.decoder = nn.Sequential(_conv_bn_relu(a + low_level_channels, a, 3), _conv_bn_relu(a, a, 3))
        self.logits = nn.Conv2d(a, num_classes, 1)
        self.relu = nn.ReLU()

    def size_rule(self) -> SizeRule:
        """Any size, but the ASPP's image-pooling BatchNorm sees one value a channel and image: batches of 2+."""
        return SizeRule(1, "any size: each level is resized to its ceil half",
                        pooled="the ASPP's image-pooling BatchNorm")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            raise ValueError("AutoDeepLab trains on batches of 2 or more images: the ASPP's image-pooling "
                             "BatchNorm sees one value a channel and image (as in the authors' DeepLab)")
        size = x.shape[2:]
        s0 = self.stem0(x)
        outputs = [s0, self.stem1(s0)]
        sizes = {0: outputs[-1].shape[2:]}
        for i, (cell, level) in enumerate(zip(self.cells, self.path)):
            if level not in sizes:
                sizes[level] = tuple((s + 1) // 2 for s in sizes[level - 1])
            outputs.append(cell(_resize(outputs[-1], sizes[level]) if i and level < self.path[i - 1]
                                else outputs[-1], outputs[-2], sizes[level]))
        h = self.relu(outputs[-1])
        branches = [branch(h) for branch in self.aspp] + [_resize(self.image_pool(h), h.shape[2:])]
        h = self.project(torch.cat(branches, dim=1))
        low = self.low_level(outputs[4])
        h = self.decoder(torch.cat([_resize(h, low.shape[2:]), low], dim=1))
        return _resize(self.logits(h), size)

