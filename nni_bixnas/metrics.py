"""IoU and Dice for binary and multi-class segmentation.

Two aggregations are offered:

- **per-image mean** (``iou``, ``dice``): every image scores on its own, then the scores are averaged.
  This is our headline number; it does not depend on the batch size.
- **batch-pooled** (``iou_batch_pooled``, ``dice_batch_pooled``): the authors' variant
  (BiX-NAS ``metrics.py``): the pixels of each ``update()`` batch are pooled, the foreground score is
  computed with their ``+1e-7`` epsilon, and the batch scores are averaged over batches.

Per class (:func:`iou_dice_per_class`, :meth:`SegmentationMetrics.compute_per_class`; e.g. the organs of
CHAOS, Table 2): each foreground class scored alone, per image, averaged over the images where the class
is in the prediction or the ground truth; also pooled over every pixel of every image.
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch

from nni_bixnas._checks import positive_int, probability

EPSILON = 1e-7  # the authors' epsilon, used only by the batch-pooled variant


def _check_args(num_classes: int, threshold: float) -> None:
    positive_int("num_classes", num_classes)
    probability("threshold", threshold)


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


def iou_dice_per_class(
    logits: torch.Tensor, target: torch.Tensor, num_classes: int = 1, threshold: float = 0.5
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IoU and Dice of every foreground class in every image, and where the class appears.

    Parameters
    ----------
    logits, target, num_classes, threshold
        As in :func:`iou_dice_per_image`.

    Returns
    -------
    tuple of torch.Tensor
        ``(iou, dice, present)``, each ``(B, K)`` with ``K = num_classes - 1`` columns for classes
        ``1..C-1`` (binary: ``K = 1``, the foreground); ``iou``/``dice`` float64, ``present`` bool: the
        class is in the prediction or the ground truth of that image. Where it is in neither, IoU and Dice
        are 1 (nothing to find, nothing found); where it is in exactly one of them, 0.
    """
    _check_args(num_classes, threshold)
    return _class_scores(*_counts(*_one_hot_pred_target(logits, target, num_classes, threshold)))


def _class_scores(inter: torch.Tensor, n_pred: torch.Tensor, n_true: torch.Tensor):
    """``(iou, dice, present)`` per (image, class) from :func:`_counts`."""
    total = n_pred + n_true
    present = total > 0
    iou = torch.where(present, inter / (total - inter).clamp(min=1), torch.ones_like(total))
    dice = torch.where(present, 2 * inter / total.clamp(min=1), torch.ones_like(total))
    return iou, dice, present


def _image_scores(iou: torch.Tensor, dice: torch.Tensor, present: torch.Tensor, num_classes: int):
    """Per-image ``(iou, dice)``: the binary score, or the mean over the classes present (1 if none)."""
    if num_classes == 1:
        return iou[:, 0], dice[:, 0]
    n_present = present.sum(1)
    mean_iou = torch.where(n_present > 0, (iou * present).sum(1) / n_present.clamp(min=1), 1.0)
    mean_dice = torch.where(n_present > 0, (dice * present).sum(1) / n_present.clamp(min=1), 1.0)
    return mean_iou.double(), mean_dice.double()


def _pooled_scores(inter: torch.Tensor, n_pred: torch.Tensor, n_true: torch.Tensor) -> Tuple[float, float]:
    """The authors' batch-pooled ``(iou, dice)`` from per-(image, class) :func:`_counts`."""
    inter, n_pred, n_true = inter.sum(0), n_pred.sum(0), n_true.sum(0)
    iou = inter / (n_true + n_pred - inter + EPSILON)
    dice = 2 * inter / (n_true + n_pred + EPSILON)
    return float(iou.mean()), float(dice.mean())


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
    return _image_scores(*iou_dice_per_class(logits, target, num_classes, threshold), num_classes)


def iou_dice_batch_pooled(
    logits: torch.Tensor, target: torch.Tensor, num_classes: int = 1, threshold: float = 0.5
) -> Tuple[float, float]:
    """The authors' batch score: pixels of the whole batch pooled, ``+1e-7`` epsilon.

    ``IoU = I / (|Y| + |P| - I + 1e-7)``, ``Dice = 2I / (|Y| + |P| + 1e-7)``. Multi-class: the mean over
    classes ``1..C-1`` of these pooled scores; as in their code a class absent from the whole batch
    scores 0 there (the epsilon makes ``0 / 1e-7 = 0``).
    """
    _check_args(num_classes, threshold)
    return _pooled_scores(*_counts(*_one_hot_pred_target(logits, target, num_classes, threshold)))


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
    the scores are NaN and ``images`` is 0. :meth:`compute_per_class` scores each foreground class alone.
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
        self._image_iou: List[float] = []
        self._batch_scores: List[Tuple[float, float]] = []
        classes = max(self.num_classes - 1, 1)
        # per foreground class: sums of per-image IoU and Dice where present, and that count ...
        self._class_sums = torch.zeros(3, classes, dtype=torch.float64)
        # ... and the pooled intersection and |P| + |Y| over every pixel
        self._class_pooled = torch.zeros(2, classes, dtype=torch.float64)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch of raw logits and targets (shapes as in :func:`iou_dice_per_image`)."""
        counts = _counts(*_one_hot_pred_target(logits, target, self.num_classes, self.threshold))
        class_iou, class_dice, present = _class_scores(*counts)
        iou, dice = _image_scores(class_iou, class_dice, present, self.num_classes)
        self._iou_sum += float(iou.sum())
        self._dice_sum += float(dice.sum())
        self._images += int(iou.numel())
        self._image_iou.extend(float(v) for v in iou.tolist())
        self._batch_scores.append(_pooled_scores(*counts))
        self._class_sums += torch.stack([(class_iou * present).sum(0), (class_dice * present).sum(0),
                                         present.sum(0, dtype=torch.float64)]).cpu()
        inter, n_pred, n_true = counts
        self._class_pooled += torch.stack([inter.sum(0), (n_pred + n_true).sum(0)]).cpu()

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

    def image_ious(self) -> List[float]:
        """Every image's IoU since the last :meth:`reset`, in update order (their mean is ``compute()['iou']``);
        for paired comparisons of models scored on the same images."""
        return list(self._image_iou)

    def compute_per_class(self) -> Dict[int, Dict[str, float]]:
        """Scores of each foreground class alone, accumulated since the last :meth:`reset`.

        Returns
        -------
        dict
            ``{class id: {'iou', 'dice', 'images', 'iou_pooled', 'dice_pooled'}}`` for classes ``1..C-1``
            (binary: ``{1: ...}``). ``iou``/``dice``: the mean of :func:`iou_dice_per_class` over the
            ``images`` where the class is in the prediction or the ground truth (NaN when in none);
            ``iou_pooled``/``dice_pooled``: ``I / (|P| + |Y| - I)`` and ``2I / (|P| + |Y|)`` over every pixel
            of every image (NaN when the class never appears). A binary image with an empty prediction and
            an empty ground truth is left out here, while :meth:`compute` scores it 1.
        """
        iou_sum, dice_sum, images = self._class_sums
        inter, total = self._class_pooled
        nan = float("nan")
        out = {}
        for k in range(iou_sum.numel()):
            n, t = int(images[k]), float(total[k])
            out[k + 1] = {
                "iou": float(iou_sum[k]) / n if n else nan,
                "dice": float(dice_sum[k]) / n if n else nan,
                "images": n,
                "iou_pooled": float(inter[k]) / (t - float(inter[k])) if t else nan,
                "dice_pooled": 2 * float(inter[k]) / t if t else nan,
            }
        return out
