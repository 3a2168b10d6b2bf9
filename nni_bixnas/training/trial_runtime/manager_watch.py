"""Noticing that the NNI manager which started this process is gone (killed, crashed).

The manager spawns its dispatcher and, through the local training service, its trials via a shell, so
it is the nearest ``node`` ancestor of both. Killed with ``kill -9`` it sends no ``Terminate``: without
this watch the bridge and the running trial would keep going, writing the experiment's log and run
folders beside the ones a resumed experiment writes. Its own imports are ``psutil`` only (the bridge and
:class:`~nni_bixnas.training.NNIReporter` use it).
"""

from __future__ import annotations

import os
import time
from typing import Optional

import psutil

__all__ = ["ManagerWatch"]


class ManagerWatch:
    """Whether the NNI manager (the nearest ``node`` ancestor, else the parent) still runs.

    Parameters
    ----------
    interval
        :meth:`gone_now` checks at most once per ``interval`` seconds (between, it answers ``False``).
    """

    def __init__(self, interval: float = 2.0) -> None:
        ancestors = psutil.Process().parents()
        manager = next((p for p in ancestors if "node" in _name(p)), ancestors[0] if ancestors else None)
        self.pid: Optional[int] = None if manager is None else manager.pid
        self._created = None if manager is None else manager.create_time()
        self.interval = float(interval)
        self._checked = time.monotonic()

    def gone(self) -> bool:
        """``True`` once the manager process has exited (a reused pid has another start time; a killed
        manager nobody reaped is a zombie)."""
        if self.pid is None:
            return False
        try:
            manager = psutil.Process(self.pid)
            return manager.create_time() != self._created or manager.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    def gone_now(self) -> bool:
        """:meth:`gone`, rate-limited to once per ``interval`` (cheap enough to call every step)."""
        if time.monotonic() - self._checked < self.interval:
            return False
        self._checked = time.monotonic()
        return self.gone()


def _name(process: psutil.Process) -> str:
    try:
        return process.name().lower()
    except psutil.Error:
        return ""


def exit_if_gone(watch: ManagerWatch, log) -> None:
    """Log and end this process at once if the manager is gone (checkpoints are written atomically,
    so nothing written is lost; the resumed experiment redoes the unfinished unit)."""
    if watch.gone_now():
        log.error("The NNI manager (pid %s) is gone; this process (pid %d) exits", watch.pid, os.getpid())
        os._exit(1)
