"""No code runs from a file: crafted checkpoints and strategy states are refused, or read as data only.

Every crafted file carries a payload that writes a marker file when unpickled; the tests check that the
marker never appears and that the user gets one clear error (or, for ``bixnas export``, a normal export).
``test_the_payloads_run_when_loaded_unsafely`` proves that each payload is live.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import shlex
from pathlib import Path

import nni
import numpy as np
import pytest
import torch
from PIL import Image

from nni_bixnas.cli import main
from nni_bixnas.experiment.export import export_experiment, read_experiment
from nni_bixnas.experiment.state import STATE_FILE, read_state_data
from nni_bixnas.training import evaluate, fit, load_checkpoint, load_task
from nni_bixnas.training.checkpoint import read_checkpoint
from test_experiment_export import EXP_ID, fabricate

NOT_OURS = "not a checkpoint written by nni_bixnas"


class Payload:
    """Unpickling this writes ``marker``: what a crafted file would do with ``os.system`` instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


class SystemPayload(Payload):
    """The same through ``os.system``, whose module torch blocks with other words ("Trying to load unsupported
    GLOBAL posix.system whose module posix is blocked")."""

    def __reduce__(self):
        return os.system, (f"echo 'code ran' > {shlex.quote(self.marker)}",)


def crafted_checkpoint(path: Path, marker: Path, payload=Payload) -> Path:
    """A ``.ckpt`` that looks like ours (state_dict, model_name) with the payload among its values."""
    torch.save({"state_dict": {}, "hyper_parameters": {"model_name": "unet"}, "loops": payload(marker)}, path)
    return path


def crafted_state(path: Path, marker: Path) -> Path:
    """A ``strategy_state.json`` with the three ways ``nni.load`` runs code: a cloudpickled object, a
    pickled type and a traced call."""
    blob = base64.b64encode(pickle.dumps(Payload(marker))).decode()
    code = f"open({str(marker)!r}, 'w').write('code ran')"
    state = {
        "finished": [[0, 0.65]],
        "object": {"__nni_obj__": blob},
        "type": {"__nni_type__": "bytes:" + blob},
        "call": {"__symbol__": "path:builtins.exec", "__args__": [code]},
        "final_sample": {"__nni_obj__": blob},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state))
    return path


def one_error_line(capsys, command: str) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bixnas {command}: error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("security") / "unet"
    result = fit("unet", "default:n=6,size=32", max_epochs=1, out_dir=out, model_kwargs={"base": 4, "levels": 2},
                 progress=False, accelerator="cpu", devices=1)
    return result.best_checkpoint


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "cells.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.filterwarnings("ignore:Found positional arguments")
def test_the_payloads_run_when_loaded_unsafely(tmp_path):
    marker = tmp_path / "marker"
    for payload in (Payload, SystemPayload):
        torch.load(crafted_checkpoint(tmp_path / "x.ckpt", marker, payload), weights_only=False)
        assert marker.read_text().strip() == "code ran"
        marker.unlink()
    torch.load(crafted_checkpoint(tmp_path / "x.ckpt", marker), weights_only=False)
    for key in ("object", "type", "call"):
        marker.unlink()
        state = json.loads(crafted_state(tmp_path / "state.json", marker).read_text())
        nni.load(json.dumps({key: state[key]}))
        assert marker.read_text() == "code ran", key


# -- checkpoints ------------------------------------------------------------------------------------
PAYLOADS = [[Payload, "it holds a pickled Python object (exec)"],
            [SystemPayload, f"it holds a pickled Python object ({os.system.__module__}.system)"]]


@pytest.mark.parametrize("payload, message", PAYLOADS)
@pytest.mark.parametrize("loader", [read_checkpoint, load_checkpoint, load_task])
def test_a_crafted_checkpoint_is_refused_without_running_code(loader, payload, message, tmp_path):
    marker = tmp_path / "marker"
    path = crafted_checkpoint(tmp_path / "evil.ckpt", marker, payload)
    with pytest.raises(ValueError, match="evil.ckpt") as err:
        loader(path)
    assert NOT_OURS in str(err.value) and message in str(err.value) and "corrupt" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("payload, message", PAYLOADS)
def test_train_does_not_resume_a_crafted_last_checkpoint(payload, message, tmp_path, capsys):
    out, marker = tmp_path / "run", tmp_path / "marker"
    tiny = ["--model", "unet", "--model-arg", "base=4", "--model-arg", "levels=2", "--data", "default:n=6,size=32",
            "--epochs", "1", "--no-progress", "--out", str(out)]
    assert main(["train", *tiny]) == 0
    capsys.readouterr()
    crafted_checkpoint(out / "checkpoints" / "last.ckpt", marker, payload)
    assert main(["train", *tiny]) == 2
    line = one_error_line(capsys, "train")
    assert f"cannot resume from {out / 'checkpoints' / 'last.ckpt'}: {message}" in line
    assert not marker.exists()


def test_a_crafted_raw_pickle_is_refused_without_running_code(tmp_path):
    marker, path = tmp_path / "marker", tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps(Payload(marker), protocol=2))  # torch's legacy (non-zip) format
    with pytest.raises(ValueError, match=NOT_OURS):
        load_task(path)
    assert not marker.exists()


