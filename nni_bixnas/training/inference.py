"""Evaluate and predict with a checkpoint written by :func:`nni_bixnas.training.fit`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from nni_bixnas._checks import one_of, out_folder, probability
from nni_bixnas.metrics import SegmentationMetrics, iou_dice_per_image
from nni_bixnas.settings import check_setting
from nni_bixnas.training.checkpoint import load_task
from nni_bixnas.training.loop import torch_threads
from nni_bixnas.training.run_folder import RUN_NAME
from nni_bixnas.training.task import paint
from nni_bixnas.utils import PathLike, atomic_write

_log = logging.getLogger("nni_bixnas.training")

# Inputs are padded to a multiple of this before the forward pass (4 poolings of the BiO-Net family,
# with margin), then the output is cropped back.
_SIZE_MULTIPLE = 32
SPLITS = ("all", "val")


def default_device(device: Optional[Union[str, torch.device]]) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _progress(iterable, total: int, desc: str, unit: str, enabled: bool):
    """A tqdm bar on stderr (tqdm comes with NNI and Lightning), or ``iterable`` itself when disabled."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------------
# the run a checkpoint comes from


def run_config(checkpoint: PathLike) -> Optional[Dict[str, Any]]:
    """``run.json`` of the run folder holding ``checkpoint`` (``RUN/checkpoints/X.ckpt`` or ``RUN/X.ckpt``).

    Returns ``None`` when there is none or it is not a JSON object.
    """
    folder = Path(checkpoint).resolve().parent
    for path in (folder.parent / RUN_NAME, folder / RUN_NAME):
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        return config if isinstance(config, dict) else None
    return None


def _dataset_identity(spec: str):
    """What two specs naming the same images share: the scheme and its folders (``default``: seed and size)."""
    from nni_bixnas.data.spec import parse_data_spec
    from nni_bixnas.data.synthetic import DEFAULTS

    parsed = parse_data_spec(spec)
    if parsed.scheme == "default":
        options = {**DEFAULTS, **parsed.options}
        return ("default", options["seed"], options["size"]), options["n"]
    folders = tuple(str(p.resolve()) for p in (parsed.path, parsed.mask_path) if p is not None)
    return (parsed.scheme, *folders), None


def trained_sources(run: Optional[Dict[str, Any]], data_spec: str, sources: Sequence[str]) -> Optional[Set[str]]:
    """Which of ``sources`` (split units of ``data_spec``) the run of ``run.json`` ``run`` trained on.

    ``None`` when that cannot be told: no ``run.json``, or a run on other data (then none of them).
    """
    if not run or not isinstance(run.get("data"), str):
        return None
    try:
        (ours, _), (theirs, run_n) = _dataset_identity(data_spec), _dataset_identity(run["data"])
    except ValueError:
        return None
    if ours != theirs:
        return set()
    held_out = set(run.get("val_sources") or ())
    trained = {s for s in sources if s not in held_out}
    if run_n is not None:  # default data: the run had tiles 0..n-1 only
        trained = {s for s in trained if int(s.rsplit("_", 1)[1]) < run_n}
    return trained


def _training_warning(run: Dict[str, Any], trained: int, total: int, held_out: int) -> str:
    return (
        f"the score includes training images: {trained} of the {total} images evaluated are from the split "
        f"units the checkpoint was trained on (its {RUN_NAME}: data {run['data']!r}, split_seed "
        f"{run.get('split_seed')}), so it overestimates the accuracy on new images; score only the {held_out} "
        "held-out image(s) with --split val (split='val'), or evaluate on other data"
    )


# ---------------------------------------------------------------------------------------------------
# evaluate


def _item_name(ref) -> str:
    name = Path(ref.key).name if ("/" in ref.key or "\\" in ref.key) else ref.key
    return f"{name}@{ref.box[0]},{ref.box[1]}" if ref.box else name


