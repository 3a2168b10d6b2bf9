"""``TrainingSettings``: the one frozen, validated object of training settings.

The CLI, the evaluator (:func:`~nni_bixnas.training.train_and_score`), the strategies, their units,
:func:`~nni_bixnas.training.fit` and :class:`~nni_bixnas.data.SegDataModule` take the settings of one
training run as this object; across the NNI boundary (a unit's keyword arguments are its trial
parameters) it travels as :meth:`TrainingSettings.to_dict` and is rebuilt with
:meth:`TrainingSettings.from_mapping`. Every setting's rule is here, once (:data:`SETTING_CHECKS`): the
modules that take one of these values alone (``build_datasets``, ``bixnas table1``/``cv``) check it with
:func:`check_setting`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from nni_bixnas._checks import (
    a_bool,
    an_int,
    fraction,
    is_int,
    known_keys,
    non_negative_int,
    positive_int,
    positive_number,
)

__all__ = ["TrainingSettings", "TRAINING_KEYS", "SETTING_CHECKS", "LOSSES", "check_setting", "check_settings"]

Size = Union[int, Tuple[int, int]]

#: Training losses: ``'ce'`` (the authors': binary cross-entropy for one class, cross-entropy for several) and
#: ``'dice_ce'`` (that plus the soft Dice of the foreground, as MONAI's ``DiceCELoss`` and nnU-Net).
LOSSES = ("ce", "dice_ce")


def _lr(name: str, value: Any) -> float:
    try:
        return positive_number(name, value)
    except ValueError as err:
        # YAML 1.1 (nnictl's loader) reads 1e-3 as a string
        hint = "; in YAML write 1.0e-3, not 1e-3 (read as a string)" if isinstance(value, str) else ""
        raise ValueError(f"{err}{hint}") from None


def _size(name: str, value: Any) -> Any:
    from nni_bixnas.data.collection import normalize_size

    normalize_size(value, name)
    return value


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def _precision(name: str, value: Any) -> Any:
    if not (value is None or isinstance(value, str) or is_int(value)):
        raise ValueError(f"{name} must be a Lightning precision like '32-true' or 'bf16-mixed', or None, got {value!r}")
    return value


def _devices(name: str, value: Any) -> Any:
    if not (isinstance(value, str) or (is_int(value) and value >= 1)
            or (isinstance(value, (list, tuple)) and value and all(is_int(v) and v >= 0 for v in value))):
        raise ValueError(f"{name} must be a positive int, a string like 'auto', or a list of device ids, got {value!r}")
    return value


def _threads(name: str, value: Any) -> Any:
    return None if value is None else positive_int(name, value)


def _loss(name: str, value: Any) -> str:
    if value not in LOSSES:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, LOSSES))}, got {value!r}")
    return value


#: setting -> ``check(name, value)``, raising a ``ValueError`` that starts with ``name``.
SETTING_CHECKS: Dict[str, Callable[[str, Any], Any]] = {
    "data": _text,
    "batch_size": positive_int,
    "seed": an_int,
    "split_seed": non_negative_int,
    "lr": _lr,
    "patch_size": _size,
    "resize": _size,
    "val_fraction": fraction,
    "precision": _precision,
    "accelerator": _text,
    "devices": _devices,
    "channels_last": a_bool,
    "num_threads": _threads,
    "loss": _loss,
}


def check_setting(name: str, value: Any, prefix: str = "") -> Any:
    """``value`` of the setting ``name`` if it is valid, else a ``ValueError`` naming ``prefix + name``."""
    return SETTING_CHECKS[name](prefix + name, value)


def check_settings(settings: Mapping[str, Any], prefix: str = "") -> None:
    """Check the values of the known settings among ``settings`` (other keys are the caller's)."""
    for name, value in settings.items():
        if name in SETTING_CHECKS:
            check_setting(name, value, prefix)


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """How one network is trained: data, split, batches, optimiser, precision, devices and threads.

    Frozen and checked on creation (one clear ``ValueError`` for the first bad value); change a copy with
    :meth:`replace`.

    Parameters
    ----------
    data
        Data spec of :class:`~nni_bixnas.data.SegDataModule` (``'default'``, ``'monuseg:PATH'``, ...).
    batch_size
        Batch size (per device in data-parallel training).
    seed
        Seeds the model's initialisation, the data shuffling and augmentation.
    split_seed
        Seeds the train/validation split, kept fixed across training seeds.
    lr
        Adam learning rate.
    patch_size, resize
        Random training crop and explicit downscaling: ``None``, ``n`` or ``(H, W)``.
    val_fraction
        Share of the split units held out for validation, in ``[0, 1)``.
    precision, accelerator, devices
        Lightning's (``precision=None`` is ``'32-true'``).
    channels_last
        Train in ``torch.channels_last`` memory format.
    num_threads
        ``torch.set_num_threads`` of the training (``None``: see :func:`~nni_bixnas.training.fit`).
    loss
        One of :data:`LOSSES`: ``'ce'`` (default, the authors') or ``'dice_ce'`` (cross-entropy plus soft Dice).

    Examples
    --------
    >>> settings = TrainingSettings(data="monuseg:/data/MoNuSeg", patch_size=256, num_threads=1)
    >>> settings.replace(seed=1).seed
    1
    """

    data: str = "default"
    batch_size: int = 2
    seed: int = 0
    split_seed: int = 0
    lr: float = 1e-3
    patch_size: Optional[Size] = None
    resize: Optional[Size] = None
    val_fraction: float = 0.2
    precision: Optional[str] = None
    accelerator: str = "auto"
    devices: Any = "auto"
    channels_last: bool = False
    num_threads: Optional[int] = None
    loss: str = "ce"

    def __post_init__(self) -> None:
        check_settings({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def from_mapping(cls, settings: Optional[Mapping[str, Any]], prefix: str = "") -> "TrainingSettings":
        """Settings from a plain mapping (``None`` is the defaults); unknown keys and bad values are one error
        naming ``prefix + key`` (e.g. ``'training.lr'``)."""
        if settings is not None and not isinstance(settings, Mapping):
            raise ValueError(f"{prefix.rstrip('.') or 'training'} must be a dict of training settings, "
                             f"got {type(settings).__name__}")
        settings = dict(settings or {})
        known_keys("training setting(s)", settings, TRAINING_KEYS)
        check_settings(settings, prefix)
        return cls(**settings)

    def to_dict(self) -> Dict[str, Any]:
        """The settings as plain values (JSON, NNI trial parameters); :meth:`from_mapping` reads it back."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("patch_size", "resize", "devices"):
            if isinstance(values[name], tuple):
                values[name] = list(values[name])
        return values

    def replace(self, **changes: Any) -> "TrainingSettings":
        """A copy with ``changes`` (checked like a new object)."""
        known_keys("training setting(s)", changes, TRAINING_KEYS)
        return dataclasses.replace(self, **changes)

    def data_options(self) -> Dict[str, Any]:
        """Keyword arguments of :class:`~nni_bixnas.data.SegDataModule` (besides ``data``)."""
        return {name: getattr(self, name) for name in ("batch_size", "seed", "split_seed", "patch_size", "resize",
                                                         "val_fraction")}


#: The names of :class:`TrainingSettings`' fields.
TRAINING_KEYS = tuple(f.name for f in dataclasses.fields(TrainingSettings))
