"""Data spec strings: ``SCHEME:PATH`` or ``default[:key=value,...]``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

SCHEMES = ("monuseg", "tnbc", "chaos", "isbi2012", "folder", "default")


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec.

    Attributes
    ----------
    scheme : str
        One of :data:`SCHEMES`.
    path : pathlib.Path or None
        The dataset root (the image folder for ``folder:IMGDIR,MASKDIR``); ``None`` for ``default``.
    mask_path : pathlib.Path or None
        Only for ``folder:IMGDIR,MASKDIR``.
    options : dict
        Only for ``default:key=value,...`` (integers).
    """

    scheme: str
    path: Optional[Path] = None
    mask_path: Optional[Path] = None
    options: Dict[str, int] = field(default_factory=dict)


def parse_data_spec(spec: str) -> DataSpec:
    """Parse ``monuseg:PATH``, ``tnbc:PATH``, ``chaos:PATH``, ``isbi2012:PATH``, ``folder:PATH``,
    ``folder:IMGDIR,MASKDIR``, ``default`` or ``default:n=24,size=64,seed=0``.

    Raises
    ------
    ValueError
        For an unknown scheme (the message lists the valid ones), a missing path or a malformed option.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"data spec must be a non-empty string like 'monuseg:PATH' or 'default', got {spec!r}")
    scheme, sep, rest = spec.strip().partition(":")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"unknown data scheme {scheme!r} in {spec!r}; valid schemes: {', '.join(SCHEMES)} "
            "(written SCHEME:PATH, or 'default')"
        )
    if scheme == "default":
        options: Dict[str, int] = {}
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, eq, value = item.partition("=")
            try:
                if not eq:
                    raise ValueError
                options[key.strip()] = int(value)
            except ValueError:
                raise ValueError(f"bad option {item!r} in data spec {spec!r}; expected key=integer, e.g. n=24") from None
        return DataSpec("default", options=options)
    if not rest.strip():
        raise ValueError(f"data spec {spec!r} has no path; write {scheme}:PATH")
    if scheme == "folder" and "," in rest:
        image_dir, _, mask_dir = rest.partition(",")
        return DataSpec("folder", Path(image_dir.strip()).expanduser(), Path(mask_dir.strip()).expanduser())
    return DataSpec(scheme, Path(rest.strip()).expanduser())
