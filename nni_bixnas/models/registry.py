"""One registry of fixed models, one factory (the timm pattern)."""

from __future__ import annotations

import fnmatch
import inspect
import typing
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch.nn as nn

from nni_bixnas._checks import a_bool, a_number, an_int, known_keys

__all__ = ["register_model", "create_model", "list_models", "model_entrypoint", "check_model_kwargs"]

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
    check_model_kwargs(name, kwargs)
    return model_entrypoint(name)(**kwargs)


def _parameters(name: str) -> Optional[Dict[str, inspect.Parameter]]:
    """The keyword arguments model ``name`` takes: its entrypoint's and, where that passes ``**kwargs`` on to the
    class it returns (its return annotation), the class's; ``None`` when they cannot be told."""
    fn = model_entrypoint(name)
    found = _named(inspect.signature(fn))
    if not _takes_kwargs(inspect.signature(fn)):
        return found
    try:
        cls = typing.get_type_hints(fn).get("return")
    except (NameError, TypeError):
        return None
    if not isinstance(cls, type):
        return None
    # NNI's ModelSpace replaces __init__ by a wrapper taking (*args, **kwargs); it keeps the original here
    init = inspect.signature(getattr(cls, "_init_wrapped", None) or cls.__init__)
    return None if _takes_kwargs(init) else {**_named(init), **found}


def _named(signature: inspect.Signature) -> Dict[str, inspect.Parameter]:
    return {k: p for k, p in signature.parameters.items()
            if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _takes_kwargs(signature: inspect.Signature) -> bool:
    return any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())


def check_model_kwargs(name: str, kwargs: Mapping[str, Any], source: str = "") -> None:
    """Every key of ``kwargs`` is an argument of model ``name``, and a value whose default is a bool, an int or
    a float has that type; else one ``ValueError`` naming the argument and what was expected.

    ``source`` (e.g. ``" (the '# model:' line of gene.txt)"``) follows the model name in the message.
    """
    params = _parameters(name)
    if params is None:  # a model of unknown arguments: its constructor says
        return
    known_keys(f"model argument(s) for {name!r}{source}:", kwargs, sorted(params))
    for key, value in kwargs.items():
        default = params[key].default
        what = f"model argument {key} of {name!r}{source}"
        if isinstance(default, bool):
            a_bool(what, value)
        elif isinstance(default, int):
            an_int(what, value)
        elif isinstance(default, float):
            a_number(what, value)
