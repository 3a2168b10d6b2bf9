"""Bad files, bad folders and bad settings: one ``bixnas <cmd>: error: ...`` line, status 2, nothing lost."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from nni_bixnas import utils
from nni_bixnas.cli import main
from nni_bixnas.space.gene import Gene
from nni_bixnas.training import SegmentationTask, fit
from nni_bixnas.training.callbacks import FiniteLossGuard, TrainingDiverged

sys.path.insert(0, str(Path(__file__).parent))
from test_experiment_spec import GOOD  # noqa: E402  (the valid classArgs the bridge tests use)
from test_training_fixtures import BlobData, TinyNet  # noqa: E402

TINY = ["--model", "unet", "--model-arg", "base=4", "--model-arg", "levels=2", "--data", "default:n=8,size=32",
        "--no-progress"]


def _error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error line"
    assert err[-1].startswith(f"bixnas {command}: error: "), err[-1]
    assert not any("Traceback" in line for line in err)
    return err[-1]


def _digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "tensorboard" not in p.parts}


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    """A finished one-epoch `bixnas train` run folder (copy it before changing it)."""
    out = tmp_path_factory.mktemp("errors") / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(one_epoch, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(one_epoch, out)
    return out


# ---------------------------------------------------------------------------------------------------
# 1. an unreadable last.ckpt on resume

def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _foreign_weights(path: Path) -> None:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint["state_dict"] = {"model.other.weight": torch.zeros(3)}
    torch.save(checkpoint, path)


TEST_CASES_BAD_LAST = [
    [_truncate, "probably truncated or corrupt"],
    [lambda p: p.write_bytes(os.urandom(4096)), "probably truncated or corrupt"],
    [lambda p: p.write_bytes(b""), "probably truncated or corrupt"],
    [lambda p: torch.save({"hello": 1}, p), "not a training checkpoint"],
    [_foreign_weights, "weights do not fit the model"],
]


@pytest.mark.parametrize("damage, message", TEST_CASES_BAD_LAST)
def test_bad_last_checkpoint_is_one_line_naming_it_and_no_resume(damage, message, run_copy, capsys):
    last = run_copy / "checkpoints" / "last.ckpt"
    damage(last)
    before = _digests(run_copy)
    assert main(["train", *TINY, "--epochs", "2", "--out", str(run_copy)]) == 2
    line = _error_line(capsys, "train")
    assert f"cannot resume from {last}" in line and message in line and "--no-resume" in line
    assert _digests(run_copy) == before


def _tiny_task():
    torch.manual_seed(0)
    return SegmentationTask(TinyNet(), lr=1e-2)


def test_no_resume_restarts_and_keeps_best_until_an_epoch_scores_as_well(tmp_path):
    torch.manual_seed(0)
    first = fit(_tiny_task(), BlobData(), max_epochs=3, out_dir=tmp_path, progress=False)
    ious = [r["val_iou"] for r in first.history]
    if not (first.best_epoch > 1 and first.best_iou > ious[0]):
        pytest.skip(f"this torch build's run has its best at epoch 1 ({ious}); nothing to keep")
    best_bytes = first.best_checkpoint.read_bytes()
    _truncate(first.last_checkpoint)
    with pytest.raises(ValueError, match="--no-resume"):
        fit(_tiny_task(), BlobData(), max_epochs=3, out_dir=tmp_path, progress=False)

    again = fit(_tiny_task(), BlobData(), max_epochs=1, out_dir=tmp_path, progress=False, resume=False)
    assert [r["epoch"] for r in again.history] == [1]
    assert again.best_checkpoint.read_bytes() == best_bytes  # epoch 1 scored lower: best.ckpt is kept
    assert (again.best_epoch, again.best_iou) == (first.best_epoch, first.best_iou)
    summary = json.loads((tmp_path / "history.json").read_text())
    assert summary["best_from_earlier_run"]["epoch"] == first.best_epoch
    assert torch.load(again.last_checkpoint, weights_only=False)["epoch"] == 0  # a fresh last.ckpt

    # the same run continued: it reaches the kept epoch with the same score and replaces best.ckpt
    resumed = fit(_tiny_task(), BlobData(), max_epochs=3, out_dir=tmp_path, progress=False)
    assert (resumed.best_epoch, resumed.best_iou) == (first.best_epoch, first.best_iou)
    assert "best_from_earlier_run" not in json.loads((tmp_path / "history.json").read_text())


def test_no_resume_with_another_configuration_does_not_keep_the_old_best(run_copy):
    result = fit("unet", "default:n=8,size=32", max_epochs=1, out_dir=run_copy, progress=False, lr=5e-3,
                 model_kwargs={"base": 4, "levels": 2}, resume=False)
    assert result.best_epoch == 1 and result.best_record["lr"] == 5e-3


# ---------------------------------------------------------------------------------------------------
# 2. a read-only or full output folder

def _fail_writes(monkeypatch, name: str, code: int) -> None:
    """Make every atomic write of a file called ``name`` fail with ``OSError(code)``."""
    original = utils.atomic_write

    @contextlib.contextmanager
    def failing(path, *args, **kwargs):
        if Path(path).name == name:
            raise OSError(code, os.strerror(code), str(path))
        with original(path, *args, **kwargs) as handle:
            yield handle

    for module in list(sys.modules.values()):
        ours = getattr(module, "__name__", "").startswith("nni_bixnas")
        if ours and getattr(module, "atomic_write", None) is original:
            monkeypatch.setattr(module, "atomic_write", failing)


TEST_CASES_WRITE_FAILS = [
    ["run.json", errno.ENOSPC, "No space left on device", "free some space"],
    ["last.ckpt", errno.ENOSPC, "No space left on device", "free some space"],
    ["history.json", errno.EACCES, "Permission denied", "writable"],
    ["last.ckpt", errno.EROFS, "Read-only file system", "writable"],
]


@pytest.mark.parametrize("name, code, reason, advice", TEST_CASES_WRITE_FAILS)
def test_a_refused_write_is_one_line_and_keeps_the_files(name, code, reason, advice, run_copy, monkeypatch, capsys):
    before = _digests(run_copy)
    _fail_writes(monkeypatch, name, code)
    assert main(["train", *TINY, "--epochs", "2", "--out", str(run_copy)]) == 2
    line = _error_line(capsys, "train")
    assert f"cannot write {run_copy}" in line and name in line and reason in line and advice in line
    assert "intact" in line
    after = _digests(run_copy)
    if name != "run.json":  # run.json was rewritten (same settings) before the epoch whose save failed
        after.pop("run.json"), before.pop("run.json")
    if name == "history.json":  # epoch 2's checkpoints were saved just before
        assert after.pop("history.json") == before.pop("history.json")
        assert set(after) == set(before)
    else:
        assert after == before
    assert not list(run_copy.rglob("*.tmp"))
    monkeypatch.undo()
    assert main(["train", *TINY, "--epochs", "2", "--out", str(run_copy)]) == 0  # and it resumes once fixed
    assert len(json.loads((run_copy / "history.json").read_text())["history"]) == 2


def _chmod_stops_writes(folder: Path) -> bool:
    try:
        (folder / ".probe").touch()
    except PermissionError:
        return True
    (folder / ".probe").unlink()
    return False


@pytest.mark.parametrize("target", ["run", "checkpoints", "tensorboard", "parent"])
def test_read_only_folder_is_one_line_and_keeps_the_files(target, run_copy, tmp_path, capsys):
    folder = {"run": run_copy, "checkpoints": run_copy / "checkpoints", "tensorboard": run_copy / "tensorboard",
              "parent": tmp_path / "locked"}[target]
    folder.mkdir(exist_ok=True)
    out = tmp_path / "locked" / "new" if target == "parent" else run_copy
    before = _digests(run_copy)
    folder.chmod(0o555)
    try:
        if not _chmod_stops_writes(folder):
            pytest.skip("chmod 0o555 does not stop writes here (running as root, or a file system without modes)")
        assert main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 2
    finally:
        folder.chmod(0o755)
    line = _error_line(capsys, "train")
    assert "Permission denied" in line and f"make {folder} writable" in line
    assert _digests(run_copy) == before


# ---------------------------------------------------------------------------------------------------
# 3. a gene file with binary bytes

@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", b"enc_1_0_1\n\xff\xfe\xfa", b"enc_1_0_1\0\n"])
def test_binary_gene_file_is_named_as_not_text(data, tmp_path, capsys):
    path = tmp_path / "gene.txt"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=f"{path} is not a text gene file"):
        Gene.load(path)
    assert main(["train", "--model", "bixnet", "--gene", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "is not a text gene file" in _error_line(capsys, "train") and not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------------
# 4. NaN/inf pixels

def _float_folder(root: Path, bad: dict) -> Path:
    """``folder:`` data of float TIFFs; ``bad`` maps a stem to its number of NaN/inf pixels."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, stem in enumerate(["a", "b", "c", "d", "e"]):
        image = np.random.default_rng(i).random((32, 32)).astype(np.float32)
        n_bad = bad.get(stem, 0)
        if n_bad:
            image.flat[: n_bad - 1] = np.nan
            image.flat[n_bad - 1] = np.inf
        Image.fromarray(image, mode="F").save(root / "images" / f"{stem}.tif")
        mask = np.zeros((32, 32), np.uint8)
        mask[:16] = 255
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    return root


