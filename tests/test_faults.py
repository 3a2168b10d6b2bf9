"""Faults survived: a tiny ``bixnas.yml`` experiment whose running trial, dispatcher or NNI manager is killed
with ``kill -9`` mid-search ends DONE (a killed trial's unit is retried; the others after ``nnictl
resume``) with the same final gene and the same retrained weights as an uninterrupted run of the same
seed, and leaves no process or listening port behind."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import psutil
import pytest
import torch

from conftest import nni_sandbox, processes_with_home
from nni_bixnas.experiment.launch import ManagerClient, experiment_id_from_output, free_port, nnictl, stop
from nni_bixnas.training.checkpoint import read_checkpoint
from test_experiment_bixnas import tiny
from test_experiment_nnictl import write_config

# Which process of an experiment each fault kills, by its command line.
VICTIMS = {
    "trial": lambda cmd: "nni.nas.execution.training_service" in cmd and cmd.endswith(" trial"),
    "dispatcher": lambda cmd: "-m nni --exp_params" in cmd and not cmd.startswith("/bin/sh"),
    "manager": lambda cmd: "/nni_node/node " in cmd,
}


def outcome(expdir: Path) -> dict:
    """The final gene and the retrained winner's weights of a finished experiment."""
    result = json.loads((expdir / "strategy" / "result.json").read_text())
    checkpoint = expdir / "strategy" / "retrain" / "seed_0" / "checkpoints" / "best.ckpt"
    return {"gene": result["genes"][0], "weights": read_checkpoint(checkpoint)["state_dict"]}


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_to_done(tmp_path: Path, env, victim=None) -> dict:
    """Create the tiny experiment; with ``victim``, kill that process once Phase 1 and stage 5 finished and
    the next unit runs; resume where needed; wait for DONE. Returns the outcome and the ports used."""
    config = write_config(tmp_path, "bixnas.yml", tiny)
    ports = [free_port()]
    exp_id = experiment_id_from_output(nnictl(["create", "--config", str(config), "--port", str(ports[0])], env))
    expdir = tmp_path / "experiments" / exp_id
    client = ManagerClient(ports[0])
    try:
        if victim is not None:
            kill_mid_search(client, env["HOME"], victim)
            if victim != "trial":  # a killed trial is retried by the strategy; the rest needs a resume
                stop([exp_id], env)  # marks the experiment stopped (nnictl resumes only stopped ones)
                ports.append(free_port())
                nnictl(["resume", exp_id, "--port", str(ports[-1])], env)
                client = ManagerClient(ports[-1])
        assert client.wait_status(timeout=600) == "DONE", client.status()
    finally:
        stop([exp_id], env)
    return {**outcome(expdir), "ports": ports, "log": (expdir / "log" / "dispatcher.log").read_text()}


def kill_mid_search(client: ManagerClient, home: str, victim: str) -> None:
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        trials = client.trial_jobs()
        done = sum(t["status"] == "SUCCEEDED" for t in trials)
        if done >= 2 and any(t["status"] == "RUNNING" for t in trials):  # Phase 1, stage 5 done; stage 4 runs
            processes = [p for p in processes_with_home(Path(home)) if VICTIMS[victim](" ".join(_cmdline(p)))]
            if processes:
                time.sleep(2)  # let the unit get going
                for process in processes:
                    process.kill()
                return
        assert client.status()["status"] not in ("ERROR", "DONE"), client.status()
        time.sleep(0.3)
    pytest.fail(f"no {victim} process to kill while the second Phase 2 stage ran")


def _cmdline(process: psutil.Process) -> list:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    path = tmp_path_factory.mktemp("uninterrupted")
    with nni_sandbox(path / "home") as (_, env):
        return run_to_done(path, env)


@pytest.mark.slow
@pytest.mark.parametrize("victim", list(VICTIMS))
def test_a_process_killed_mid_search_ends_done_with_the_uninterrupted_result(victim, tmp_path, nni_home,
                                                                            uninterrupted):
    _, env = nni_home
    faulted = run_to_done(tmp_path, env, victim)
    assert faulted["gene"] == uninterrupted["gene"]
    assert faulted["weights"].keys() == uninterrupted["weights"].keys()
    for key, value in uninterrupted["weights"].items():
        assert torch.equal(faulted["weights"][key], value), key
    if victim == "trial":
        assert "submitting it again (retry 1 of 1)" in faulted["log"]
    if victim == "manager":
        assert "The NNI manager (pid" in faulted["log"] and "is gone; the dispatcher exits" in faulted["log"]
    for port in faulted["ports"]:
        assert not listening(port), port


@pytest.mark.parametrize("heavy", ["torch", "nni.nas", "pytorch_lightning"])
def test_the_bridge_connects_before_any_heavy_import(heavy):
    """NNI gives the dispatcher 10 s from its start to connect: the bridge module imports neither torch nor
    nni.nas (they come after the connection), so a loaded machine has the whole window for NNI's own imports."""
    import subprocess
    import sys

    code = f"import sys, nni_bixnas.experiment.bridge; sys.exit({heavy!r} in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