def _eval_dataset(data_spec: str, resize, run: Optional[Dict[str, Any]], split: str):
    """``(dataset, info, trained sources or None)``; with ``split='val'`` only the held-out items."""
    from nni_bixnas.data import build_eval_dataset

    dataset, info = build_eval_dataset(data_spec, resize=resize)
    trained = trained_sources(run, data_spec, dataset.collection.sources)
    if split == "val":
        if not trained:
            raise ValueError(
                "split='val' (--split val) scores the images the checkpoint's run held out, but "
                + ("the checkpoint has no run.json beside it" if trained is None else
                   f"{data_spec!r} is not the data it was trained on ({run['data']!r})")
                + "; use split='all'"
            )
        dataset.refs = [r for r in dataset.refs if r.source not in trained]
        if not dataset.refs:
            raise ValueError(f"the checkpoint's run held out no images of {data_spec!r} (val_fraction 0?)")
    return dataset, info, trained


@torch.no_grad()
def score_dataset(task, dataset, batch_size: int, threshold: float, dev: torch.device, progress: bool = False):
    """``(metrics, per-image IoU list, per-image Dice list)`` of ``task`` over ``dataset`` in order (no
    augmentation; inputs padded to a multiple of 32 and the outputs cropped back): the one scoring loop of
    :func:`evaluate` and the cross-validation."""
    metrics = SegmentationMetrics(num_classes=task.num_classes, threshold=threshold)
    ious: List[float] = []
    dices: List[float] = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for images, target in _progress(loader, len(loader), "evaluate", "batch", progress):
        logits = _forward_padded(task, images.to(dev)).float().cpu()
        metrics.update(logits, target)
        iou, dice = iou_dice_per_image(logits, target, task.num_classes, threshold)
        ious += iou.tolist()
        dices += dice.tolist()
    return metrics, ious, dices


@torch.no_grad()
def evaluate(
    checkpoint: PathLike,
    data_spec: str,
    *,
    batch_size: int = 2,
    resize=None,
    threshold: Optional[float] = None,
    device: Optional[Union[str, torch.device]] = None,
    split: str = "all",
    progress: bool = False,
    num_threads: Optional[int] = None,
) -> Dict[str, object]:
    """IoU and Dice of a checkpoint on a whole dataset (no augmentation), in all and per image.

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
    split : {'all', 'val'}
        ``'val'``: only the images the checkpoint's run held out for validation (read from the
        ``run.json`` of its run folder; ``data_spec`` must be the data it was trained on).
    progress : bool
        A progress bar on stderr.
    num_threads : int, optional
        torch threads while scoring (restored afterwards); default torch's own.

    Returns
    -------
    dict
        ``iou``, ``dice`` (per-image means, the headline), ``iou_batch_pooled``, ``dice_batch_pooled``
        (the authors' variant), ``images``, ``per_image`` (``{'image', 'iou', 'dice', 'trained_on'}`` in
        dataset order; ``trained_on`` is ``None`` when unknown), ``training_images`` (how many of them the
        checkpoint was trained on, ``None`` when unknown) and ``warning`` (set when that is not 0, also
        logged), plus ``checkpoint``, ``data``, ``split``, ``model_name``, ``batch_size``.
    """
    check_setting("batch_size", batch_size)
    one_of("split", split, SPLITS)
    if threshold is not None:
        probability("threshold", threshold)
    task = load_task(checkpoint)
    run = run_config(checkpoint)
    dataset, info, trained = _eval_dataset(data_spec, resize, run, split)
    if info.num_classes != task.num_classes:
        raise ValueError(
            f"{data_spec!r} has {info.num_classes} class(es) but the checkpoint predicts {task.num_classes}"
        )
    channels = input_channels(task)
    if info.in_channels != channels:
        raise ValueError(f"{data_spec!r} has {info.in_channels}-channel images but the network of {checkpoint} "
                         f"takes {channels}-channel ones; expected data of {channels} channel(s)")
    dev = default_device(device)
    task.to(dev)
    threshold = task.threshold if threshold is None else threshold
    with torch_threads(num_threads):
        metrics, ious, dices = score_dataset(task, dataset, batch_size, threshold, dev, progress)
    scores = {k: (float(v) if k != "images" else int(v)) for k, v in metrics.compute().items()}
    seen = [None if trained is None else ref.source in trained for ref in dataset.refs]
    per_image = [{"image": _item_name(ref), "iou": iou, "dice": dice, "trained_on": flag}
                 for ref, iou, dice, flag in zip(dataset.refs, ious, dices, seen)]
    n_trained = None if trained is None else sum(bool(flag) for flag in seen)
    warning = _training_warning(run, n_trained, len(seen), len(seen) - n_trained) if n_trained else None
    if warning:
        _log.warning(warning)
    return {
        **scores,
        "checkpoint": str(checkpoint),
        "data": data_spec,
        "split": split,
        "model_name": task.hparams.get("model_name"),
        "batch_size": batch_size,
        "training_images": n_trained,
        "warning": warning,
        "per_image": per_image,
    }


