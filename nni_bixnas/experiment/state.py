"""Persist a NAS strategy's ``state_dict()`` in the experiment folder so a search can be resumed.

The file is ``<experiment dir>/checkpoint/strategy_state.json`` (``nni.dump`` format, written
atomically). :class:`StateSaver` rewrites it whenever the state changes, so the newest file always
holds every unit the strategy had finished.

:func:`load_state` restores the objects with ``nni.load``, which may unpickle them (cloudpickle): it is
for ``nnictl resume`` of the user's own experiment only. Readers of experiment folders that may come from
elsewhere (``bixnas export``) use :func:`read_state_data`, which parses the file as plain JSON.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Optional, Tuple

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
    """The state saved at ``path``, or ``None`` if there is none.

    Trusted files only: ``nni.load`` rebuilds pickled objects, and unpickling can run code.
    """
    path = Path(path)
    if not path.is_file():
        return None
    return nni.load(path.read_text(encoding="utf-8"), ignore_comments=False)


def read_state_data(path: PathLike) -> Optional[Any]:
    """The state saved at ``path`` as plain JSON data, or ``None`` if there is none; never runs code.

    The file is parsed with :mod:`json`, not ``nni.load``: nothing is imported or unpickled. The objects
    ``nni.dump`` encoded (a dict with a ``__nni_obj__``, ``__nni_type__``, ``__symbol__``,
    ``__instance_type__``, ``__ndarray__``... key, or a ``py/`` key of other JSON picklers) are not
    decoded: each becomes ``None``. Plain dicts, lists, strings, numbers, booleans and nulls are kept.

    Raises
    ------
    ValueError
        If the file is not JSON.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data, dropped = _plain(json.loads(path.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ValueError(f"{path} is not a JSON strategy state: {err}") from err
    if dropped:
        _logger.info("%s: %d encoded object(s) left out (not decoded: only plain JSON data is read)", path, dropped)
    return data


def _is_encoded_object(entry: dict) -> bool:
    return any(k.startswith("py/") or (len(k) > 4 and k.startswith("__") and k.endswith("__")) for k in entry)


def _plain(value: Any) -> Tuple[Any, int]:
    """``value`` with every encoded object replaced by ``None``, and how many were replaced."""
    if isinstance(value, dict):
        if _is_encoded_object(value):
            return None, 1
        items = {k: _plain(v) for k, v in value.items()}
        return {k: v for k, (v, _) in items.items()}, sum(n for _, n in items.values())
    if isinstance(value, list):
        items = [_plain(v) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    return value, 0


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
