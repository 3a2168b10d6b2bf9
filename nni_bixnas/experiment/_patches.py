"""Process-wide fixes for NNI 3.0's tuner-side websocket channel, applied by the bridge at import.

Both are idempotent and only touch the process that hosts a NAS execution engine (the dispatcher).
"""

from __future__ import annotations

import logging

import nni
from nni.runtime.command_channel.websocket import connection as _wsconn
from nni.runtime.tuner_command_channel import channel as _tuner_channel
from nni.runtime.tuner_command_channel.command_type import CommandType

_logger = logging.getLogger(__name__)

#: Commands the NNI manager sends that NAS engines do not handle. ``ImportData`` and
#: ``AddCustomizedTrialJob`` arrive on ``nnictl resume``; NNI's ``TunerCommandChannel.receive`` raises
#: ``ValueError('Unknown command type')`` on them, which kills the engine's listening thread.
IGNORED_COMMANDS = (CommandType.ImportData, CommandType.AddCustomizedTrialJob, CommandType.Ping)


def _receive_keep_comments(self):
    """``WsConnection.receive`` without json-tricks' comment stripping (bug a).

    ``nni.load`` defaults to ``ignore_comments=True``, which deletes ``//`` and ``#`` runs from the raw
    message and corrupts nested trial parameters (e.g. pickled tensors or URLs) in ``TrialEnd``.
    """
    try:
        msg = _wsconn._wait(self._ws.recv())
    except _wsconn.websockets.ConnectionClosed:  # type: ignore[attr-defined]
        self._ws = None
        _wsconn._decrease_refcnt()
        raise
    if msg is None:
        return None
    if isinstance(msg, bytes):
        msg = msg.decode()
    return nni.load(msg, ignore_comments=False)


_original_tuner_receive = _tuner_channel.TunerCommandChannel.receive


def _receive_skip_unhandled(self):
    """``TunerCommandChannel.receive`` that drops the commands a NAS engine cannot handle."""
    while True:
        command_type, data = self._receive()
        if command_type in IGNORED_COMMANDS:
            _logger.debug("Ignoring %s command from the NNI manager", command_type.name)
            continue
        # Hand the command back to NNI's parser without receiving again.
        self._pending = (command_type, data)
        return _original_tuner_receive(self)


def _receive_pending_first(self):
    pending = getattr(self, "_pending", None)
    if pending is not None:
        self._pending = None
        return pending
    command = self._channel.receive()
    if command is None:
        return None, None
    return CommandType(command["type"]), command.get("content", "")


def apply() -> None:
    """Install both fixes (safe to call more than once)."""
    if getattr(_wsconn.WsConnection.receive, "_bixnas_patch", False):
        return
    _receive_keep_comments._bixnas_patch = True  # type: ignore[attr-defined]
    _wsconn.WsConnection.receive = _receive_keep_comments
    _tuner_channel.TunerCommandChannel.receive = _receive_skip_unhandled
    _tuner_channel.TunerCommandChannel._receive = _receive_pending_first
