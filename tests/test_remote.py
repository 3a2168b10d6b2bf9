"""NNI's remote training service, run for real: the tiny BiX-NAS search over SSH to 127.0.0.1.

A throwaway ``sshd`` (its own key pair, config, port and pid file in a temporary folder, run in the foreground
as a child of the test) serves as the "remote machine"; a copy of ``examples/remote.yml`` points at it and
``nnictl`` runs the same tiny search as ``tests/test_experiment_bixnas.py`` to DONE, once on the local
training service and once on the remote one, with the same seed: the found gene must be the same.

What this proves: the bridge, the trial command, the ``pythonPath``/``PATH`` handling, the code upload
(``.nniignore``), metrics coming back over NNI's remote trial keeper, and a clean stop. What it does not:
127.0.0.1 is the same file system, so files the trials share (``strategy_kwargs.out_dir``, the data) are
reachable without a shared file system; on a real remote machine they must be (see README, "Scaling").

Skipped when ``sshd``/``ssh-keygen`` are absent (``.ci/run`` installs ``openssh-server`` when it can).
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from test_experiment_bixnas import tiny

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").is_file() else None)
SSH_KEYGEN = shutil.which("ssh-keygen")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"sshd does not listen on 127.0.0.1:{port} after {timeout:.0f} s")


@dataclasses.dataclass
class Sshd:
    """A running throwaway sshd: its port, the client's private key and the ``sshd -D`` process."""

    port: int
    key: Path
    proc: subprocess.Popen


