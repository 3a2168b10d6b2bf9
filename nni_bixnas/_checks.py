"""The validators every constructor shares: each raises one ``ValueError`` naming the option, the value
and what was expected (MONAI-style checks in ``__init__``), and returns the value in its canonical type."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional, Sequence

__all__ = ["an_int", "a_number", "probability", "out_folder", "fraction", "positive_int", "non_negative_int",
           "optional_int", "positive_ints", "positive_number", "non_negative_number", "one_of", "optional_path",
           "known_keys", "is_int", "a_bool", "divisible_input", "json_object"]


def is_int(value: Any) -> bool:
    """``True`` for an ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def a_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def an_int(name: str, value: Any) -> int:
    if not is_int(value):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return int(value)


def a_number(name: str, value: Any) -> float:
    """A finite int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def probability(name: str, value: Any) -> float:
    """A number strictly between 0 and 1 (a decision threshold on a probability)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a probability in (0, 1), got {value!r}")
    return float(value)


def fraction(name: str, value: Any) -> float:
    """A number in ``[0, 1)`` (e.g. the validation share of a split)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def positive_int(name: str, value: Any) -> int:
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    if not is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def optional_int(name: str, value: Any) -> Optional[int]:
    if value is not None and not is_int(value):
        raise ValueError(f"{name} must be an int or None, got {value!r}")
    return value


def positive_ints(name: str, value: Any, length: Optional[int] = None, what: str = "positive ints") -> List[int]:
    """A sequence of positive ints (of ``length`` items when given)."""
    if (not isinstance(value, (tuple, list)) or (length is not None and len(value) != length)
            or not all(is_int(v) and v >= 1 for v in value)):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return [int(v) for v in value]


def positive_number(name: str, value: Any, what: str = "") -> float:
    """A finite number > 0; ``what`` (e.g. ``' (Gumbel-softmax temperature)'``) follows the name."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}{what} must be a finite number > 0, got {value!r}")
    return float(value)


def non_negative_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def one_of(name: str, value: Any, options: Sequence[Any]) -> Any:
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, options))}")
    return value


def optional_path(name: str, value: Any, what: str = "a path") -> Optional[str]:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name} must be {what} or None, got {value!r}")
    return None if value is None else str(value)


def out_folder(name: str, value: Any) -> None:
    """An output folder that can exist or be created: neither it nor a folder above it is an existing file."""
    if value is None:
        return
    for path in (Path(value), *Path(value).parents):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                where = "" if path == Path(value) else f": {path}, above it,"
                raise ValueError(f"{name} {value}{where} is an existing file; expected a folder (an existing "
                                 "one, or one to create)")
            return


def known_keys(what: str, given: Mapping[str, Any] | Iterable[str], known: Sequence[str]) -> None:
    """Every key of ``given`` is in ``known``, else one error listing the unknown ones and the known ones."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)}; expected some of {', '.join(known)}")


def divisible_input(shape: Sequence[int], factor: int, why: str) -> None:
    """A network input's ``(..., H, W)`` ``shape`` whose sides are multiples of ``factor`` (``why``: where the
    factor comes from, e.g. ``'2 ** levels'``), else one error saying what to do."""
    size = tuple(shape[-2:])
    if size[0] % factor or size[1] % factor:
        raise ValueError(f"input size {size} is not divisible by {factor} ({why}); "
                         f"crop or pad to a multiple of {factor}")


def json_object(path: Any, expected: str) -> dict:
    """The JSON object in the file ``path`` (read as JSON only), else one error naming the file and ``expected``
    (e.g. ``'the history.json `bixnas train` writes'``)."""
    try:
        value = json.loads(Path(path).read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); expected {expected}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object; expected {expected}")
    return value
