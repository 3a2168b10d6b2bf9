"""Evaluate and predict with a checkpoint written by :func:`nni_bixnas.training.fit`."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from nni_bixnas._checks import positive_int
from nni_bixnas.metrics import SegmentationMetrics
from nni_bixnas.training.checkpoint import load_task
from nni_bixnas.training.task import paint
from nni_bixnas.utils import PathLike, atomic_write

# Inputs are padded to a multiple of this before the forward pass (4 poolings of the BiO-Net family,
# with margin), then the output is cropped back.
_SIZE_MULTIPLE = 32


def _device(device: Optional[Union[str, torch.device]]) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def evaluate(
    checkpoint: PathLike,
    data_spec: str,
    *,
    batch_size: int = 2,
    resize=None,
    threshold: Optional[float] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> Dict[str, object]:
    """IoU and Dice of a checkpoint on a whole dataset (no augmentation).

    Parameters
    ----------
    checkpoint : path
        A ``.ckpt`` written by :func:`fit` (self-describing: the network is rebuilt from it).
    data_spec : str
        Any data spec, e.g. ``'tnbc:PATH'`` (every image is scored, see
        :func:`nni_bixnas.data.build_eval_dataset`).
    batch_size : int
        Batch size; only the batch-pooled variant depends on it (the authors used 2).
    resize : int or tuple, optional
        Resize every patch to this size before scoring (image bilinear, mask nearest); by default full
        patches are scored, as in training's validation.
    threshold : float, optional
        Binary threshold; default: the one the model was trained with.
    device : str, optional
        Default: CUDA if available, else CPU.

    Returns
    -------
    dict
        ``iou``, ``dice`` (per-image means, the headline), ``iou_batch_pooled``, ``dice_batch_pooled``
        (the authors' variant), ``images``, plus ``checkpoint``, ``data``, ``model_name``, ``batch_size``.
    """
    from nni_bixnas.data import build_eval_dataset

    positive_int("batch_size", batch_size)
    task = load_task(checkpoint)
    dataset, info = build_eval_dataset(data_spec, resize=resize)
    if info.num_classes != task.num_classes:
        raise ValueError(
            f"{data_spec!r} has {info.num_classes} class(es) but the checkpoint predicts {task.num_classes}"
        )
    dev = _device(device)
    task.to(dev)
    metrics = SegmentationMetrics(num_classes=task.num_classes, threshold=threshold or task.threshold)
    for images, target in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        metrics.update(_forward_padded(task, images.to(dev)).float().cpu(), target)
    scores = {k: (float(v) if k != "images" else int(v)) for k, v in metrics.compute().items()}
    return {
        **scores,
        "checkpoint": str(checkpoint),
        "data": data_spec,
        "model_name": task.hparams.get("model_name"),
        "batch_size": batch_size,
    }


def _forward_padded(task, images: torch.Tensor) -> torch.Tensor:
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % _SIZE_MULTIPLE, (-width) % _SIZE_MULTIPLE
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        images = F.pad(images, (0, pad_w, 0, pad_h), mode=mode)
    return task(images)[..., :height, :width]


def _read_image(path: Path, channels: int) -> torch.Tensor:
    from nni_bixnas.data.io import read_image

    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    array = read_image(path, channels)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_write(path, "wb") as handle:
        Image.fromarray(array).save(handle, format="PNG")


@torch.no_grad()
def predict(
    checkpoint: PathLike,
    images: Sequence[PathLike],
    out_dir: PathLike,
    *,
    threshold: Optional[float] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> List[Dict[str, Path]]:
    """Segment image files and write ``<stem>_mask.png`` and ``<stem>_overlay.png`` for each.

    Binary masks are written as 0/255; multi-class masks as class ids (0..C-1). The overlay paints
    the predicted classes over the input. Every file is written atomically.

    Returns
    -------
    list of dict
        ``{'image', 'mask', 'overlay'}`` paths, one per input image.
    """
    paths = [Path(p) for p in images]
    if not paths:
        raise ValueError("no images given to predict")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"image(s) not found: {', '.join(missing)}")
    task = load_task(checkpoint)
    if threshold is not None:
        task.threshold = threshold
    in_channels = int(task.hparams.get("model_kwargs", {}).get("in_channels", 3))
    dev = _device(device)
    task.to(dev)
    out_dir = Path(out_dir)
    written = []
    for path in paths:
        image = _read_image(path, in_channels)
        logits = _forward_padded(task, image[None].to(dev))[0].float().cpu()
        classes = task.class_map(logits)
        mask = (classes * 255 if task.num_classes == 1 else classes).numpy().astype(np.uint8)
        rgb = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
        overlay = (paint(rgb, classes).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        entry = {"image": path, "mask": out_dir / f"{path.stem}_mask.png",
                 "overlay": out_dir / f"{path.stem}_overlay.png"}
        _save_png(mask, entry["mask"])
        _save_png(overlay, entry["overlay"])
        written.append(entry)
    return written