def input_channels(task) -> int:
    """The image channels the network of a rebuilt checkpoint takes (its ``in_channels``; 3 by default)."""
    return int((task.hparams.get("model_kwargs") or {}).get("in_channels", getattr(task.model, "in_channels", 3)))


def _forward_padded(task, images: torch.Tensor) -> torch.Tensor:
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % _SIZE_MULTIPLE, (-width) % _SIZE_MULTIPLE
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        images = F.pad(images, (0, pad_w, 0, pad_h), mode=mode)
    return task(images)[..., :height, :width]


# ---------------------------------------------------------------------------------------------------
# predict: reading images and ground truth


def _read_image(path: Path, channels: int) -> torch.Tensor:
    from nni_bixnas.data.io import read_image

    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    array = read_image(path, channels)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _mask_files(gt: Path, paths: Sequence[Path]) -> Dict[Path, Path]:
    """Image -> mask file: ``gt`` itself for one image, else ``gt/<stem>.*`` or ``gt/<stem>_mask.*``; the images
    themselves are never their masks (images and masks may share one folder)."""
    from nni_bixnas.data.io import by_stem, list_images

    images = {p.resolve() for p in paths}
    if gt.is_file():
        if len(paths) != 1:
            raise ValueError(f"--gt {gt} is one mask file but {len(paths)} images were given; "
                             "give a folder of masks named like the images (or a data spec)")
        if gt.resolve() in images:
            raise ValueError(f"--gt {gt} is the image itself; expected its mask")
        return {paths[0]: gt}
    masks = by_stem([m for m in list_images(gt) if m.resolve() not in images])
    found = {p: masks.get(p.stem) or masks.get(f"{p.stem}_mask") for p in paths}
    missing = [p.name for p, m in found.items() if m is None]
    if missing:
        raise FileNotFoundError(f"no mask in {gt} for {', '.join(missing)} (expected <stem>.png or <stem>_mask.png, "
                                "or another image suffix)")
    return found


def _file_truth(path: Path, num_classes: int) -> np.ndarray:
    from nni_bixnas.data.io import binarize, describe_values, read_mask

    mask = read_mask(path)
    if num_classes == 1:
        return binarize(mask, path).astype(np.int64)
    if mask.min() < 0 or mask.max() >= num_classes:
        raise ValueError(f"mask {path} has values {describe_values(np.unique(mask))}; the checkpoint predicts "
                         f"classes 0..{num_classes - 1}")
    return mask


def _spec_truth(spec: str, paths: Sequence[Path]) -> Dict[Path, np.ndarray]:
    """The masks of a dataset (a data spec), matched to the images by file stem."""
    from nni_bixnas.data.build import load_collection

    collection = load_collection(spec)
    keys = {Path(ref.key).stem: ref.key for ref in collection.patches}
    missing = [p.name for p in paths if p.stem not in keys]
    if missing:
        raise ValueError(f"{spec!r} has no item named like {', '.join(missing)} (items are matched by file stem)")
    return {p: np.asarray(collection.load(keys[p.stem])[1], dtype=np.int64) for p in paths}