@contextlib.contextmanager
def throwaway_sshd(folder: Path, session_env: dict):
    """An ``sshd -D -e`` child on a free 127.0.0.1 port, keys and config in ``folder``; yields :class:`Sshd`.

    ``session_env`` becomes the sessions' environment (``SetEnv``): NNI's remote worker runs every command
    in an SSH session, so a temporary ``HOME`` there keeps its ``~/nni-experiments`` in ``folder``.
    """
    if SSHD is None or SSH_KEYGEN is None:
        pytest.skip("sshd / ssh-keygen not installed (apt-get install openssh-server; .ci/run does it as root)")
    folder.mkdir(parents=True, exist_ok=True)
    key, host_key = folder / "id_ed25519", folder / "host_ed25519"
    for path in (key, host_key):
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    shutil.copy(f"{key}.pub", folder / "authorized_keys")
    port = _free_port()
    lines = [
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", f"PidFile {folder / 'sshd.pid'}",
        "UsePAM no", "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", "Subsystem sftp internal-sftp",
        "SetEnv " + " ".join(f"{k}={v}" for k, v in session_env.items()),
    ]
    if os.geteuid() == 0:
        lines.append("PermitRootLogin yes")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder (root only)
    config = folder / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    log = (folder / "sshd.log").open("wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=log)
    try:
        _wait_listening(port, proc)
        yield Sshd(port, key, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


def _free_port() -> int:
    from nni_bixnas.experiment.launch import free_port

    port = free_port()
    while port == 22:
        port = free_port()
    return port


def search_config(tmp_path: Path, example: str, edit=None) -> Path:
    """A copy of ``examples/<example>`` running the tiny search of ``test_experiment_bixnas`` (plus
    ``inherit_weights``, one torch thread), after ``edit(config)``; written into ``tmp_path``."""
    from test_experiment_nnictl import write_config

    def tiny_search(config: dict) -> None:
        args = config["tuner"]["classArgs"]
        local = yaml.safe_load((EXAMPLES / "bixnas.yml").read_text())["tuner"]["classArgs"]
        args.update(model_space_kwargs=local["model_space_kwargs"], evaluator_kwargs=local["evaluator_kwargs"],
                    strategy_kwargs={k: v for k, v in local["strategy_kwargs"].items() if k != "out_dir"})
        config["trialGpuNumber"] = 0
        tiny(config)
        args["strategy_kwargs"]["phase2"]["inherit_weights"] = True  # a file handed from stage to stage
        args["evaluator_kwargs"]["num_threads"] = 1  # the same in local and remote trials
        if edit is not None:
            edit(config)

    return write_config(tmp_path, example, tiny_search)


def run_to_done(config: Path, env, timeout: float = 900) -> dict:
    """``nnictl create`` ``config``, wait for DONE, ``nnictl stop``; the run's figures and found gene."""
    from nni_bixnas.experiment.launch import ManagerClient, experiment_id_from_output, free_port, nnictl, stop

    port = free_port()
    started, created = time.monotonic(), time.time()
    exp_id = experiment_id_from_output(nnictl(["create", "--config", str(config), "--port", str(port)], env))
    client = ManagerClient(port)
    try:
        status = client.wait_status(timeout=timeout)
        wall = time.monotonic() - started
        trials = client.trial_jobs()
    finally:
        stop([exp_id], env)
    settings = yaml.safe_load(config.read_text())
    expdir = Path(settings["experimentWorkingDirectory"]) / exp_id
    out_dir = settings["tuner"]["classArgs"]["strategy_kwargs"].get("out_dir") or expdir / "strategy"
    result_file = Path(out_dir) / "result.json"
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    timed = [t for t in trials if t.get("startTime") and t.get("endTime")]
    return {"id": exp_id, "status": status, "wall_s": wall, "trials": trials, "expdir": expdir,
            "first_trial_s": min((t["startTime"] / 1000 - created for t in timed), default=None),
            "trial_s": sum((t["endTime"] - t["startTime"]) / 1000 for t in timed),
            "gene": (result.get("genes") or [None])[0], "result": result}


def remote_edit(port: int, key: Path, out_dir: Path, code_dir: Path = REPO):
    """Point a copy of ``examples/remote.yml`` at the throwaway sshd on 127.0.0.1 (what its EDIT markers ask)."""

    def edit(config: dict) -> None:
        config["trialCodeDirectory"] = str(code_dir)  # "." in examples/remote.yml is examples/; REPO tests .nniignore
        config["tuner"]["codeDirectory"] = str(EXAMPLES)
        config["tuner"]["classArgs"]["strategy_kwargs"]["out_dir"] = str(out_dir)
        config["nniManagerIp"] = "127.0.0.1"
        (machine,) = config["trainingService"]["machineList"]
        machine.update(host="127.0.0.1", port=port, user=getpass.getuser(), sshKeyFile=str(key),
                       pythonPath=str(Path(sys.executable).parent))

    return edit


def _descendants(proc: subprocess.Popen):
    import psutil

    try:
        return [p for p in psutil.Process(proc.pid).children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []


def _cmdlines(processes) -> list:
    import psutil

    lines = []
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            lines.append(proc.cmdline())
    return lines


def _wait_gone(find, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while (left := find()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def local_and_remote(tmp_path: Path, remote_first: bool = False) -> dict:
    """The tiny search with nnictl on the local service, then on the remote service over a throwaway sshd
    (the other way round with ``remote_first``).

    Returns both runs (see :func:`run_to_done`) and what was left running afterwards: ``sshd_children``
    (sessions still open when the experiments were stopped), ``remote_processes`` (anything with the remote
    HOME: trial keeper, trials), ``sshd_running`` and ``port_in_use``.
    """
    from conftest import nni_sandbox, processes_with_home

    remote_home = tmp_path / "remote-home"
    # NNI's remote worker runs `pip install nni --upgrade` at every start: PIP_NO_INDEX keeps it offline and
    # leaves the venv as it is (it prints "Requirement already satisfied").
    session_env = {"HOME": str(remote_home), "PIP_NO_INDEX": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    with throwaway_sshd(tmp_path / "ssh", session_env) as sshd:
        with nni_sandbox(tmp_path / "home") as (_, env):
            configs = {"local": search_config(tmp_path, "bixnas.yml"),
                       "remote": search_config(tmp_path, "remote.yml",
                                               remote_edit(sshd.port, sshd.key, tmp_path / "remote-out"))}
            runs = {name: run_to_done(configs[name], env)
                    for name in (("remote", "local") if remote_first else ("local", "remote"))}
        sshd_children = _cmdlines(_wait_gone(lambda: _descendants(sshd.proc)))
        left = _wait_gone(lambda: processes_with_home(remote_home))
        remote_processes = _cmdlines(left)
        for proc in left:  # reported above; not left running
            with contextlib.suppress(Exception):
                proc.kill()
    return {**runs, "sshd_children": sshd_children, "remote_processes": remote_processes,
            "sshd_running": sshd.proc.poll() is None, "port_in_use": not _port_is_free(sshd.port),
            "remote_home": remote_home}


@pytest.mark.slow
def test_tiny_search_over_the_remote_service_finds_the_gene_of_the_local_run(tmp_path):
    runs = local_and_remote(tmp_path)
    local, remote = runs["local"], runs["remote"]
    print(f"tiny search to DONE: local {local['wall_s']:.0f} s, remote (ssh 127.0.0.1) {remote['wall_s']:.0f} s")

    # everything started is stopped: no sshd session or server, nothing with the remote HOME, the port free
    assert runs["sshd_children"] == [] and runs["remote_processes"] == [], runs
    assert not runs["sshd_running"] and not runs["port_in_use"]

    for run in (local, remote):
        assert run["status"] == "DONE", run["status"]
        assert len(run["trials"]) == 7 and all(t["status"] == "SUCCEEDED" for t in run["trials"])
    assert remote["gene"] is not None and remote["gene"] == local["gene"], (local["gene"], remote["gene"])
    assert remote["result"]["final_samples"] == local["result"]["final_samples"]

    # the trials really ran through the remote worker, in the remote HOME
    assert {t.get("envId") for t in remote["trials"]} == {"remote-worker1"}
    assert all(t["logPath"].startswith("127.0.0.1:") for t in remote["trials"])
    assert (runs["remote_home"] / "nni-experiments" / remote["id"] / "environments" / "remote-worker1").is_dir()
    # the upload is the project root without .venv, .git, runs, ... (.nniignore): small
    tarball = remote["expdir"] / "tarball" / "trial_code.tgz"
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert not [n for n in names if n.split("/")[0] in (".venv", ".git", "runs", ".ci-venv")], names[:20]
    assert "pyproject.toml" in names and tarball.stat().st_size < 5 * 2**20
    # inherit_weights: each Phase 2 stage started from the previous unit's file in the shared out_dir
    out_dir = tmp_path / "remote-out"
    assert len(list((out_dir / "phase2").glob("stage_*/supernet.pt"))) == 5
    log = (remote["expdir"] / "log" / "dispatcher.log").read_text()
    assert f"strategy_kwargs.out_dir {out_dir} must be the same folder on a file system shared" in log


def test_a_relative_out_dir_is_rejected_when_trials_run_elsewhere():
    from nni_bixnas.experiment.spec import check_shared_out_dir

    check_shared_out_dir(None)
    check_shared_out_dir("/shared/bixnas-out")
    with pytest.raises(ValueError, match="out_dir must be an absolute path when trials run on other machines"):
        check_shared_out_dir("runs/out")
