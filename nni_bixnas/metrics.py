"""IoU and Dice for binary and multi-class segmentation.

Two aggregations are offered:

- **per-image mean** (``iou``, ``dice``): every image scores on its own, then the scores are averaged.
  This is our headline number; it does not depend on the batch size.
- **batch-pooled** (``iou_batch_pooled``, ``dice_batch_pooled``): the authors' variant
  (BiX-NAS ``metrics.py``): the pixels of each ``update()`` batch are pooled, the foreground score is
  computed with their ``+1e-7`` epsilon, and the batch scores are averaged over batches.
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch

from nni_bixnas._checks import positive_int

EPSILON = 1e-7  # the authors' epsilon, used only by the batch-pooled variant


def _check_args(num_classes: int, threshold: float) -> None:
    positive_int("num_classes", num_classes)
    if not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be a probability in (0, 1), got {threshold!r}")


def _one_hot_pred_target(
    logits: torch.Tensor, target: torch.Tensor, num_classes: int, threshold: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return boolean ``(B, K, H*W)`` prediction and target, one row per scored class."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
        raise ValueError(f"logits must be a (B, C, H, W) tensor, got shape {tuple(getattr(logits, 'shape', ()))}")
    batch, channels, height, width = logits.shape
    if channels != num_classes:
        raise ValueError(f"logits have {channels} channels but num_classes={num_classes}")
    logits = logits.detach()
    target = target.detach()
    if num_classes == 1:
        if tuple(target.shape) != (batch, 1, height, width):
            raise ValueError(
                f"binary target must have shape {(batch, 1, height, width)} to match the logits, "
                f"got {tuple(target.shape)}"
            )
        # sigmoid(x) > t  <=>  x > logit(t); comparing logits avoids sigmoid saturation.
        cut = math.log(threshold / (1.0 - threshold))
        pred = (logits > cut).reshape(batch, 1, -1)
        truth = (target > 0.5).reshape(batch, 1, -1)
        return pred, truth
    if tuple(target.shape) != (batch, height, width):
        raise ValueError(
            f"multi-class target must have shape {(batch, height, width)} (int64 class ids), "
            f"got {tuple(target.shape)}"
        )
    if target.dtype.is_floating_point:
        raise ValueError(f"multi-class target must hold integer class ids, got dtype {target.dtype}")
    labels = logits.argmax(dim=1).reshape(batch, -1)
    target = target.reshape(batch, -1).long()
    classes = torch.arange(1, num_classes, device=labels.device).view(1, -1, 1)
    return labels.unsqueeze(1) == classes, target.unsqueeze(1) == classes


def _counts(pred: torch.Tensor, truth: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersection, |P| and |Y| per (image, class), as float64."""
    inter = (pred & truth).sum(-1, dtype=torch.float64)
    return inter, pred.sum(-1, dtype=torch.float64), truth.sum(-1, dtype=torch.float64)