def ground_truth(gt: Optional[str], paths: Sequence[Path], num_classes: int) -> Dict[Path, np.ndarray]:
    """``{image: (H, W) int64 class ids}`` from ``gt``: a mask file (one image), a folder of masks named
    like the images, or a data spec (e.g. ``monuseg:PATH``) whose items are named like them."""
    if gt is None:
        return {}
    path = Path(gt).expanduser()
    if path.exists():
        return {image: _file_truth(mask, num_classes) for image, mask in _mask_files(path, paths).items()}
    from nni_bixnas.data.spec import SCHEMES

    if gt.partition(":")[0].lower() in SCHEMES:
        return _spec_truth(gt, paths)
    raise FileNotFoundError(f"--gt {gt}: no such mask file or folder, and not a data spec ({', '.join(SCHEMES)})")


# ---------------------------------------------------------------------------------------------------
# predict: pictures


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_write(path, "wb") as handle:
        Image.fromarray(array).save(handle, format="PNG")


def _to_uint8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def outline(classes: torch.Tensor) -> torch.Tensor:
    """``classes`` (``(H, W)`` ids) where a pixel of a class > 0 touches another class, else 0 (1-px contours)."""
    padded = F.pad(classes[None, None].float(), (1, 1, 1, 1), value=0.0)[0, 0]
    centre = padded[1:-1, 1:-1]
    edge = ((padded[:-2, 1:-1] != centre) | (padded[2:, 1:-1] != centre)
            | (padded[1:-1, :-2] != centre) | (padded[1:-1, 2:] != centre))
    return torch.where(edge & (classes > 0), classes, torch.zeros_like(classes))


def _foreground_probability(task, logits: torch.Tensor) -> torch.Tensor:
    """``(H, W)``: P(foreground) (binary), or 1 - P(background) (multi-class)."""
    if task.num_classes == 1:
        return torch.sigmoid(logits[0])
    return 1 - torch.softmax(logits, dim=0)[0]


def _highest_class_probability(task, logits: torch.Tensor) -> float:
    if task.num_classes == 1:
        return float(torch.sigmoid(logits[0]).max())
    return float(torch.softmax(logits, dim=0)[1:].max())


#: The captions of ``<stem>_gt_vs_pred.png``, left and right.
COMPARISON_CAPTIONS = ("ground truth", "prediction")


