"""The one Lightning module for segmentation: loss, optimiser, schedule, validation metrics."""

from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Union

import pytorch_lightning as pl
import torch
import torch.nn as nn

from nni_bixnas._checks import positive_int
from nni_bixnas.metrics import SegmentationMetrics
from nni_bixnas.settings import check_setting
from nni_bixnas.training.distributed import reduce_metrics, unpadded, world_size

_log = logging.getLogger(__name__)

#: Metric keys that :class:`SegmentationTask` logs after every validation epoch.
VAL_METRICS = ("val_iou", "val_dice", "val_iou_batch_pooled", "val_dice_batch_pooled", "val_loss")

# Overlay colours (RGB in [0, 1]) per class id; class 1 of a binary task is drawn in the first one.
_PALETTE = torch.tensor(
    [[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.4, 1.0], [1.0, 1.0, 0.2], [1.0, 0.2, 1.0], [0.2, 1.0, 1.0]]
)


def _create_model(name: str, **kwargs) -> nn.Module:
    from nni_bixnas.models import create_model

    return create_model(name, **kwargs)


def describe_model(model: nn.Module):
    from nni_bixnas.models import describe_model as describe

    return describe(model)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, num_classes: int = 1) -> torch.Tensor:
    """``1 -`` the soft Dice of the foreground, per image (and class, background excluded), averaged.

    ``logits`` ``(B, C, H, W)``; ``target`` ``(B, 1, H, W)`` in {0, 1} for one class, ``(B, H, W)`` class ids
    for several. Smoothed by 1 in numerator and denominator, so an image without foreground that the net
    predicts empty scores 1 (computed in float32).
    """
    if num_classes == 1:
        prob, truth = torch.sigmoid(logits.float()), target.float()
    else:
        prob = torch.softmax(logits.float(), dim=1)[:, 1:]
        truth = nn.functional.one_hot(target.long(), num_classes).permute(0, 3, 1, 2)[:, 1:].float()
    overlap = (prob * truth).sum(dim=(2, 3))
    total = prob.sum(dim=(2, 3)) + truth.sum(dim=(2, 3))
    return 1.0 - ((2.0 * overlap + 1.0) / (total + 1.0)).mean()


