"""Data spec strings: ``SCHEME:PATH[?key=value&...]`` or ``default[:key=value,...]``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

SCHEMES = ("monuseg", "tnbc", "chaos", "isbi2012", "folder", "default")

# scheme -> option -> valid values (the first is the default); schemes not listed take no options.
PATH_OPTIONS: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "monuseg": {"masks": ("auto", "png", "xml")},
}


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
        ``default:key=value,...`` integers, or the ``?key=value&...`` options of a path scheme
        (validated strings, see :data:`PATH_OPTIONS`; only those written in the spec).
    """

    scheme: str
    path: Optional[Path] = None
    mask_path: Optional[Path] = None
    options: Dict[str, Union[int, str]] = field(default_factory=dict)

    def option(self, key: str) -> str:
        """The value of a path-scheme option, or its default (the first valid value)."""
        return str(self.options.get(key, PATH_OPTIONS[self.scheme][key][0]))


def parse_data_spec(spec: str) -> DataSpec:
    """Parse ``monuseg:PATH``, ``tnbc:PATH``, ``chaos:PATH``, ``isbi2012:PATH``, ``folder:PATH``,
    ``folder:IMGDIR,MASKDIR``, ``default`` or ``default:n=24,size=64,seed=0``.

    A path scheme may end in ``?key=value&key=value``: ``monuseg:PATH?masks=xml`` (``masks`` is
    ``auto``, ``png`` or ``xml``; see :mod:`nni_bixnas.data.monuseg`).

    Raises
    ------
    ValueError
        For an unknown scheme (the message lists the valid ones), a missing path, a malformed option,
        or an option or value the scheme does not know (the message lists the valid ones).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"data spec must be a non-empty string like 'monuseg:PATH' or 'default', got {spec!r}")
    scheme, sep, rest = spec.strip().partition(":")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"unknown data scheme {scheme!r} in {spec!r}; valid schemes: {', '.join(SCHEMES)} "
            "(written SCHEME:PATH, or 'default'; `bixnas data inspect --help` gives the layout of each)"
        )
    if scheme == "default":
        return DataSpec("default", options=_default_options(rest, spec))
    rest, _, query = rest.partition("?")
    if not rest.strip():
        raise ValueError(f"data spec {spec!r} has no path; write {scheme}:PATH")
    options = _path_options(scheme, query, spec)
    if scheme == "folder" and "," in rest:
        image_dir, _, mask_dir = rest.partition(",")
        return DataSpec("folder", Path(image_dir.strip()).expanduser(), Path(mask_dir.strip()).expanduser(), options)
    return DataSpec(scheme, Path(rest.strip()).expanduser(), options=options)


def _default_options(text: str, spec: str) -> Dict[str, int]:
    """``n=24,size=64`` -> ``{'n': 24, 'size': 64}`` (names are checked by the default loader)."""
    options: Dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = item.partition("=")
        try:
            if not eq:
                raise ValueError
            options[key.strip()] = int(value)
        except ValueError:
            raise ValueError(f"bad option {item!r} in data spec {spec!r}; expected key=integer, e.g. n=24") from None
    return options


def _path_options(scheme: str, query: str, spec: str) -> Dict[str, str]:
    """``masks=xml&...`` -> ``{'masks': 'xml'}``, every key and value checked against :data:`PATH_OPTIONS`."""
    valid = PATH_OPTIONS.get(scheme, {})
    options: Dict[str, str] = {}
    for item in filter(None, (part.strip() for part in query.split("&"))):
        key, eq, value = (s.strip().lower() for s in item.partition("="))
        if not eq or not key or not value:
            raise ValueError(f"bad option {item!r} in data spec {spec!r}; expected ?key=value, e.g. ?masks=png")
        if key not in valid:
            known = f"valid options: {', '.join(valid)}" if valid else f"{scheme} takes no options"
            raise ValueError(f"unknown option {key!r} for {scheme} in data spec {spec!r}; {known}")
        if value not in valid[key]:
            raise ValueError(
                f"bad value {value!r} for option {key} in data spec {spec!r}; valid values: {', '.join(valid[key])}"
            )
        if key in options:
            raise ValueError(f"option {key} is given twice in data spec {spec!r}")
        options[key] = value
    return options
