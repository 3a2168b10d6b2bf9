"""Small helpers shared by every concern: atomic writes and seeding."""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from nni_bixnas._writes import refused_writes

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    A crash or exception leaves ``path`` untouched (the old content stays, nothing half-written). The file
    gets the permissions ``open()`` would give it (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.
    A write the folder or the disk refuses (read-only, full, a file where a folder should be) raises
    :class:`~nni_bixnas._writes.WriteRefused`, whose message names ``path`` and what to do.
    """
    path = Path(path)
    with refused_writes(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, mode, **kwargs) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` sets it, which
    would briefly affect files other threads create)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_torch_save(obj, path: PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def changed_settings(path: PathLike, keys: Sequence[str], current: Mapping[str, Any], invalid: str) -> Optional[str]:
    """``'key: old -> new, ...'`` for the ``keys`` whose value in the JSON file ``path`` (the settings an earlier
    run recorded) differs from ``current``; ``None`` when the file is absent or nothing differs.

    A file that is not JSON raises one ``ValueError`` naming it, formatted from ``invalid`` (``{path}`` and
    ``{err}`` are filled in). The file is read as JSON only, never executed.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        previous = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(invalid.format(path=path, err=err)) from None
    changed = [k for k in keys if previous.get(k) != current.get(k)]
    return ", ".join(f"{k}: {previous.get(k)!r} -> {current.get(k)!r}" for k in changed) or None
