"""``bixnas table1``: every model with one recipe and seeds, scored on a test set and TNBC, resumable; the
paired t-test; the input sizes of the Table 1 baselines."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from nni_bixnas.cli import main
from nni_bixnas.comparison.stats import paired_test

DATA = "default:n=8,size=32"  # 6 training, 2 validation tiles
TEST = "default:n=4,size=32,seed=7"  # other tiles than the training data's (seed 0)
TINY = ["--data", DATA, "--epochs", "1", "--num-threads", "1"]


# ---------------------------------------------------------------------------------------------------
# the paired t-test, exact values (scipy.stats.ttest_rel, computed once; the first two by hand too:
# differences 0.05, 0.03, 0.07 -> t = 0.05 / (0.02 / sqrt 3); 0.01, 0.03 -> t = 2, p = 1 - 2 atan(2) / pi)

TEST_CASES_T = [
    [[0.70, 0.72, 0.75], [0.65, 0.69, 0.68], 4.330127018922199, 0.049413624213283006],
    [[0.81, 0.79], [0.80, 0.76], 2.0, 0.2951672353008665],
    [[0.5, 0.6, 0.7, 0.8], [0.52, 0.58, 0.71, 0.77], 0.42008402520840293, 0.7026969438943617],
    [[0.3, 0.4, 0.2], [0.35, 0.38, 0.31], -1.242299113182559, 0.34003367089255576],
]


@pytest.mark.parametrize("a, b, t, p", TEST_CASES_T)
def test_paired_t_test_exact_values_pairing_by_seed(a, b, t, p):
    runs_a = [{"seed": s, "x": v} for s, v in enumerate(a)]
    runs_b = [{"seed": s, "x": v} for s, v in reversed(list(enumerate(b)))]  # listed in another order
    result = paired_test(runs_a, runs_b, {"x": "x"})
    assert result["paired_seeds"] == list(range(len(a)))
    assert result["x"]["t"] == pytest.approx(t, rel=1e-12) and result["x"]["p"] == pytest.approx(p, rel=1e-12)
    assert result["x"]["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)), abs=1e-15)


TEST_CASES_T_UNDEFINED = [
    [[0.5, 0.75], [0.5, 0.75], None],  # every difference 0: t = 0 / 0
    [[0.5, 0.75], [0.25, 0.5], 0.0],  # every difference 0.25 (exact in binary): t infinite, p 0
]


@pytest.mark.parametrize("a, b, p", TEST_CASES_T_UNDEFINED)
def test_paired_t_test_of_equal_differences_has_no_t_and_stays_valid_json(a, b, p):
    result = paired_test([{"seed": s, "x": v} for s, v in enumerate(a)], [{"seed": s, "x": v} for s, v in enumerate(b)],
                         {"x": "x"})
    assert result["x"]["t"] is None and result["x"]["p"] == p
    json.dumps(result, allow_nan=False)


# ---------------------------------------------------------------------------------------------------
# end to end: 2 models x 2 seeds x 1 epoch, a test set and a TNBC-layout transfer set


def _tnbc_folder(root: Path) -> Path:
    """4 TNBC-layout images (Slide_01/01_N.png, GT_01/01_N.png) of synthetic tiles no run trains on."""
    from nni_bixnas.data.synthetic import generate_tile

    for i in range(1, 5):
        image, mask = generate_tile(11, i, 32)
        for folder, array in (("Slide_01", image.transpose(1, 2, 0)), ("GT_01", mask * 255)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(array)).save(root / folder / f"01_{i}.png")
    return root


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("table1")
    tnbc = f"tnbc:{_tnbc_folder(root / 'tnbc')}"
    argv = ["table1", *TINY, "--test", TEST, "--tnbc", tnbc, "--models", "unet", "bixnet", "--seeds", "0", "1",
            "--out", str(root / "out")]
    assert main(argv) == 0
    return SimpleNamespace(out=root / "out", argv=argv, tnbc=tnbc,
                           report=json.loads((root / "out" / "table1.json").read_text()))


def test_every_model_and_seed_is_trained_scored_and_summarised(table):
    from scipy.stats import ttest_rel

    report = table.report
    assert [r["model"] for r in report["rows"]] == ["unet", "bixnet"] and report["missing"] == []
    runs = {(r["model"], r["seed"]): r for r in report["runs"]}
    assert set(runs) == {("unet", 0), ("unet", 1), ("bixnet", 0), ("bixnet", 1)}
    for row in report["rows"]:
        mine = [runs[row["model"], s] for s in (0, 1)]
        values = [r["test"]["iou"] for r in mine]
        assert row["n"] == 2 and row["test_iou"]["mean"] == pytest.approx(np.mean(values))
        assert row["test_iou"]["std"] == pytest.approx(np.std(values, ddof=1))
        assert row["tnbc_dice"]["mean"] == pytest.approx(np.mean([r["tnbc"]["dice"] for r in mine]))
    assert all(r["test"]["images"] == 4 and r["tnbc"]["images"] == 4 for r in runs.values())
    from nni_bixnas import create_model
    from nni_bixnas.profile import count_complexity

    for row in report["rows"]:  # the one counter, at 1x3x512x512 (its exact counts: test_models_profile.py)
        cx = count_complexity(create_model(row["model"]), input_size=(512, 512), in_channels=3)
        assert (row["params"], row["macs"]) == (cx.params, cx.macs)
    (test,) = report["tests"]
    expected = ttest_rel([runs["bixnet", s]["tnbc"]["iou"] for s in (0, 1)],
                         [runs["unet", s]["tnbc"]["iou"] for s in (0, 1)])
    assert (test["a"], test["b"], test["paired_seeds"]) == ("bixnet", "unet", [0, 1])
    assert test["tnbc_iou"]["p"] == pytest.approx(expected.pvalue)
    text = (table.out / "table1.md").read_text()
    assert "| BiX-Net (`bixnet`) | 0, 1 |" in text and "| U-Net | hand-designed | 0, 1 |" in text
    assert "(the paper: 300)" in text and "Still to do" not in text


def test_the_scores_are_those_of_each_runs_best_checkpoint_on_each_set(table):
    from nni_bixnas.training import evaluate

    run = next(r for r in table.report["runs"] if (r["model"], r["seed"]) == ("bixnet", 1))
    best = Path(run["run"]) / "checkpoints" / "best.ckpt"
    assert run["test"]["iou"] == pytest.approx(evaluate(best, TEST)["iou"], abs=1e-6)
    assert run["tnbc"]["dice"] == pytest.approx(evaluate(best, table.tnbc)["dice"], abs=1e-6)


def test_a_second_call_trains_and_scores_nothing(table, monkeypatch):
    import nni_bixnas.training as training

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was redone")

    monkeypatch.setattr(training, "fit", refuse)
    monkeypatch.setattr(training, "evaluate", refuse)
    results = sorted(table.out.glob("runs/*/table1_result.json"))
    stamps = [p.stat().st_mtime_ns for p in results]
    assert main(table.argv) == 0
    assert [p.stat().st_mtime_ns for p in results] == stamps
    again = json.loads((table.out / "table1.json").read_text())
    assert again["rows"] == table.report["rows"] and again["tests"] == table.report["tests"]


def test_other_settings_in_the_same_folder_are_one_clear_error(table, capsys):
    assert main([*table.argv, "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bixnas table1: error:") and "other settings (epochs: 1 -> 2)" in err


def test_an_interrupted_training_resumes_and_the_validation_part_is_the_default_test_set(tmp_path, monkeypatch, caplog):
    import nni_bixnas.training as training

    real_fit = training.fit

    def one_epoch_then_stop(*args, **kwargs):
        real_fit(*args, **{**kwargs, "max_epochs": 1})
        raise KeyboardInterrupt

    argv = ["table1", "--data", DATA, "--epochs", "2", "--num-threads", "1", "--models", "unet", "--seeds", "3",
            "--out", str(tmp_path)]
    monkeypatch.setattr(training, "fit", one_epoch_then_stop)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    run_dir = tmp_path / "runs" / "unet_s3"
    first = json.loads((run_dir / "history.json").read_text())["history"]
    assert [r["epoch"] for r in first] == [1] and not (run_dir / "table1_result.json").exists()

    monkeypatch.setattr(training, "fit", real_fit)
    with caplog.at_level(logging.INFO, logger="nni_bixnas"):
        assert main(argv) == 0
    assert "resuming from" in caplog.text
    summary = json.loads((run_dir / "history.json").read_text())
    assert [r["epoch"] for r in summary["history"]] == [1, 2]
    assert summary["history"][0] == first[0]  # epoch 1 was not trained again (same record, same timing)
    (run,) = json.loads((tmp_path / "table1.json").read_text())["runs"]
    assert run["test"]["split"] == "val" and run["test"]["images"] == 2 and run["tnbc"] is None
    assert run["test"]["iou"] == pytest.approx(summary["best_iou"], abs=1e-6)  # the checkpoint's own validation
    assert "the validation part of the split (2 items)" in (tmp_path / "table1.md").read_text()


# ---------------------------------------------------------------------------------------------------
# bad input: one clear line, nothing written


TEST_CASES_BAD = [
    [["--models", "unet", "nonet"], "unknown model 'nonet' in models; available:"],
    [["--tnbc", "tnbc:{tmp}/no-tnbc"], "tnbc 'tnbc:{tmp}/no-tnbc': TNBC folder {tmp}/no-tnbc does not exist"],
    [["--data", "monuseg:{tmp}/no-monuseg"], "data 'monuseg:{tmp}/no-monuseg':"],
    [["--test", "nosuch:x"], "unknown data scheme 'nosuch'"],
    [["--seeds", "0", "0"], "seeds lists a seed twice: [0, 0]"],
    [["--epochs", "0"], "epochs must be a positive int, got 0"],
    [["--val-fraction", "0"], "val_fraction must be > 0"],
    [["--models", "bixnet", "--data", "default:n=8,size=48"], "bixnet needs inputs divisible by 32"],
]


@pytest.mark.parametrize("extra, message", TEST_CASES_BAD)
def test_bad_input_is_one_clear_error_line_and_writes_nothing(extra, message, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["table1", *TINY, "--out", str(out), *(a.replace("{tmp}", str(tmp_path)) for a in extra)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("bixnas table1: error:") and message.replace("{tmp}", str(tmp_path)) in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


# ---------------------------------------------------------------------------------------------------
# input sizes of the Table 1 baselines (training.input_size)


def _info(side: int, n_train: int = 6):
    return SimpleNamespace(image_size=(side, side), crop_size=None, n_train=n_train)


TEST_CASES_SIZES = [
    ["r2unet", _info(40), 2, "r2unet needs inputs divisible by 16 (2 ** levels with levels=4)"],
    ["r2unet", _info(48), 2, None],
    ["nasunet", _info(40, n_train=5), 2, None],  # any size, GroupNorm only: nothing to check
    ["autodeeplab", _info(40), 2, None],  # any size
    ["autodeeplab", _info(512, n_train=5), 2, "autodeeplab trains on batches of 2 or more images (the ASPP's "
                                              "image-pooling BatchNorm sees one value a channel and image"],
    ["unet", _info(16, n_train=1), 2, "16x16 training inputs shrink to 1x1 at the deepest BatchNorm of unet"],
]


@pytest.mark.parametrize("name, info, batch_size, message", TEST_CASES_SIZES)
def test_input_size_rules_of_the_table1_baselines(name, info, batch_size, message):
    from nni_bixnas.models import create_model
    from nni_bixnas.training.input_size import check_model_input

    with torch.device("meta"):
        model = create_model(name)
    if message is None:
        check_model_input(model, name, info, batch_size)
    else:
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            check_model_input(model, name, info, batch_size)
