"""From a spec string to train/validation datasets, an evaluation dataset, or an inspection report."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from nni_bixnas._checks import is_int
from nni_bixnas.settings import check_setting

from .augment import AugmentedDataset
from .collection import Collection, PatchDataset, PatchSize, normalize_size
from .spec import parse_data_spec

# scheme -> (module, function(spec, strict) -> Collection); imported lazily (CHAOS needs pydicom).
_LOADERS = {
    "monuseg": ("nni_bixnas.data.monuseg", "load_monuseg"),
    "tnbc": ("nni_bixnas.data.tnbc", "load_tnbc"),
    "chaos": ("nni_bixnas.data.chaos", "load_chaos"),
    "isbi2012": ("nni_bixnas.data.isbi2012", "load_isbi2012"),
    "folder": ("nni_bixnas.data.folder", "load_folder"),
}
KFOLD_SCHEMES = ("chaos",)  # split by k-fold cross-validation over patients instead of val_fraction


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a report need to know about the data.

    Attributes
    ----------
    name : str
        Scheme of the dataset (``monuseg``, ``default``, ...).
    in_channels, num_classes : int
        Model input channels; 1 for binary masks, else the number of classes including background.
    image_size : tuple of int
        ``(H, W)`` of every validation item (after ``resize``): full patches, e.g. 512x512 for MoNuSeg.
    n_source_items : int
        Source images / volumes found (e.g. 30 MoNuSeg tiles).
    n_train, n_val : int
        Patches in each split.
    train_sources, val_sources : tuple of str
        The split units (tiles, slides, patients) in each split.
    class_names : tuple of str
    spec : str
        The spec string the datasets were built from.
    crop_size : tuple of int or None
        ``(H, W)`` of the random training crops (``patch_size``); ``None`` when training on whole items.
    split_seed : int
        Seed of the train/validation split (or of the cross-validation folds).
    masks : str or None
        Which MoNuSeg masks were used, ``"png"`` or ``"xml"``; ``None`` for other schemes.
    """

    name: str
    in_channels: int
    num_classes: int
    image_size: Tuple[int, int]
    n_source_items: int
    n_train: int
    n_val: int
    train_sources: Tuple[str, ...] = ()
    val_sources: Tuple[str, ...] = ()
    class_names: Tuple[str, ...] = ("background", "foreground")
    spec: str = ""
    crop_size: Optional[Tuple[int, int]] = None
    split_seed: int = 0
    masks: Optional[str] = None


def load_collection(spec: str, strict: bool = True) -> Collection:
    """Discover a dataset. ``strict=False`` records per-file problems and drops those files."""
    parsed = parse_data_spec(spec)
    if parsed.scheme == "default":
        from .synthetic import load_default

        return load_default(parsed.options)
    module, function = _LOADERS[parsed.scheme]
    return getattr(importlib.import_module(module), function)(parsed, strict=strict)


