"""Drive ``nnictl`` and an NNI manager's REST API from Python (tests, screenshots, scripts).

``nnictl`` is run as a subprocess with the current interpreter's ``bin`` folder first on ``PATH``,
because trial commands (``python -m ...``) take ``python`` from ``PATH`` (bug d in the NNI notes).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

_logger = logging.getLogger(__name__)

FINAL_STATUSES = ("DONE", "ERROR", "STOPPED", "NO_MORE_TRIAL_FAILED")


def nnictl_env(home: Optional[str] = None, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Environment for ``nnictl``: this interpreter's ``bin`` first on ``PATH``, optionally another ``HOME``.

    NNI writes its experiment manifest to ``$HOME/nni-experiments/.experiment`` whatever
    ``experimentWorkingDirectory`` says, so tests pass a temporary ``home``.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONWARNINGS", "ignore")
    if home is not None:
        env["HOME"] = str(home)
    env.update(extra or {})
    return env


def nnictl(args: Iterable[str], env: Mapping[str, str], timeout: float = 120, cwd: Optional[str] = None) -> str:
    """Run ``nnictl ARGS``; return its combined output, raise :class:`RuntimeError` on a non-zero exit."""
    executable = Path(sys.executable).parent / "nnictl"
    command = [str(executable if executable.exists() else "nnictl"), *args]
    proc = subprocess.run(command, env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}:\n{proc.stdout}")
    return proc.stdout


def experiment_id_from_output(output: str) -> str:
    """The experiment id in ``nnictl create/resume`` output (``nnictl stop ID``)."""
    match = re.search(r'nnictl stop (\w+)', output)
    if match is None:
        raise RuntimeError(f"no experiment id in nnictl output:\n{output}")
    return match.group(1)


def free_port() -> int:
    """A TCP port that is free now (race-prone by nature; fine for tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManagerClient:
    """Minimal REST client for a running NNI manager (``/api/v1/nni/...``).

    Parameters
    ----------
    port : int
        The web UI / REST port.
    host : str
        Host name, default ``127.0.0.1``.
    """

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.base = f"http://{host}:{port}/api/v1/nni"

    def get(self, api: str, timeout: float = 10) -> Any:
        with urllib.request.urlopen(self.base + api, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def status(self) -> Dict[str, Any]:
        """``/check-status``: ``{'status': ..., 'errors': [...]}``."""
        return self.get("/check-status")

    def trial_jobs(self) -> List[Dict[str, Any]]:
        return self.get("/trial-jobs")

    def metric_data(self) -> List[Dict[str, Any]]:
        """Every metric record; ``data`` is decoded from NNI's doubly JSON-encoded string."""
        records = self.get("/metric-data")
        for record in records:
            record["value"] = decode_metric(record.get("data"))
        return records

    def wait_status(self, statuses: Iterable[str] = FINAL_STATUSES, timeout: float = 300, poll: float = 1.0) -> str:
        """Poll ``/check-status`` until its status is one of ``statuses``; return it."""
        statuses = tuple(statuses)
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            try:
                status = self.status()["status"]
            except (urllib.error.URLError, ConnectionError, OSError):
                status = None
            if status in statuses:
                return status
            time.sleep(poll)
        raise TimeoutError(f"experiment status still {status!r} after {timeout:.0f} s (waiting for {statuses})")


def decode_metric(data: Any) -> Any:
    """NNI stores a metric as JSON text of JSON text; return the Python value (dict or float)."""
    value = data
    for _ in range(2):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                break
    return value


def stop(experiment_ids: Iterable[str], env: Mapping[str, str], timeout: float = 120) -> None:
    """``nnictl stop`` every experiment, in parallel; raise :class:`RuntimeError` if one fails."""
    executable = Path(sys.executable).parent / "nnictl"
    procs = [
        (exp_id, subprocess.Popen([str(executable if executable.exists() else "nnictl"), "stop", exp_id], env=dict(env),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for exp_id in experiment_ids
    ]
    failed = []
    for exp_id, proc in procs:
        output, _ = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            failed.append(f"{exp_id}: {output}")
    if failed:
        raise RuntimeError("nnictl stop failed for " + "; ".join(failed))


def wait_dispatcher_connected(experiment_dir: Path, timeout: float = 60) -> None:
    """Wait until the NNI manager of ``experiment_dir`` has its dispatcher connected (or gave up on it).

    NNI gives a dispatcher 10 seconds to connect; starting several experiments at once on a small
    machine can miss that, so callers start the next experiment only after this returns.
    """
    log = Path(experiment_dir) / "log" / "nnimanager.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.is_file() else ""
        if "Add event listeners" in text or "Tuner did not connect" in text:
            return
        time.sleep(0.3)
    raise TimeoutError(f"{log} shows no dispatcher connection after {timeout:.0f} s")