def test_inspect_counts_nonfinite_pixels_per_file_and_strict_fails(tmp_path, capsys):
    root = _float_folder(tmp_path / "data", {"b": 3, "d": 7})
    assert main(["data", "inspect", f"folder:{root}", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["patches"] == 3 and report["dropped"] == 2
    assert [p for p in report["problems"] if "b.tif has 3 non-finite pixel value(s) (NaN or inf)" in p]
    assert [p for p in report["problems"] if "d.tif has 7 non-finite" in p]
    assert main(["data", "inspect", f"folder:{root}", "--strict"]) == 2
    line = _error_line(capsys, "data")
    assert "--strict: 2 file(s) of folder:" in line and "non-finite" in line and "1 more problem" in line


def test_training_on_nonfinite_pixels_blames_the_data(tmp_path, capsys):
    root = _float_folder(tmp_path / "data", {"c": 2})
    argv = ["train", "--model", "unet", "--model-arg", "base=4", "--model-arg", "levels=2", "--data",
            f"folder:{root}", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    line = _error_line(capsys, "train")
    assert "c.tif has 2 non-finite pixel value(s)" in line and "learning rate" not in line


def test_nan_loss_from_a_nonfinite_batch_blames_the_data_not_the_lr(tmp_path):
    data = BlobData()
    data.train_set.tensors[0][:, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"input batch holds 2 NaN/inf value\(s\): the data is the cause") as err:
        fit(SegmentationTask(TinyNet()), data, max_epochs=1, out_dir=tmp_path, progress=False)
    assert "Lower the learning rate" not in str(err.value)


# ---------------------------------------------------------------------------------------------------
# 5. input sizes the network cannot take, checked before anything is written

TEST_CASES_SIZES = [
    [["--model", "bixnet", "--data", "default:n=8,size=48"], "needs inputs divisible by 32 (2 ** (levels + 1)"],
    [["--model", "unet", "--data", "default:n=8,size=64", "--patch-size", "40"],
     "training crops (patch_size) of the data are 40x40"],
    [["--model", "unet", "--data", "default:n=8,size=64", "--resize", "24"], "items of the data are 24x24"],
    [["--model", "bionet", "--model-arg", "base=2", "--data", "default:n=8,size=32", "--batch-size", "1"],
     "shrink to 1x1 at the deepest BatchNorm"],
    [["--model", "bixnet", "--model-arg", "width=4", "--data", "default:n=6,size=32"],  # 5 items: a batch of 1
     "smallest training batch holds 1 image (5 training items, batch_size 2)"],
]


@pytest.mark.parametrize("argv, message", TEST_CASES_SIZES)
def test_input_size_is_checked_before_the_run_folder_is_made(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *argv, "--epochs", "1", "--no-progress", "--out", str(out)]) == 2
    assert message in _error_line(capsys, "train")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------
# 6. evaluator_kwargs values, checked when an experiment starts


TEST_CASES_EVALUATOR_KWARGS = [
    ["max_epochs", 0, "max_epochs must be a positive int, got 0"],
    ["max_epochs", -5, "max_epochs must be a positive int, got -5"],
    ["max_epochs", 2.0, "max_epochs must be a positive int, got 2.0"],
    ["batch_size", 0, "batch_size must be a positive int, got 0"],
    ["lr", -1e-3, "lr must be a finite number > 0, got -0.001"],
    ["lr", "1e-3", "in YAML write 1.0e-3"],
    ["patch_size", -8, "patch_size must be a positive int or an (H, W) pair"],
    ["resize", [64], "resize must be a positive int or an (H, W) pair"],
    ["val_fraction", 1.5, "val_fraction must be a number in [0, 1), got 1.5"],
    ["seed", "0", "seed must be an int, got '0'"],
    ["split_seed", -1, "split_seed must be a non-negative int, got -1"],
    ["devices", 0, "devices must be a positive int"],
    ["progress", "no", "progress must be true or false"],
]


@pytest.mark.parametrize("key, value, message", TEST_CASES_EVALUATOR_KWARGS)
def test_bad_evaluator_kwargs_are_rejected_naming_the_key(key, value, message):
    from nni_bixnas.experiment.spec import BridgeSpec
    from nni_bixnas.training import make_evaluator

    bad = {**GOOD, "evaluator_kwargs": {**GOOD["evaluator_kwargs"], key: value}}
    with pytest.raises(ValueError) as err:
        BridgeSpec.from_class_args(bad)
    assert str(err.value).startswith(f"classArgs.evaluator_kwargs.{key} ") and message in str(err.value)
    with pytest.raises(ValueError, match=f"^{key} "):
        make_evaluator(**bad["evaluator_kwargs"])


def test_good_evaluator_kwargs_still_pass():
    from nni_bixnas.experiment.spec import BridgeSpec

    kwargs = {**GOOD["evaluator_kwargs"], "lr": 1e-3, "patch_size": [32, 32], "devices": [0], "precision": 16,
              "val_fraction": 0, "progress": False, "out_dir": None, "resize": None}
    BridgeSpec.from_class_args({**GOOD, "evaluator_kwargs": kwargs})


# ---------------------------------------------------------------------------------------------------
# 7. a loss that explodes without becoming NaN

def _guard_trainer(lr: float = 1e-3):
    return SimpleNamespace(current_epoch=0, global_step=0, fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(
        batch_idx=0)), optimizers=[SimpleNamespace(param_groups=[{"lr": lr}])], precision_plugin=None)


TEST_CASES_EXPLOSION = [
    [[0.7, 0.5, 0.9, 999.0], None],
    [[0.7, 0.5, 1001.0], 2],
    [[0.01, 0.02, 999.0], None],  # a small first loss (a pre-trained net): the bound is still 1000
    [[5000.0, 4e6], None],  # the bound scales with a large first loss
    [[5000.0, 6e6], 1],
]


@pytest.mark.parametrize("losses, trips_at", TEST_CASES_EXPLOSION)
def test_explosion_rule(losses, trips_at):
    guard, trainer = FiniteLossGuard(), _guard_trainer()
    for step, loss in enumerate(losses):
        if step == trips_at:
            with pytest.raises(TrainingDiverged, match="training diverged: loss .*lower the learning rate"):
                guard.on_before_backward(trainer, None, torch.tensor(loss))
            return
        guard.on_before_backward(trainer, None, torch.tensor(loss))
    assert trips_at is None


def test_explosion_reference_survives_a_resume():
    guard = FiniteLossGuard()
    guard.on_before_backward(_guard_trainer(), None, torch.tensor(0.7))
    resumed = FiniteLossGuard()
    resumed.load_state_dict(guard.state_dict())
    with pytest.raises(TrainingDiverged):
        resumed.on_before_backward(_guard_trainer(), None, torch.tensor(2000.0))


def test_huge_learning_rate_stops_with_a_clear_line(tmp_path, capsys):
    assert main(["train", *TINY, "--epochs", "2", "--lr", "1e6", "--out", str(tmp_path / "r")]) == 2
    line = _error_line(capsys, "train")
    assert "training diverged: loss" in line and "lower the learning rate (--lr, now 1e+06)" in line


def test_sane_learning_rates_do_not_trip_the_guard(tmp_path):
    for lr in (1e-3, 1e-1):
        result = fit("unet", "default:n=8,size=32", max_epochs=2, out_dir=tmp_path / str(lr), progress=False, lr=lr,
                     model_kwargs={"base": 4, "levels": 2})
        assert len(result.history) == 2


# ---------------------------------------------------------------------------------------------------
# 8. bixnas data inspect --strict

def test_inspect_strict_counts_dropped_files_and_help_says_what_happens_without_it(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for stem in ("a", "b", "c"):
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "images" / f"{stem}.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "masks" / "a.png")
    (tmp_path / "masks" / "b.png").write_bytes(b"not a png")  # c has no mask at all
    assert main(["data", "inspect", f"folder:{tmp_path}"]) == 0
    assert "dropped files:       2" in capsys.readouterr().out
    assert main(["data", "inspect", f"folder:{tmp_path}", "--strict"]) == 2
    line = _error_line(capsys, "data")
    assert "--strict: 2 file(s)" in line and "dropped" in line
    with pytest.raises(SystemExit):
        main(["data", "inspect", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "without --strict the exit status is still 0" in text and "--strict exit with status 2" in text


def test_an_os_error_the_command_meets_is_one_line(tmp_path, capsys, monkeypatch):
    import argparse

    from nni_bixnas import cli

    def refuse(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked"))

    parsed = argparse.Namespace(command="data", func=refuse)
    monkeypatch.setattr(cli, "build_parser", lambda: argparse.Namespace(parse_args=lambda argv: parsed))
    assert cli.main(["data"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bixnas data: error: [Errno 13] Permission denied: '{tmp_path / 'locked'}'"]


# ---------------------------------------------------------------------------------------------------
# 9. each bad input one clear line (issue 21): nothing written, no traceback

GENE_LINES = Gene.parse((Path(__file__).parents[1] / "nni_bixnas" / "space" / "genes" / "bixnet.txt").read_text())


def _gene_file(tmp_path: Path, header: str) -> Path:
    path = tmp_path / "gene.txt"
    path.write_text(f"# model: bixnet {header}\n" + GENE_LINES.to_text())
    return path


def _no_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def _two_cores(monkeypatch) -> None:
    from nni_bixnas.training import devices

    monkeypatch.setattr(devices, "available_cpus", lambda: 2)


TEST_CASES_TRAIN_ARGS = [
    [["--model-arg", "base=abc"], None, "model argument base of 'unet' must be an int, got 'abc'"],
    [["--model-arg", "colour=3"], None,
     "unknown model argument(s) for 'unet': colour; expected some of base, in_channels, levels, num_classes"],
    [["--accelerator", "gpu"], _no_gpu,
     "accelerator (--accelerator) 'gpu': no CUDA GPU is visible on this machine (torch.cuda.is_available() is "
     "False); expected 'cpu' or 'auto' here"],
    [["--accelerator", "cpu", "--devices", "5"], _two_cores,
     "devices (--devices) 5 asks for 5 training processes, but this machine has 2 CPU core(s) this process may "
     "use; expected at most 2"],
]


@pytest.mark.parametrize("extra, patch, message", TEST_CASES_TRAIN_ARGS)
def test_bad_training_settings_are_one_line_before_the_run_folder(extra, patch, message, tmp_path, monkeypatch,
                                                                  capsys):
    if patch is not None:
        patch(monkeypatch)
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", *extra, "--out", str(out)]) == 2
    assert message in _error_line(capsys, "train")
    assert not out.exists()


TEST_CASES_GENE_HEADER = [
    ["colour=2 width=4 stem_width=4",
     "unknown model argument(s) for 'bixnet' (the '# model:' line of {path}): colour; expected some of bn_momentum"],
    ["width=four", "model argument width of 'bixnet' (the '# model:' line of {path}) must be an int, got 'four'"],
    ["levels=3 width=4 stem_width=4",
     "{path} is a gene of 3 iterations and 4 levels, but the net is built with levels=3 (from the arguments or the "
     "'# model:' line); expected a gene of 3 levels, or levels=4"],
]


@pytest.mark.parametrize("command", ["train", "profile"])
@pytest.mark.parametrize("header, message", TEST_CASES_GENE_HEADER)
def test_a_bad_gene_header_is_one_line_naming_the_file(command, header, message, tmp_path, capsys):
    path = _gene_file(tmp_path, header)
    out = tmp_path / "run"
    argv = (["train", "--model", "bixnet", "--gene", str(path), "--data", "default:n=8,size=32", "--epochs", "1",
             "--out", str(out)] if command == "train" else ["profile", "--gene", str(path)])
    assert main(argv) == 2
    assert message.format(path=path) in _error_line(capsys, command)
    assert not out.exists()


def test_a_gene_without_header_builds_the_net_of_its_own_shape():
    from nni_bixnas import create_model

    three_levels = Gene.dense(iterations=2, levels=3)
    net = create_model("bixnet", gene=three_levels.to_text(), width=4, stem_width=4)
    assert (net.iterations, net.levels) == (2, 3)
    with pytest.raises(ValueError, match="unknown model argument\\(s\\) for 'unet': colour"):
        create_model("unet", colour=3)


@pytest.fixture(scope="module")
def checkpoint(one_epoch) -> Path:
    return one_epoch / "checkpoints" / "best.ckpt"


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "cells.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("threshold", ["nan", "5", "0", "-1"])
def test_predict_threshold_outside_0_1_is_one_line(threshold, checkpoint, image, tmp_path, capsys):
    out = tmp_path / "masks"
    argv = ["predict", "--checkpoint", str(checkpoint), str(image), "--out", str(out), "--threshold", threshold]
    assert main([*argv, "--no-progress"]) == 2
    assert f"threshold must be a probability in (0, 1), got {float(threshold)}" in _error_line(capsys, "predict")
    assert not out.exists()


def _full_disk(monkeypatch, out: Path) -> str:
    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write to a full disk: no file named

    monkeypatch.setattr(Image.Image, "save", no_space)
    return f"cannot write {out / 'cells_mask.png'}: No space left on device; free some space and rerun"


def _read_only(monkeypatch, out: Path) -> str:
    def refuse(prefix="", suffix="", dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / f"{prefix}k2j4{suffix}"))

    monkeypatch.setattr(utils.tempfile, "mkstemp", refuse)
    return f"cannot write {out / 'cells_mask.png'}: Permission denied; make {out} writable, or choose another --out"


def _existing_file(monkeypatch, out: Path) -> str:
    out.write_text("a file, not a folder")
    return f"out_dir (--out) {out} is an existing file; expected a folder (an existing one, or one to create)"


def _file_above(monkeypatch, out: Path) -> str:
    _existing_file(monkeypatch, out)
    return f"out_dir (--out) {out / 'masks'}: {out}, above it, is an existing file; expected a folder"


@pytest.mark.parametrize("refusal", [_full_disk, _read_only, _existing_file, _file_above])
def test_predict_into_a_refusing_out_is_one_line_naming_the_path(refusal, checkpoint, image, tmp_path, monkeypatch,
                                                                capsys):
    out = tmp_path / "out"
    message = refusal(monkeypatch, out)
    target = out / "masks" if refusal is _file_above else out
    assert main(["predict", "--checkpoint", str(checkpoint), str(image), "--out", str(target), "--no-progress"]) == 2
    assert message in _error_line(capsys, "predict")
    assert not list(tmp_path.rglob("*.tmp"))


def test_train_into_an_existing_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("")
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 2
    assert f"out_dir (--out) {out} is an existing file; expected a folder" in _error_line(capsys, "train")


def test_evaluate_of_a_colour_checkpoint_on_grayscale_data_is_one_line(checkpoint, tmp_path, capsys):
    root = _float_folder(tmp_path / "gray", {})
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", f"folder:{root}", "--no-progress"]) == 2
    assert (f"'folder:{root}' has 1-channel images but the network of {checkpoint} takes 3-channel ones; expected "
            "data of 3 channel(s)") in _error_line(capsys, "evaluate")


@pytest.mark.parametrize("name, text, message", [
    ["history.json", '{"best_iou": 0.', "is not valid JSON (Expecting"],
    ["history.json", "[1, 2]", "holds a JSON list, not an object"],
    ["run.json", "{", "is not valid JSON (Expecting property name"],
])
def test_compare_of_a_damaged_run_names_the_file(name, text, message, run_copy, capsys):
    (run_copy / name).write_text(text)
    assert main(["compare", str(run_copy)]) == 2
    line = _error_line(capsys, "compare")
    assert f"{run_copy / name} {message}" in line and "bixnas train" in line


def _bad_image_folder(root: Path) -> Path:
    root = _float_folder(root, {})
    data = (root / "images" / "c.tif").read_bytes()
    (root / "images" / "c.tif").write_bytes(data[: len(data) // 2])  # a header that opens, a body that is cut
    return root


def test_a_bad_image_met_in_training_leaves_no_run_folder(tmp_path, capsys):
    root = _bad_image_folder(tmp_path / "data")
    out = tmp_path / "runs" / "new"
    argv = ["train", "--model", "unet", "--model-arg", "base=4", "--model-arg", "levels=2", "--data", f"folder:{root}",
            "--epochs", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 2
    assert f"{root / 'images' / 'c.tif'}" in _error_line(capsys, "train")
    assert not out.exists() and (tmp_path / "runs").is_dir()


def test_a_bad_image_met_in_training_keeps_a_folder_that_was_there(run_copy, tmp_path, capsys):
    root = _bad_image_folder(tmp_path / "data")
    before = _digests(run_copy)
    argv = ["train", "--model", "unet", "--model-arg", "base=4", "--model-arg", "levels=2", "--data", f"folder:{root}",
            "--epochs", "1", "--no-progress", "--no-resume", "--out", str(run_copy)]
    assert main(argv) == 2
    _error_line(capsys, "train")
    after = _digests(run_copy)
    assert set(after) == set(before) - {"checkpoints/last.ckpt"}  # --no-resume drops the old last.ckpt first
    assert all(after[name] == before[name] for name in ("checkpoints/best.ckpt", "history.json"))


# ---------------------------------------------------------------------------------------------------
# 10. bixnas export from a damaged strategy result or state

def _damaged_experiment(root: Path, result: bool) -> Path:
    from nni_bixnas.experiment.state import STATE_FILE
    from test_experiment_export import fabricate

    strategy_out = root / "strategy_out"
    strategy_out.mkdir(parents=True)
    if result:
        (strategy_out / "result.json").write_text('{"genes": ["enc_0_0_0\\nenc_0_1')  # truncated
    expdir = fabricate(root / "exps", strategy_out=strategy_out)
    (expdir / "checkpoint" / STATE_FILE).write_text('{"finished": [[0, 0.')  # truncated
    return strategy_out


def test_export_refuses_a_damaged_result_json(tmp_path, capsys):
    from test_experiment_export import EXP_ID

    strategy_out = _damaged_experiment(tmp_path, result=True)
    out = tmp_path / "export"
    assert main(["export", EXP_ID, "--out", str(out), "--experiment-dir", str(tmp_path / "exps"), "--no-program"]) == 2
    line = _error_line(capsys, "export")
    assert (f"cannot export: {strategy_out / 'result.json'} is not valid JSON" in line
            and "it holds the search's final gene, so no other gene is exported in its place" in line)
    assert not out.exists()


def test_export_without_a_readable_final_gene_says_which_it_took(tmp_path, capsys):
    from test_experiment_export import EXP_ID

    _damaged_experiment(tmp_path, result=False)
    out = tmp_path / "export"
    assert main(["export", EXP_ID, "--out", str(out), "--experiment-dir", str(tmp_path / "exps"), "--no-program"]) == 0
    err = capsys.readouterr().err
    assert ("strategy_state.json is unreadable): exporting the best IoU (trial Eeee5) candidate instead, which need "
            "not be the one the search would have chosen") in err
    assert "trial Eeee5" in json.loads((out / "gene.json").read_text())["source"]