def split_sources(sources: Sequence[str], val_fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """Seeded split of split units: ``round(val_fraction * n)`` of them, at least 1, at most n-1.

    ``seed`` is the ``split_seed`` of :func:`build_datasets`; the result depends on nothing else.
    """
    check_setting("val_fraction", val_fraction)
    sources = sorted(sources)
    if val_fraction == 0:
        return sources, []
    if len(sources) < 2:
        raise ValueError(
            f"cannot split {len(sources)} source item(s) into train and validation; "
            "use val_fraction=0 or build_eval_dataset"
        )
    n_val = min(max(1, round(val_fraction * len(sources))), len(sources) - 1)
    order = np.random.default_rng(seed).permutation(len(sources))
    val = sorted(sources[i] for i in order[:n_val])
    return [s for s in sources if s not in set(val)], val


def _check_fold(fold: int, n_folds: int) -> None:
    if not is_int(n_folds) or n_folds < 2:
        raise ValueError(f"n_folds must be an int >= 2, got {n_folds!r}")
    if not is_int(fold) or not 0 <= fold < n_folds:
        raise ValueError(f"fold must be an int in [0, {n_folds}), got {fold!r}")


def kfold_sources(sources: Sequence[str], fold: int, n_folds: int, seed: int) -> Tuple[List[str], List[str]]:
    """Fold ``fold`` of a seeded ``n_folds``-fold cross-validation over split units."""
    _check_fold(fold, n_folds)
    sources = sorted(sources)
    if len(sources) < n_folds:
        raise ValueError(f"{n_folds}-fold cross-validation needs at least {n_folds} patients, found {len(sources)}")
    order = np.random.default_rng(seed).permutation(len(sources))
    val = sorted(sources[i] for i in order[fold::n_folds])
    return [s for s in sources if s not in set(val)], val


def _image_size(collection: Collection, resize: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    if resize:
        return resize
    size = collection.image_size()
    if size is None:
        sizes = sorted({collection.patch_shape(ref) for ref in collection.patches})
        raise ValueError(f"{collection.name} items have different sizes {sizes[:4]}; pass resize to resize them")
    return size


def _check_crop(crop: Optional[Tuple[int, int]], size: Tuple[int, int], collection: Collection, resized: bool) -> None:
    if crop and (crop[0] > size[0] or crop[1] > size[1]):
        after = " after resize" if resized else ""
        raise ValueError(
            f"patch_size {crop} is larger than the {collection.name} items, which are {size}{after}; "
            f"use a patch_size of at most {size}"
        )


def build_datasets(
    spec: str,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    split_seed: int = 0,
    patch_size: PatchSize = None,
    resize: PatchSize = None,
    augment: bool = True,
    fold: int = 0,
    n_folds: int = 5,
):
    """Training and validation datasets, split by source item (tile, slide or patient), never by patch.

    Parameters
    ----------
    spec : str
        A data spec (see :func:`parse_data_spec`).
    val_fraction : float
        Fraction of source items held out for validation (not used by ``chaos``).
    seed : int
        Seeds the shuffling, the augmentation and the training crops (not the split).
    split_seed : int
        Seeds the train/validation split (``chaos``: the folds), so that runs with different ``seed``
        validate on the same source items.
    patch_size : int or tuple of int, optional
        Training items are random crops of this size, cut after the augmentation at an offset drawn
        from ``(seed, epoch, index)``; validation items stay full patches.
    resize : int or tuple of int, optional
        Resize every patch, training and validation, to this size (image bilinear antialiased, mask
        nearest), before any crop.
    augment : bool
        Augment the training items (:mod:`nni_bixnas.data.augment`).
    fold, n_folds : int
        ``chaos`` only: the cross-validation fold, split by patient.

    Returns
    -------
    tuple
        ``(train_ds, val_ds, info)``: ``train_ds`` is an :class:`AugmentedDataset` (``set_epoch``),
        ``val_ds`` a plain :class:`PatchDataset`, ``info`` a :class:`DatasetInfo`.

    Raises
    ------
    ValueError
        For a bad argument, items of different sizes without ``resize``, or a ``patch_size`` larger
        than the items.
    """
    crop, resize = normalize_size(patch_size, "patch_size"), normalize_size(resize, "resize")
    check_setting("val_fraction", val_fraction)
    _check_fold(fold, n_folds)
    check_setting("seed", seed)
    check_setting("split_seed", split_seed)
    collection = load_collection(spec)
    if collection.name in KFOLD_SCHEMES:
        train_src, val_src = kfold_sources(collection.sources, fold, n_folds, split_seed)
    else:
        train_src, val_src = split_sources(collection.sources, val_fraction, split_seed)
    image_size = _image_size(collection, resize)
    _check_crop(crop, image_size, collection, resized=resize is not None)
    train_set, val_set = set(train_src), set(val_src)
    train = PatchDataset(collection, [r for r in collection.patches if r.source in train_set], resize)
    val = PatchDataset(collection, [r for r in collection.patches if r.source in val_set], resize)
    info = DatasetInfo(
        name=collection.name,
        in_channels=collection.in_channels,
        num_classes=collection.num_classes,
        image_size=image_size,
        n_source_items=collection.n_items,
        n_train=len(train),
        n_val=len(val),
        train_sources=tuple(train_src),
        val_sources=tuple(val_src),
        class_names=collection.class_names,
        spec=spec,
        crop_size=crop,
        split_seed=split_seed,
        masks=collection.masks,
    )
    return AugmentedDataset(train, seed=seed, augment=augment, crop=crop), val, info


def build_eval_dataset(spec: str, *, resize: PatchSize = None):
    """The whole dataset, unaugmented and uncropped (e.g. evaluate a MoNuSeg-trained model on TNBC).

    Parameters
    ----------
    spec : str
        A data spec (see :func:`parse_data_spec`).
    resize : int or tuple of int, optional
        Resize every patch to this size; by default full patches are scored.

    Returns
    -------
    tuple
        ``(dataset, info)`` with every patch in ``dataset`` and ``info.n_val == len(dataset)``.
    """
    resize = normalize_size(resize, "resize")
    collection = load_collection(spec)
    dataset = PatchDataset(collection, collection.patches, resize)
    info = DatasetInfo(
        name=collection.name,
        in_channels=collection.in_channels,
        num_classes=collection.num_classes,
        image_size=_image_size(collection, resize),
        n_source_items=collection.n_items,
        n_train=0,
        n_val=len(dataset),
        val_sources=tuple(collection.sources),
        class_names=collection.class_names,
        spec=spec,
        masks=collection.masks,
    )
    return dataset, info


def inspect_dataset(spec: str) -> Dict:
    """Decode every item of a dataset and report what is there and what is wrong.

    Returns
    -------
    dict
        ``name``, ``spec``, ``tiles`` (source images/volumes), ``patches``, ``image_size`` (``[H, W]`` or
        ``None`` if sizes differ), ``channels``, ``classes``, ``class_names``, ``masks`` (MoNuSeg:
        ``"png"`` or ``"xml"``, the masks used; else ``None``), ``foreground_fraction`` (foreground
        pixels / all pixels over all patches; per class for multi-class data), ``problems``
        (strings: files skipped and why, e.g. unreadable files, bad masks, NaN/inf pixels with their
        count) and ``dropped`` (how many items those problems left out; a CHAOS series counts as one).

    Raises
    ------
    FileNotFoundError, ValueError
        Only when nothing usable is found (missing path, empty folder, bad spec).
    """
    collection = load_collection(spec, strict=False)
    problems = list(collection.problems)
    counts = np.zeros(max(collection.num_classes, 2), dtype=np.int64)
    patches = 0
    failed = set()
    for ref in collection.patches:
        if ref.key in failed:
            continue
        try:
            _, mask = collection.load(ref.key)
        except ValueError as err:
            problems.append(str(err))
            failed.add(ref.key)
            continue
        if ref.box:
            top, left, height, width = ref.box
            mask = mask[top : top + height, left : left + width]
        counts += np.bincount(mask.ravel(), minlength=len(counts))[: len(counts)]
        patches += 1
    total = max(int(counts.sum()), 1)
    if collection.num_classes == 1:
        fraction = counts[1] / total
    else:
        fraction = {name: float(counts[c] / total) for c, name in enumerate(collection.class_names) if c > 0}
    dropped = len(collection.problems) + len(failed)
    size = collection.image_size()
    if size is None and collection.patches:
        problems.append("items have different sizes; pass resize when building datasets")
    return {
        "name": collection.name,
        "spec": spec,
        "tiles": collection.n_items,
        "patches": patches,
        "image_size": list(size) if size else None,
        "channels": collection.in_channels,
        "classes": collection.num_classes,
        "class_names": list(collection.class_names),
        "masks": collection.masks,
        "foreground_fraction": fraction if isinstance(fraction, dict) else float(fraction),
        "problems": problems,
        "dropped": dropped,
    }