class SegmentationTask(pl.LightningModule):
    """Train and validate one segmentation network the way the BiX-NAS authors do.

    Adam over **all** ``model.parameters()`` (so learnable architecture matrices inside a supernet are
    optimised jointly with the weights), an inverse-time learning-rate decay
    ``lr / (1 + lr_decay * epoch)`` stepped once per epoch, ``BCEWithLogitsLoss`` for one class and
    ``CrossEntropyLoss`` for several (``loss='ce'``; ``'dice_ce'`` adds :func:`soft_dice_loss`). Validation
    accumulates :class:`~nni_bixnas.metrics.SegmentationMetrics` and logs ``val_iou``, ``val_dice``,
    ``val_iou_batch_pooled``, ``val_dice_batch_pooled`` and ``val_loss``.

    Parameters
    ----------
    model : torch.nn.Module or str
        The network (returns logits ``(B, num_classes, H, W)``), or a registry name built with
        ``nni_bixnas.create_model(model, **model_kwargs)``.
    num_classes : int
        1 for binary segmentation, otherwise the number of classes including background.
    lr : float
        Adam learning rate (authors: 1e-3).
    lr_decay : float
        Inverse-time decay per epoch (authors: 3e-3).
    threshold : float
        Binary decision threshold on the sigmoid probability, used by the metrics and overlays.
    log_images : int
        How many validation images to draw (image / ground truth / prediction) to TensorBoard each epoch.
    model_name : str, optional
        Registry name of ``model`` when it is a module; stored so that checkpoints can be rebuilt.
    model_kwargs : dict, optional
        Keyword arguments of ``create_model`` (plain JSON-able values, e.g. ``width``, ``gene`` text).
    loss : str
        ``'ce'`` (default, the authors': binary or multi-class cross-entropy) or ``'dice_ce'`` (that plus the
        soft Dice loss of the foreground; cross-entropy alone first learns the class prior, and short
        trainings of small nets can end there, predicting all background).

    Notes
    -----
    Subclasses (the search phases) may override :meth:`compute_loss`, :meth:`training_step`,
    :meth:`validation_step` or switch to manual optimisation; validation metrics are gathered by
    :meth:`update_metrics` and published in :meth:`on_validation_epoch_end`, and the values of the last
    validation epoch stay available in :attr:`last_val_metrics`.
    """

    #: Hyper-parameters that :func:`nni_bixnas.training.load_task` passes back to ``__init__``.
    REBUILD_ARGS = ("num_classes", "lr", "lr_decay", "threshold", "log_images", "loss")

    def __init__(
        self,
        model: Union[nn.Module, str],
        num_classes: int = 1,
        lr: float = 1e-3,
        lr_decay: float = 3e-3,
        threshold: float = 0.5,
        log_images: int = 4,
        model_name: Optional[str] = None,
        model_kwargs: Optional[Mapping[str, Any]] = None,
        loss: str = "ce",
    ) -> None:
        super().__init__()
        positive_int("num_classes", num_classes)
        self.loss_kind = check_setting("loss", loss)
        if not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if not isinstance(lr_decay, (int, float)) or lr_decay < 0:
            raise ValueError(f"lr_decay must be a non-negative number, got {lr_decay!r}")
        if not isinstance(log_images, int) or log_images < 0:
            raise ValueError(f"log_images must be a non-negative int, got {log_images!r}")
        # A Gene object is stored as its text, so that hyper-parameters stay plain and readable.
        model_kwargs = {k: v.to_text() if hasattr(v, "to_text") else v for k, v in (model_kwargs or {}).items()}
        if isinstance(model, str):
            if model_name is not None and model_name != model:
                raise ValueError(f"model is the name {model!r} but model_name is {model_name!r}")
            model_name = model
            model_kwargs.setdefault("num_classes", num_classes)
            model = _create_model(model_name, **model_kwargs)
        elif not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module or a registry name, got {type(model).__name__}")
        elif model_name is None and describe_model(model) is not None:
            model_name, described = describe_model(model)  # e.g. a searched BiO-Net++ -> 'bixnet' + gene
            model_kwargs = {**described, **model_kwargs}
        if model_kwargs.get("num_classes", num_classes) != num_classes:
            raise ValueError(
                f"model_kwargs['num_classes']={model_kwargs['num_classes']} but the task has num_classes={num_classes}"
            )
        self.model = model
        self.num_classes = num_classes
        self.lr = float(lr)
        self.lr_decay = float(lr_decay)
        self.threshold = threshold
        self.log_images = log_images
        self.save_hyperparameters(
            {
                "model_name": model_name,
                "model_kwargs": model_kwargs,
                "num_classes": num_classes,
                "lr": self.lr,
                "lr_decay": self.lr_decay,
                "threshold": threshold,
                "log_images": log_images,
                "loss": self.loss_kind,
            }
        )
        self.criterion = nn.BCEWithLogitsLoss() if num_classes == 1 else nn.CrossEntropyLoss()
        self.val_metrics = SegmentationMetrics(num_classes=num_classes, threshold=threshold)
        self.last_val_metrics: Dict[str, float] = {}
        self._val_loss_sum = 0.0
        self._val_count = 0
        self._val_samples: list = []

    # -- forward, loss, optimisation ---------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of raw logits against a target in the project's tensor convention (docs/DESIGN.md)."""
        if self.num_classes == 1:
            ce = self.criterion(logits, target.to(logits.dtype))
        else:
            ce = self.criterion(logits, target.long())
        return ce if self.loss_kind == "ce" else ce + soft_dice_loss(logits, target, self.num_classes)

    def compute_loss(self, batch) -> torch.Tensor:
        """Training loss of one ``(images, masks)`` batch."""
        images, target = batch
        return self.loss(self(images), target)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.compute_loss(batch)
        self.log("train_loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch[0]))
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        decay = self.lr_decay
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0 / (1.0 + decay * epoch))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # -- validation -------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()
        self._val_loss_sum, self._val_count, self._val_samples = 0.0, 0, []
        self._val_position = 0

    def real_part(self, images: torch.Tensor, target: torch.Tensor):
        """A validation batch without the samples ``DistributedSampler`` repeats to give every rank as many
        (all of it on one device), so that every validation image counts once over the ranks."""
        if world_size() == 1:
            return images, target
        loaders = getattr(self._trainer, "val_dataloaders", None)
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        keep = unpadded(getattr(loader, "sampler", None), self._val_position, len(images))
        self._val_position += len(images)
        return images[:keep], target[:keep]

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, target = self.real_part(*batch)
        if len(images) == 0:
            return None
        logits = self(images)
        loss = self.loss(logits, target)
        self.update_metrics(logits, target, loss, images)
        return loss

    def update_metrics(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor, images=None) -> None:
        """Accumulate one validation batch (metrics, mean loss, a few images for TensorBoard)."""
        self.val_metrics.update(logits.float(), target)
        self._val_loss_sum += float(loss) * len(logits)
        self._val_count += len(logits)
        if images is not None and len(self._val_samples) < self.log_images:
            keep = self.log_images - len(self._val_samples)
            for img, tgt, lgt in zip(images[:keep], target[:keep], logits[:keep]):
                self._val_samples.append((img.detach().float().cpu(), tgt.detach().cpu(), lgt.detach().float().cpu()))

    def on_validation_epoch_end(self) -> None:
        if world_size() > 1:  # every rank scored its shard: the counts of the whole validation set
            self._val_loss_sum, count = reduce_metrics([self.val_metrics], [self._val_loss_sum, self._val_count],
                                                       device=self.device)
            self._val_count = int(count)
        if self._val_count == 0:
            return
        scores = self.val_metrics.compute()
        values = {
            "val_iou": scores["iou"],
            "val_dice": scores["dice"],
            "val_iou_batch_pooled": scores["iou_batch_pooled"],
            "val_dice_batch_pooled": scores["dice_batch_pooled"],
            "val_loss": self._val_loss_sum / self._val_count,
        }
        self.last_val_metrics = {k: float(v) for k, v in values.items()}
        # data-parallel: the values are already those of every rank (sync_dist averages equal values)
        self.log_dict({k: float(v) for k, v in values.items()}, prog_bar=False, sync_dist=world_size() > 1)
        self._log_overlays()

    # -- TensorBoard images -----------------------------------------------------------------------
    def _log_overlays(self) -> None:
        writer = getattr(self.logger, "experiment", None)
        if not self._val_samples or not hasattr(writer, "add_image") or self.trainer.sanity_checking:
            return
        rows = [torch.cat(self.overlay_panels(img, tgt, lgt), dim=2) for img, tgt, lgt in self._val_samples]
        grid = torch.cat(rows, dim=1).clamp(0, 1)
        writer.add_image("val/image_gt_prediction", grid, global_step=self.current_epoch)

    def class_map(self, logits: torch.Tensor) -> torch.Tensor:
        """Integer class map ``(..., H, W)`` from logits ``(..., C, H, W)``."""
        if self.num_classes == 1:
            return (torch.sigmoid(logits[..., 0, :, :]) > self.threshold).long()
        return logits.argmax(dim=-3)

    def overlay_panels(self, image: torch.Tensor, target: torch.Tensor, logits: torch.Tensor):
        """``[image, ground truth overlay, prediction overlay]`` as RGB ``(3, H, W)`` tensors in [0, 1]."""
        rgb = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
        truth = (target[0] > 0.5).long() if self.num_classes == 1 else target.long()
        return [rgb, paint(rgb, truth), paint(rgb, self.class_map(logits))]


def paint(rgb: torch.Tensor, classes: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Blend class colours over an RGB image ``(3, H, W)`` where ``classes > 0``."""
    colours = _PALETTE.to(classes.device)[(classes.clamp(min=1) - 1) % len(_PALETTE)].permute(2, 0, 1)
    mask = (classes > 0).unsqueeze(0).to(rgb.dtype)
    return rgb * (1 - alpha * mask) + colours * alpha * mask
