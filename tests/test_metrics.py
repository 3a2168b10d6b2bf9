"""Exact IoU/Dice values on tiny hand-made masks."""

from __future__ import annotations

import math

import pytest
import torch

from nni_bixnas.metrics import SegmentationMetrics, iou_dice_batch_pooled, iou_dice_per_image

EPS = 1e-7


def binary(*masks):
    """Binary logits/targets (B, 1, H, W) from nested lists; logits are +-4 per pixel."""
    t = torch.tensor(masks, dtype=torch.float32).unsqueeze(1)
    return t


def logits_of(*masks):
    return binary(*masks) * 8 - 4


def class_logits(labels, num_classes):
    """(B, C, H, W) logits whose argmax is ``labels``."""
    lab = torch.tensor(labels)
    return torch.nn.functional.one_hot(lab, num_classes).permute(0, 3, 1, 2).float() * 5


PER_IMAGE_CASES = [
    # [kwargs, logits, target, (iou, dice)]
    [{}, logits_of([[1, 0], [1, 0]]), binary([[1, 1], [0, 0]]), ([1 / 3], [1 / 2])],
    [{}, logits_of([[1, 1], [0, 0]]), binary([[1, 1], [0, 0]]), ([1.0], [1.0])],
    [{}, logits_of([[0, 0], [0, 0]]), binary([[1, 0], [0, 0]]), ([0.0], [0.0])],  # empty prediction
    [{}, logits_of([[0, 1], [0, 0]]), binary([[0, 0], [0, 0]]), ([0.0], [0.0])],  # empty ground truth
    [{}, logits_of([[0, 0], [0, 0]]), binary([[0, 0], [0, 0]]), ([1.0], [1.0])],  # both empty
    # threshold acts on probabilities: sigmoid(0.1) = 0.525
    [{"threshold": 0.5}, torch.full((1, 1, 2, 2), 0.1), binary([[1, 1], [1, 0]]), ([3 / 4], [6 / 7])],
    [{"threshold": 0.6}, torch.full((1, 1, 2, 2), 0.1), binary([[1, 1], [1, 0]]), ([0.0], [0.0])],
    # two images are scored separately
    [
        {},
        logits_of([[1, 1], [1, 1]], [[1, 0], [0, 0]]),
        binary([[1, 1], [1, 0]], [[1, 0], [0, 1]]),
        ([3 / 4, 1 / 2], [6 / 7, 2 / 3]),
    ],
    # multi-class: class 2 absent from prediction and ground truth -> left out of the mean
    [
        {"num_classes": 3},
        class_logits([[[0, 1], [0, 0]]], 3),
        torch.tensor([[[0, 1], [1, 0]]]),
        ([1 / 2], [2 / 3]),
    ],
    # multi-class: class 1 perfect, class 2 predicted but absent from the ground truth -> 0
    [
        {"num_classes": 3},
        class_logits([[[1, 2], [0, 0]]], 3),
        torch.tensor([[[1, 0], [0, 0]]]),
        ([1 / 2], [1 / 2]),
    ],
    # multi-class: only background everywhere -> 1
    [{"num_classes": 3}, class_logits([[[0, 0], [0, 0]]], 3), torch.zeros(1, 2, 2, dtype=torch.long), ([1.0], [1.0])],
    # num_classes=2 is background + one class
    [{"num_classes": 2}, class_logits([[[1, 1], [0, 0]]], 2), torch.tensor([[[1, 0], [0, 0]]]), ([1 / 2], [2 / 3])],
]


@pytest.mark.parametrize("kwargs, logits, target, expected", PER_IMAGE_CASES)
def test_iou_dice_per_image(kwargs, logits, target, expected):
    iou, dice = iou_dice_per_image(logits, target, **kwargs)
    assert iou.shape == dice.shape == (logits.shape[0],)
    assert iou.tolist() == pytest.approx(expected[0], abs=1e-12)
    assert dice.tolist() == pytest.approx(expected[1], abs=1e-12)