def _side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 4) -> np.ndarray:
    """``left | right`` under a white band captioned :data:`COMPARISON_CAPTIONS`."""
    from PIL import ImageDraw

    from nni_bixnas._drawing import readable_font, text_size

    spacer = np.full((left.shape[0], gap, 3), 255, dtype=np.uint8)
    body = np.concatenate([left, spacer, right], axis=1)
    font = readable_font(max(8, min(14, left.shape[1] // 8)))
    band = max(text_size(font, caption)[1] for caption in COMPARISON_CAPTIONS) + 8
    picture = Image.new("RGB", (body.shape[1], band + body.shape[0]), "white")
    picture.paste(Image.fromarray(body), (0, band))
    draw = ImageDraw.Draw(picture)
    for caption, x in zip(COMPARISON_CAPTIONS, (0, left.shape[1] + gap)):
        draw.text((x + 2, 2), caption, fill="black", font=font)
    return np.asarray(picture)


def _write_pictures(task, path: Path, out_dir: Path, image: torch.Tensor, logits: torch.Tensor,
                    classes: torch.Tensor, truth: Optional[np.ndarray], probabilities: bool) -> Dict[str, Path]:
    rgb = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
    overlay = _to_uint8(paint(rgb, classes))
    files = {"mask": (classes * 255 if task.num_classes == 1 else classes).numpy().astype(np.uint8),
             "overlay": overlay, "contours": _to_uint8(paint(rgb, outline(classes), alpha=1.0))}
    if probabilities:
        files["probabilities"] = (_foreground_probability(task, logits) * 255).round().byte().numpy()
    if truth is not None:
        files["comparison"] = _side_by_side(_to_uint8(paint(rgb, torch.from_numpy(truth))), overlay)
    suffix = {"probabilities": "prob", "comparison": "gt_vs_pred"}
    written = {}
    for kind, array in files.items():
        written[kind] = out_dir / f"{path.stem}_{suffix.get(kind, kind)}.png"
        _save_png(array, written[kind])
    return written


def _truth_scores(task, logits: torch.Tensor, truth: np.ndarray, path: Path) -> Dict[str, float]:
    if truth.shape != tuple(logits.shape[-2:]):
        raise ValueError(f"the ground truth of {path} is {truth.shape[1]}x{truth.shape[0]} (WxH) but the image is "
                         f"{logits.shape[-1]}x{logits.shape[-2]}")
    target = torch.from_numpy(truth)
    target = target[None, None].float() if task.num_classes == 1 else target[None]
    iou, dice = iou_dice_per_image(logits[None], target, task.num_classes, task.threshold)
    return {"iou": float(iou[0]), "dice": float(dice[0])}


def _predict_one(task, path: Path, out_dir: Path, dev: torch.device, truth: Optional[np.ndarray],
                 probabilities: bool) -> Dict[str, Any]:
    image = _read_image(path, input_channels(task))
    logits = _forward_padded(task, image[None].to(dev))[0].float().cpu()
    classes = task.class_map(logits)
    scores = _truth_scores(task, logits, truth, path) if truth is not None else {}
    entry: Dict[str, Any] = {"image": path}
    entry.update(_write_pictures(task, path, out_dir, image, logits, classes, truth, probabilities))
    entry.update(scores)
    entry["empty"] = not bool((classes > 0).any())
    entry["highest_probability"] = _highest_class_probability(task, logits)
    entry["threshold"] = task.threshold if task.num_classes == 1 else None  # multi-class: argmax
    return entry


@torch.no_grad()
def predict(
    checkpoint: PathLike,
    images: Sequence[PathLike],
    out_dir: PathLike,
    *,
    threshold: Optional[float] = None,
    device: Optional[Union[str, torch.device]] = None,
    probabilities: bool = False,
    gt: Optional[str] = None,
    progress: bool = False,
    num_threads: Optional[int] = None,
) -> List[Dict[str, Any]]:
    """Segment image files and write, for each ``<stem>``, into ``out_dir``:

    - ``<stem>_mask.png``: binary masks as 0/255, multi-class masks as class ids (0..C-1);
    - ``<stem>_overlay.png``: the predicted classes painted over the input;
    - ``<stem>_contours.png``: the outlines of the predicted regions over the input;
    - with ``probabilities``, ``<stem>_prob.png``: the foreground probability as 0..255 (multi-class:
      1 - P(background));
    - with ``gt``, ``<stem>_gt_vs_pred.png``: ground truth (left) beside the prediction (right), captioned so.

    Every file is written atomically.

    Parameters
    ----------
    gt : str, optional
        Ground truth: a mask file (for one image), a folder of masks named like the images
        (``<stem>.png`` or ``<stem>_mask.png``, any image suffix), or a data spec such as
        ``monuseg:PATH`` whose items are named like the images. Adds per-image IoU and Dice.
    progress : bool
        A progress bar on stderr.
    threshold, device, num_threads
        As in :func:`evaluate`.

    Returns
    -------
    list of dict
        One per image: ``image``, the paths written (``mask``, ``overlay``, ``contours``, and
        ``probabilities``, ``comparison`` when asked for), ``empty`` (no foreground pixel at the threshold),
        ``highest_probability`` (of a foreground class, anywhere), ``threshold`` (binary nets; ``None`` for
        multi-class ones, which take the most probable class), and ``iou``, ``dice`` with ``gt``.
    """
    paths = [Path(p) for p in images]
    if not paths:
        raise ValueError("no images given to predict")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"image(s) not found: {', '.join(missing)}")
    out_folder("out_dir (--out)", out_dir)
    if threshold is not None:
        probability("threshold", threshold)
    task = load_task(checkpoint)
    if threshold is not None:
        task.threshold = threshold
    truths = ground_truth(gt, paths, task.num_classes)
    dev = default_device(device)
    task.to(dev)
    with torch_threads(num_threads):
        return [_predict_one(task, path, Path(out_dir), dev, truths.get(path), probabilities)
                for path in _progress(paths, len(paths), "predict", "image", progress)]
