"""The bridge's ``classArgs``: import paths and keyword arguments, checked before anything runs.

Every check raises :class:`ValueError` (or :class:`FileNotFoundError`) naming the ``classArgs`` field,
the value and what was expected, so the message can go straight to the experiment's log.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import re
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

_logger = logging.getLogger(__name__)

#: ``classArgs`` keys the bridge understands.
FIELDS = ("model_space", "model_space_kwargs", "strategy", "strategy_kwargs", "evaluator", "evaluator_kwargs")


def import_object(path: Any, field: str) -> Any:
    """Import ``package.module.Name`` (the value of ``classArgs.<field>``).

    Raises
    ------
    ValueError
        If ``path`` is not a dotted string, or the module or the attribute cannot be imported.
    """
    if not isinstance(path, str) or "." not in path.strip(". "):
        raise ValueError(f"classArgs.{field} must be an import path like 'package.module.Name', got {path!r}")
    module_name, _, name = path.strip().rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"classArgs.{field}: cannot import module {module_name!r} of {path!r}: {err}") from None
    if not hasattr(module, name):
        raise ValueError(f"classArgs.{field}: module {module_name!r} has no attribute {name!r} (from {path!r})")
    return getattr(module, name)


def check_kwargs(target: Callable, kwargs: Any, field: str) -> Dict[str, Any]:
    """Check that ``target(**kwargs)`` binds (names and required arguments), without calling it."""
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"classArgs.{field} must be a mapping of keyword arguments, got {kwargs!r}")
    try:
        signature = _signature(target)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return dict(kwargs)
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        accepted = [name for name, p in signature.parameters.items()
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        raise ValueError(
            f"classArgs.{field} {dict(kwargs)!r} does not fit {_qualname(target)}{signature}: {err}; "
            f"accepted keywords: {', '.join(accepted) or 'none'}"
        ) from None
    return dict(kwargs)


def _signature(target: Callable) -> inspect.Signature:
    """``inspect.signature``, seeing through the ``(*args, **kwargs)`` wrapper NNI puts on ModelSpace ``__init__``."""
    wrapped = getattr(target, "_init_wrapped", None) if inspect.isclass(target) else None
    if wrapped is None:
        return inspect.signature(target)
    signature = inspect.signature(wrapped)
    return signature.replace(parameters=list(signature.parameters.values())[1:])  # drop self


def check_values(target: Callable, kwargs: Mapping[str, Any], field: str) -> None:
    """Check keyword argument values with ``target.validate_kwargs(kwargs, prefix)``, if ``target`` has one.

    :func:`nni_bixnas.training.make_evaluator` has one, so ``evaluator_kwargs: {max_epochs: 0}`` fails when
    the experiment starts with ``classArgs.evaluator_kwargs.max_epochs must be a positive int, got 0``.
    """
    validate = getattr(target, "validate_kwargs", None)
    if callable(validate):
        validate(kwargs, prefix=f"classArgs.{field}.")


def check_data_specs(kwargs: Mapping[str, Any], field: str) -> None:
    """If ``kwargs`` has a ``data`` spec (see :func:`nni_bixnas.data.parse_data_spec`), check its paths exist."""
    spec = kwargs.get("data")
    if not isinstance(spec, str):
        return
    from nni_bixnas.data import parse_data_spec

    try:
        parsed = parse_data_spec(spec)
    except ValueError as err:
        raise ValueError(f"classArgs.{field}.data: {err}") from None
    for path in (parsed.path, parsed.mask_path):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(
                f"classArgs.{field}.data = {spec!r}: path {str(path)!r} does not exist on the machine running "
                f"the NNI dispatcher (check the path; relative paths are relative to the dispatcher's cwd)"
            )


def check_gpus(experiment_config: Mapping[str, Any], device_count: Optional[int] = None) -> None:
    """Reject ``trialGpuNumber > 0`` on the local training service when this machine has too few GPUs.

    NNI's local training service would otherwise keep the trials WAITING for GPUs forever.
    """
    services = experiment_config.get("trainingService") or {}
    services = services if isinstance(services, list) else [services]
    for service in services:
        if service.get("platform") != "local":
            continue
        wanted = service.get("trialGpuNumber", experiment_config.get("trialGpuNumber")) or 0
        if wanted <= 0:
            continue
        if device_count is None:
            device_count = machine_gpu_count()
        if device_count < wanted:
            raise ValueError(
                f"trialGpuNumber is {wanted} but this machine has {device_count} CUDA GPU(s); trials would "
                "wait for GPUs forever. Set trialGpuNumber: 0 (CPU) or run on a machine with GPUs."
            )


def trials_run_here(experiment_config: Mapping[str, Any]) -> bool:
    """Whether every training service of the config is ``local`` (trials see this machine's files)."""
    services = experiment_config.get("trainingService") or {}
    services = services if isinstance(services, list) else [services]
    return all(service.get("platform") == "local" for service in services)


def check_shared_out_dir(out_dir: Any) -> None:
    """Reject a relative ``strategy_kwargs.out_dir`` when trials run on other machines.

    The dispatcher and the trials resolve it against different working directories (a remote trial runs in
    ``~/nni-experiments/<id>/...`` of the remote user), so it must be absolute; that it lies on a file system
    they share cannot be checked from here.
    """
    if out_dir is not None and not Path(str(out_dir)).is_absolute():
        raise ValueError(
            f"classArgs.strategy_kwargs.out_dir must be an absolute path when trials run on other machines "
            f"(a folder on a file system shared with them), got {str(out_dir)!r}"
        )


def machine_gpu_count() -> int:
    """NVIDIA GPUs on this machine, counted from ``/dev/nvidiaN`` device files.

    Not ``torch.cuda``: the NNI manager starts the dispatcher with ``CUDA_VISIBLE_DEVICES`` set from
    ``tunerGpuIndices`` (usually empty), and importing torch would delay the dispatcher.
    """
    return sum(1 for path in Path("/dev").glob("nvidia*") if re.fullmatch(r"nvidia\d+", path.name))


@dataclasses.dataclass
class BridgeSpec:
    """The checked ``classArgs``: what to build, resolved but not yet instantiated."""

    model_space: Callable
    model_space_kwargs: Dict[str, Any]
    strategy: Callable
    strategy_kwargs: Dict[str, Any]
    evaluator: Callable
    evaluator_kwargs: Dict[str, Any]

    @classmethod
    def from_class_args(cls, class_args: Mapping[str, Any], check_paths: bool = True) -> "BridgeSpec":
        """Resolve and check ``classArgs`` (see :class:`~nni_bixnas.experiment.NasStrategyAdvisor`).

        ``check_paths=False`` skips the data-path check (trials on other machines read the data there).
        """
        unknown = sorted(set(class_args) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown classArgs key(s) {unknown}; expected some of {list(FIELDS)}")
        for required in ("model_space", "strategy", "evaluator"):
            if class_args.get(required) is None:
                raise ValueError(f"classArgs.{required} is required (an import path like 'package.module.Name')")
        resolved: Dict[str, Any] = {}
        for name in ("model_space", "strategy", "evaluator"):
            target = import_object(class_args[name], name)
            if not callable(target):
                raise ValueError(f"classArgs.{name}: {class_args[name]!r} is not a class or function")
            resolved[name] = target
            resolved[f"{name}_kwargs"] = check_kwargs(target, class_args.get(f"{name}_kwargs"), f"{name}_kwargs")
            check_values(target, resolved[f"{name}_kwargs"], f"{name}_kwargs")
            if check_paths:
                check_data_specs(resolved[f"{name}_kwargs"], f"{name}_kwargs")
        return cls(**resolved)

    def build(self):
        """Instantiate ``(model_space, strategy, evaluator)``; constructor errors name the field."""
        built = []
        for name in ("model_space", "strategy", "evaluator"):
            target, kwargs = getattr(self, name), getattr(self, f"{name}_kwargs")
            try:
                built.append(target(**kwargs))
            except (TypeError, ValueError) as err:
                raise ValueError(f"classArgs.{name}: {_qualname(target)}(**{kwargs!r}) failed: {err}") from err
        return tuple(built)


def _qualname(target: Any) -> str:
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
