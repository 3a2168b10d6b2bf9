"""Persist a NAS strategy's ``state_dict()`` in the experiment folder so a search can be resumed.

The file is ``<experiment dir>/checkpoint/strategy_state.json`` (``nni.dump`` format, written
atomically). :class:`StateSaver` rewrites it whenever the state changes, so the newest file always
holds every unit the strategy had finished.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Optional

import nni

from nni_bixnas.utils import PathLike, atomic_write

_logger = logging.getLogger(__name__)

STATE_FILE = "strategy_state.json"


def state_path(checkpoint_dir: PathLike) -> Path:
    """Where the strategy state of an experiment whose ``checkpoint`` folder is ``checkpoint_dir`` lives."""
    return Path(checkpoint_dir) / STATE_FILE


def dump_state(state: Any) -> str:
    """Serialise a strategy state with ``nni.dump`` (no pickle size limit)."""
    return nni.dump(state, pickle_size_limit=-1)


def load_state(path: PathLike) -> Optional[Any]:
    """The state saved at ``path``, or ``None`` if there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    return nni.load(path.read_text(encoding="utf-8"), ignore_comments=False)


class StateSaver:
    """Watch ``strategy.state_dict()`` and write it to ``path`` whenever it changes.

    Strategies record finished units either in a model-event callback or in their own thread after
    ``wait_models``; polling covers both. :meth:`save` can also be called directly (e.g. on terminate).

    Parameters
    ----------
    strategy : nni.nas.strategy.Strategy
        The strategy to watch.
    path : path-like
        The state file.
    interval : float
        Seconds between checks.
    """

    def __init__(self, strategy: Any, path: PathLike, interval: float = 0.5) -> None:
        self.strategy = strategy
        self.path = Path(path)
        self.interval = interval
        self.supported = True
        self._last: Optional[str] = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bixnas-state-saver", daemon=True)

    def start(self) -> "StateSaver":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching, after a last :meth:`save`."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.save()

    def save(self) -> bool:
        """Write the state if it changed since the last write; return whether a write happened."""
        if not self.supported:
            return False
        with self._lock:
            try:
                blob = dump_state(self.strategy.state_dict())
            except NotImplementedError:
                _logger.warning("%s has no state_dict(); this search cannot be resumed",
                                type(self.strategy).__name__)
                self.supported = False
                return False
            except Exception:  # a state read mid-update; the next tick retries
                _logger.debug("state_dict() failed; retrying", exc_info=True)
                return False
            if blob == self._last:
                return False
            with atomic_write(self.path, "w", encoding="utf-8") as handle:
                handle.write(blob)
            self._last = blob
            _logger.debug("Saved strategy state to %s", self.path)
            return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.save()
            if not self.supported:
                return