def iou_dice_per_image(
    logits: torch.Tensor, target: torch.Tensor, num_classes: int = 1, threshold: float = 0.5
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Foreground IoU and Dice of every image in a batch.

    Parameters
    ----------
    logits : torch.Tensor
        Raw model output, ``(B, C, H, W)`` with ``C == num_classes``.
    target : torch.Tensor
        ``(B, 1, H, W)`` float in {0, 1} when ``num_classes == 1``, else ``(B, H, W)`` int64 class ids.
    num_classes : int
        1 for a binary task (sigmoid), or >= 2 (softmax/argmax; class 0 is background).
    threshold : float
        Binary only: a pixel is foreground when ``sigmoid(logit) > threshold``.

    Returns
    -------
    tuple of torch.Tensor
        ``(iou, dice)``, each float64 of shape ``(B,)``, on the logits' device.

    Notes
    -----
    Edge cases, per image and per class:

    - empty prediction **and** empty ground truth: IoU = Dice = 1 (nothing to find, nothing found);
    - exactly one of them empty: IoU = Dice = 0.

    Multi-class: IoU/Dice are computed for classes ``1..C-1`` (background ignored) and averaged over
    the classes present in the prediction or the ground truth of that image; a class absent from both
    is left out of the mean. If every class is absent the image scores 1.
    """
    _check_args(num_classes, threshold)
    pred, truth = _one_hot_pred_target(logits, target, num_classes, threshold)
    inter, n_pred, n_true = _counts(pred, truth)
    total = n_pred + n_true
    present = total > 0
    safe = total.clamp(min=1)
    iou = torch.where(present, inter / (total - inter).clamp(min=1), torch.ones_like(total))
    dice = torch.where(present, 2 * inter / safe, torch.ones_like(total))
    if num_classes == 1:
        return iou[:, 0], dice[:, 0]
    n_present = present.sum(1)
    mean_iou = torch.where(n_present > 0, (iou * present).sum(1) / n_present.clamp(min=1), 1.0)
    mean_dice = torch.where(n_present > 0, (dice * present).sum(1) / n_present.clamp(min=1), 1.0)
    return mean_iou.double(), mean_dice.double()


def iou_dice_batch_pooled(
    logits: torch.Tensor, target: torch.Tensor, num_classes: int = 1, threshold: float = 0.5
) -> Tuple[float, float]:
    """The authors' batch score: pixels of the whole batch pooled, ``+1e-7`` epsilon.

    ``IoU = I / (|Y| + |P| - I + 1e-7)``, ``Dice = 2I / (|Y| + |P| + 1e-7)``. Multi-class: the mean over
    classes ``1..C-1`` of these pooled scores; as in their code a class absent from the whole batch
    scores 0 there (the epsilon makes ``0 / 1e-7 = 0``).
    """
    _check_args(num_classes, threshold)
    pred, truth = _one_hot_pred_target(logits, target, num_classes, threshold)
    inter, n_pred, n_true = (c.sum(0) for c in _counts(pred, truth))
    iou = inter / (n_true + n_pred - inter + EPSILON)
    dice = 2 * inter / (n_true + n_pred + EPSILON)
    return float(iou.mean()), float(dice.mean())


class SegmentationMetrics:
    """Accumulates IoU and Dice over ``update()`` calls.

    Parameters
    ----------
    num_classes : int
        1 for binary segmentation (one logit channel), or >= 2 for background + ``C-1`` classes.
    threshold : float
        Binary only: probability above which a pixel is foreground.

    Examples
    --------
    >>> metrics = SegmentationMetrics()
    >>> metrics.update(model(images), masks)        # doctest: +SKIP
    >>> metrics.compute()['iou']                    # doctest: +SKIP

    Notes
    -----
    ``compute()`` returns a dict with ``iou`` and ``dice`` (mean over all images, see
    :func:`iou_dice_per_image` for edge cases), ``iou_batch_pooled`` and ``dice_batch_pooled`` (mean over
    ``update()`` batches of :func:`iou_dice_batch_pooled`) and ``images`` (the count). Before any update
    the scores are NaN and ``images`` is 0.
    """

    def __init__(self, num_classes: int = 1, threshold: float = 0.5):
        _check_args(num_classes, threshold)
        self.num_classes = num_classes
        self.threshold = float(threshold)
        self.reset()

    def reset(self) -> None:
        """Forget every update."""
        self._iou_sum = 0.0
        self._dice_sum = 0.0
        self._images = 0
        self._batch_scores: List[Tuple[float, float]] = []

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch of raw logits and targets (shapes as in :func:`iou_dice_per_image`)."""
        iou, dice = iou_dice_per_image(logits, target, self.num_classes, self.threshold)
        self._iou_sum += float(iou.sum())
        self._dice_sum += float(dice.sum())
        self._images += int(iou.numel())
        self._batch_scores.append(iou_dice_batch_pooled(logits, target, self.num_classes, self.threshold))

    def compute(self) -> Dict[str, float]:
        """Return the scores accumulated since the last :meth:`reset`."""
        if self._images == 0:
            nan = float("nan")
            return {"iou": nan, "dice": nan, "iou_batch_pooled": nan, "dice_batch_pooled": nan, "images": 0}
        batches = len(self._batch_scores)
        return {
            "iou": self._iou_sum / self._images,
            "dice": self._dice_sum / self._images,
            "iou_batch_pooled": sum(s[0] for s in self._batch_scores) / batches,
            "dice_batch_pooled": sum(s[1] for s in self._batch_scores) / batches,
            "images": self._images,
        }
