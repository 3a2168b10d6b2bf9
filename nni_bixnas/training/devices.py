"""What a machine can run: the accelerator and the number of devices :func:`~nni_bixnas.training.fit` is asked
for, checked before the run folder is made (Lightning would stop with a traceback, or start one process per
device whatever the machine has)."""

from __future__ import annotations

import os
from typing import Any

import torch

from nni_bixnas._checks import is_int

__all__ = ["available_cpus", "check_devices"]

_GPU = ("gpu", "cuda")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_devices(accelerator: Any, devices: Any) -> None:
    """``accelerator`` is there and has ``devices``: a GPU accelerator needs a visible CUDA GPU and at most
    as many devices as there are GPUs, the CPU at most one training process per core it may use.

    Raises
    ------
    ValueError
        Naming the setting, what this machine has and what was expected.
    """
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator in _GPU and not gpus:
        raise ValueError(f"accelerator (--accelerator) {accelerator!r}: no CUDA GPU is visible on this machine "
                         "(torch.cuda.is_available() is False); expected 'cpu' or 'auto' here")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not gpus)
    wanted = devices if is_int(devices) else len(devices) if isinstance(devices, (list, tuple)) else None
    if wanted is None:
        return
    have, kind = (available_cpus(), "CPU core(s)") if on_cpu else (gpus, "GPU(s)")
    if accelerator not in ("cpu", "auto", *_GPU) or wanted <= have:
        return
    what = "training processes" if on_cpu else "GPUs"
    raise ValueError(f"devices (--devices) {devices!r} asks for {wanted} {what}, but this machine has {have} {kind}"
                     f"{' this process may use' if on_cpu else ''}; expected at most {have}")
