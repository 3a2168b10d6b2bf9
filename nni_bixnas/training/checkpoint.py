"""Atomic checkpoint writing and self-describing checkpoint loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from nni_bixnas.utils import PathLike, atomic_torch_save


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


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`nni_bixnas.training.fit` onto the CPU.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a Lightning checkpoint of a :class:`SegmentationTask`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        # Our own files: they hold Lightning loop state and plain-Python hyper-parameters.
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several unrelated types for a corrupt file
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    hparams = checkpoint.get("hyper_parameters") or {}
    if not hparams.get("model_name"):
        raise ValueError(
            f"{path} does not say which model it holds (no 'model_name' in its hyper_parameters); "
            "only checkpoints written by `bixnas train` / nni_bixnas.training.fit can be rebuilt"
        )
    return checkpoint


def load_task(path: PathLike):
    """Rebuild the :class:`SegmentationTask` (and its network) stored in a checkpoint.

    The network is rebuilt with ``nni_bixnas.create_model(model_name, **model_kwargs)`` from the
    checkpoint's hyper-parameters, then the weights are loaded strictly. The task is in eval mode.
    """
    from nni_bixnas.training.task import SegmentationTask

    checkpoint = load_checkpoint(path)
    hparams = dict(checkpoint["hyper_parameters"])
    task = SegmentationTask(
        hparams.pop("model_name"),
        model_kwargs=hparams.pop("model_kwargs", None),
        **{k: v for k, v in hparams.items() if k in SegmentationTask.REBUILD_ARGS},
    )
    task.load_state_dict(checkpoint["state_dict"])
    return task.eval()
