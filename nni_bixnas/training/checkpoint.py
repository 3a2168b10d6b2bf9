"""Atomic checkpoint writing and self-describing, weights-only checkpoint loading."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from nni_bixnas.utils import PathLike, atomic_torch_save

# torch names the refused global in its weights-only error: "Unsupported global: GLOBAL builtins.exec ...", or
# for a module it blocks outright (os, sys, posix, nt) "Trying to load unsupported GLOBAL posix.system whose ..."
_UNSAFE_GLOBAL = re.compile(r"(?:Unsupported global:|Trying to load unsupported) GLOBAL (\S+)")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` that writes every checkpoint through a temp file + ``os.replace``.

    A crash (or a NaN stop) while saving leaves the previous checkpoint file intact.
    Pass it to ``pl.Trainer(plugins=[AtomicCheckpointIO()])``.
    """

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: PathLike,
                        storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not support storage_options")
        atomic_torch_save(checkpoint, path)


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read a Lightning checkpoint onto the CPU, weights-only: tensors and plain data, never code.

    ``torch.load(..., weights_only=True)`` rebuilds only tensors, dicts, lists, tuples, strings, numbers,
    booleans and ``None``, which is all a checkpoint of :func:`nni_bixnas.training.fit` holds (weights,
    optimiser and loop state, :class:`RunRecorder` history, plain hyper-parameters). A pickled object of
    any other type is refused instead of being rebuilt, so a crafted file cannot run code.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file does not load weights-only (not written by nni_bixnas, or corrupt/truncated), or holds
        no ``state_dict``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            # a raw pickle (not torch's zip format) of another protocol: the error below says enough
            warnings.filterwarnings("ignore", message=r"Detected pickle protocol", category=UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a bad file
        raise ValueError(f"cannot load checkpoint {path}: {load_failure(err)}") from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def load_failure(err: Exception) -> str:
    """Why a weights-only load failed, without torch's advice to retry with ``weights_only=False``: ``'it holds
    a pickled Python object (...)...'`` for a refused global, else ``'not a checkpoint written by nni_bixnas, or
    a corrupt or truncated one (...)'``."""
    text = str(err)
    found = _UNSAFE_GLOBAL.search(text)
    if found:
        return (f"it holds a pickled Python object ({found.group(1)}), not only tensors and plain data, so it is "
                "not a checkpoint written by nni_bixnas; it was not loaded, since unpickling it could run code")
    detail = text.split("WeightsUnpickler error:", 1)[-1].strip()
    first = detail.splitlines()[0].split(". ")[0] if detail else "no details"
    return f"not a checkpoint written by nni_bixnas, or a corrupt or truncated one ({type(err).__name__}: {first})"


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read (weights-only, see :func:`read_checkpoint`) a checkpoint that :func:`load_task` can rebuild.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file does not load weights-only, or is not a Lightning checkpoint of a
        :class:`SegmentationTask` with a registry model name.
    """
    checkpoint = read_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or not hparams.get("model_name"):
        raise ValueError(
            f"{path} does not say which model it holds (no 'model_name' in its hyper_parameters); "
            "only checkpoints written by `bixnas train` / nni_bixnas.training.fit can be rebuilt"
        )
    return checkpoint


def load_task(path: PathLike):
    """Rebuild the :class:`SegmentationTask` (and its network) stored in a checkpoint.

    The network is rebuilt with ``nni_bixnas.create_model(model_name, **model_kwargs)`` from the
    checkpoint's hyper-parameters, then the weights are loaded strictly. The task is in eval mode.

    Raises
    ------
    ValueError
        If the checkpoint does not load (see :func:`load_checkpoint`), its network cannot be rebuilt, or
        its weights do not fit the rebuilt network (the message names a few mismatched keys).
    """
    checkpoint = load_checkpoint(path)
    task = _rebuild(path, dict(checkpoint["hyper_parameters"]))
    state_dict = checkpoint["state_dict"]
    problems = weight_mismatches(task.state_dict(), state_dict)
    if problems:
        raise ValueError(
            f"the weights in {path} do not fit the {task.hparams['model_name']!r} network rebuilt from its "
            f"hyper-parameters: {problems}; the file was edited or comes from another model or version"
        )
    try:
        task.load_state_dict(state_dict)
    except (RuntimeError, TypeError, ValueError) as err:  # e.g. a non-tensor value under a known key
        raise ValueError(f"cannot load the weights in {path}: {err}") from err
    return task.eval()


def _rebuild(path: PathLike, hparams: Dict[str, Any]):
    from nni_bixnas.training.task import SegmentationTask

    model_name, model_kwargs = hparams.pop("model_name"), hparams.pop("model_kwargs", None)
    try:
        return SegmentationTask(
            model_name,
            model_kwargs=model_kwargs,
            **{k: v for k, v in hparams.items() if k in SegmentationTask.REBUILD_ARGS},
        )
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise ValueError(
            f"cannot rebuild the network of {path} from its hyper-parameters "
            f"(model {model_name!r}, model_kwargs {model_kwargs!r}): {err}"
        ) from err


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else f"({type(value).__name__}, not a tensor)"


def weight_mismatches(expected: Mapping[str, Any], found: Mapping[str, Any], show: int = 3) -> str:
    """``''`` when ``found`` has exactly the keys and shapes of ``expected``, else a short description."""

    def listed(keys: List[str]) -> str:
        return ", ".join(keys[:show]) + (f", ... ({len(keys)} in all)" if len(keys) > show else "")

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [
        f"{k} {_shape(found[k])} in the file, {tuple(v.shape)} in the network"
        for k, v in expected.items()
        if k in found and (not isinstance(found[k], torch.Tensor) or found[k].shape != v.shape)
    ]
    parts = [f"{what}: {listed(keys)}" for what, keys in
             (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", reshaped)) if keys]
    return "; ".join(parts)