BATCH_POOLED_CASES = [
    # [kwargs, logits, target, (iou, dice)] with the authors' epsilon
    # image 1: GT 1 px, empty prediction (per-image 0); image 2: perfect 4 px (per-image 1)
    [
        {},
        logits_of([[0, 0], [0, 0]], [[1, 1], [1, 1]]),
        binary([[1, 0], [0, 0]], [[1, 1], [1, 1]]),
        (4 / (5 + 4 - 4 + EPS), 8 / (5 + 4 + EPS)),
    ],
    # both empty: the epsilon makes it 0 (per-image would say 1)
    [{}, logits_of([[0, 0], [0, 0]]), binary([[0, 0], [0, 0]]), (0.0, 0.0)],
    # multi-class: class 2 absent from the batch scores 0 in the authors' mean
    [
        {"num_classes": 3},
        class_logits([[[0, 1], [0, 0]]], 3),
        torch.tensor([[[0, 1], [1, 0]]]),
        ((1 / (2 + EPS) + 0.0) / 2, (2 / (3 + EPS) + 0.0) / 2),
    ],
]


@pytest.mark.parametrize("kwargs, logits, target, expected", BATCH_POOLED_CASES)
def test_iou_dice_batch_pooled(kwargs, logits, target, expected):
    iou, dice = iou_dice_batch_pooled(logits, target, **kwargs)
    assert iou == pytest.approx(expected[0], abs=1e-12)
    assert dice == pytest.approx(expected[1], abs=1e-12)


def test_accumulator_per_image_vs_batch_pooled():
    metrics = SegmentationMetrics()
    # batch 1: per image 0 and 1, pooled 4/5
    metrics.update(logits_of([[0, 0], [0, 0]], [[1, 1], [1, 1]]), binary([[1, 0], [0, 0]], [[1, 1], [1, 1]]))
    # batch 2: one image, IoU 1/3, Dice 1/2
    metrics.update(logits_of([[1, 0], [1, 0]]), binary([[1, 1], [0, 0]]))
    out = metrics.compute()
    assert out["images"] == 3
    assert out["iou"] == pytest.approx((0 + 1 + 1 / 3) / 3, abs=1e-12)
    assert out["dice"] == pytest.approx((0 + 1 + 1 / 2) / 3, abs=1e-12)
    assert out["iou_batch_pooled"] == pytest.approx((4 / (5 + EPS) + 1 / (3 + EPS)) / 2, abs=1e-12)
    assert out["dice_batch_pooled"] == pytest.approx((8 / (9 + EPS) + 2 / (4 + EPS)) / 2, abs=1e-12)
    assert out["iou"] != pytest.approx(out["iou_batch_pooled"])
    assert metrics.image_ious() == pytest.approx([0, 1, 1 / 3], abs=1e-12)  # in update order; mean = iou
    metrics.reset()
    empty = metrics.compute()
    assert empty["images"] == 0 and math.isnan(empty["iou"]) and metrics.image_ious() == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        [{"num_classes": 0}, "num_classes"],
        [{"num_classes": 1.5}, "num_classes"],
        [{"threshold": 1.0}, "threshold"],
        [{"threshold": 0}, "threshold"],
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SegmentationMetrics(**kwargs)


@pytest.mark.parametrize(
    "kwargs, logits, target, match",
    [
        [{}, torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2), "channels"],
        [{}, torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2), "binary target"],
        [{"num_classes": 3}, torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long), "multi-class target"],
        [{"num_classes": 3}, torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2), "integer"],
        [{}, torch.zeros(2, 2), torch.zeros(2, 2), r"\(B, C, H, W\)"],
    ],
)
def test_invalid_shapes(kwargs, logits, target, match):
    with pytest.raises(ValueError, match=match):
        SegmentationMetrics(**kwargs).update(logits, target)