def test_evaluate_of_a_crafted_checkpoint_is_one_error_line(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    assert main(["evaluate", "--checkpoint", str(path), "--data", "default:n=2"]) == 2
    line = one_error_line(capsys, "evaluate")
    assert str(path) in line and NOT_OURS in line
    assert not marker.exists()


def test_predict_of_a_crafted_checkpoint_is_one_error_line(tmp_path, image, capsys):
    marker, out = tmp_path / "marker", tmp_path / "masks"
    path = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    assert main(["predict", "--checkpoint", str(path), str(image), "--out", str(out)]) == 2
    line = one_error_line(capsys, "predict")
    assert str(path) in line and NOT_OURS in line
    assert not marker.exists() and not out.exists()


def test_a_real_checkpoint_loads_weights_only_and_evaluates(real_checkpoint, tmp_path, image, capsys):
    torch.load(real_checkpoint, weights_only=True)  # every value is a tensor or plain data
    assert load_task(real_checkpoint).hparams["model_name"] == "unet"
    scores = evaluate(real_checkpoint, "default:n=2", device="cpu")
    assert scores["images"] == 2 and 0.0 <= scores["iou"] <= 1.0
    assert main(["predict", "--checkpoint", str(real_checkpoint), str(image), "--out", str(tmp_path / "m"),
                 "--device", "cpu"]) == 0
    assert (tmp_path / "m" / "cells_mask.png").is_file()


def test_a_truncated_checkpoint_is_a_clear_error(real_checkpoint, tmp_path, capsys):
    path = tmp_path / "last.ckpt"
    data = real_checkpoint.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_task(path)
    assert main(["evaluate", "--checkpoint", str(path), "--data", "default:n=2"]) == 2
    assert str(path) in one_error_line(capsys, "evaluate")


def _edited(real_checkpoint: Path, path: Path, **hparams) -> Path:
    checkpoint = torch.load(real_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"].update(hparams)
    torch.save(checkpoint, path)
    return path


def test_a_checkpoint_of_another_model_names_mismatched_keys(real_checkpoint, tmp_path, capsys):
    path = _edited(real_checkpoint, tmp_path / "other.ckpt", model_name="bionet")
    with pytest.raises(ValueError, match="do not fit the 'bionet' network") as err:
        load_task(path)
    assert "missing keys: model." in str(err.value) and "unexpected keys: model." in str(err.value)
    assert main(["evaluate", "--checkpoint", str(path), "--data", "default:n=2"]) == 2
    assert str(path) in one_error_line(capsys, "evaluate")


def test_a_checkpoint_with_other_shapes_names_them(real_checkpoint, tmp_path):
    kwargs = dict(torch.load(real_checkpoint, weights_only=True)["hyper_parameters"]["model_kwargs"], base=8)
    with pytest.raises(ValueError, match=r"other shapes: model\.\S+ \(4, 3, 3, 3\) in the file, \(8, 3, 3, 3\)"):
        load_task(_edited(real_checkpoint, tmp_path / "wider.ckpt", model_kwargs=kwargs))


# -- bixnas export ---------------------------------------------------------------------------------
def test_export_reads_a_crafted_strategy_state_as_data_only(tmp_path, capsys):
    marker = tmp_path / "marker"
    expdir = fabricate(tmp_path / "exps")
    crafted_state(expdir / "checkpoint" / STATE_FILE, marker)
    results = read_experiment(EXP_ID, tmp_path / "exps")
    assert results.strategy_state == {"finished": [[0, 0.65]], "object": None, "type": None, "call": None,
                                      "final_sample": None}
    out = tmp_path / "out"
    assert main(["export", EXP_ID, "--out", str(out), "--experiment-dir", str(tmp_path / "exps")]) == 0
    assert not marker.exists()
    # the crafted final_sample was not taken for an architecture: the best-IoU trial was
    assert "trial Eeee5" in json.loads((out / "gene.json").read_text())["source"]


def test_export_of_a_pickled_strategy_state_ignores_it(tmp_path, caplog):
    marker = tmp_path / "marker"
    expdir = fabricate(tmp_path / "exps")
    (expdir / "checkpoint" / STATE_FILE).write_bytes(pickle.dumps(Payload(marker)))
    written = export_experiment(EXP_ID, out_dir=tmp_path / "out", experiment_dir=expdir)
    assert written["gene"].is_file() and not marker.exists()
    assert "is not a JSON strategy state" in caplog.text


def test_export_does_not_copy_a_crafted_checkpoint(tmp_path, caplog):
    marker = tmp_path / "marker"
    strategy_out = tmp_path / "bixnas_out"
    strategy_out.mkdir()
    evil = crafted_checkpoint(strategy_out / "best.ckpt", marker)
    (strategy_out / "result.json").write_text(json.dumps({"retrained": [{"default": 0.8, "checkpoint": str(evil)}]}))
    fabricate(tmp_path / "exps", strategy_out=strategy_out)
    written = export_experiment(EXP_ID, out_dir=tmp_path / "out", experiment_dir=tmp_path / "exps")
    assert "checkpoint" not in written and not (tmp_path / "out" / "best.ckpt").exists()
    assert not marker.exists() and NOT_OURS in caplog.text


def test_read_state_data_keeps_plain_data_and_drops_encoded_objects(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"a": [1, 2.5, None, True, "x", {"__ndarray__": [1], "dtype": "uint32"}],
                                "b": {"py/reduce": []}, "c": {"__init__": 1, "ok": 2}}))
    assert read_state_data(path) == {"a": [1, 2.5, None, True, "x", None], "b": None, "c": None}
    assert read_state_data(tmp_path / "absent.json") is None
    path.write_text("[" * 100_000)
    with pytest.raises(ValueError, match="not a JSON strategy state"):
        read_state_data(path)
