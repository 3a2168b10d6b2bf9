"""One registry of fixed models, one factory (the timm pattern)."""

from __future__ import annotations

import fnmatch
from typing import Callable, Dict, List, Optional

import torch.nn as nn

__all__ = ["register_model", "create_model", "list_models", "model_entrypoint"]

_MODELS: Dict[str, Callable[..., nn.Module]] = {}
_PAPER: Dict[str, Optional[dict]] = {}


def register_model(fn: Callable[..., nn.Module] = None, *, paper: Optional[dict] = None):
    """Register ``fn`` (a function returning an ``nn.Module``) under its name.

    ``paper`` holds the figures the BiX-NAS paper reports for it (``{'params': ..., 'macs': ...}``, Table 1).
    """

    def wrap(f):
        if f.__name__ in _MODELS:
            raise ValueError(f"model {f.__name__!r} is registered twice")
        _MODELS[f.__name__] = f
        _PAPER[f.__name__] = paper
        return f

    return wrap(fn) if fn is not None else wrap


def list_models(filter: str = "*") -> List[str]:
    """Registered model names matching the ``fnmatch`` pattern ``filter``, sorted."""
    return sorted(name for name in _MODELS if fnmatch.fnmatch(name, filter))


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name]


def paper_figures(name: str) -> Optional[dict]:
    """Params and MACs the paper reports for ``name`` (Table 1), or ``None``."""
    model_entrypoint(name)
    return _PAPER[name]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name``.

    Keyword arguments set to ``None`` are dropped, so the model's defaults stay in force.

    Examples
    --------
    >>> from nni_bixnas import create_model
    >>> net = create_model("bixnet", in_channels=1, num_classes=2)
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return model_entrypoint(name)(**kwargs)
