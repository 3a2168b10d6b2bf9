"""``bixnas train / evaluate / predict / compare``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nni_bixnas.cli import main

TINY = ["--model", "unet", "--model-arg", "base=4", "--model-arg", "levels=2", "--data", "default",
        "--patch-size", "32", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "unet_s0"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def test_train_writes_a_self_describing_run(run_dir, capsys):
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["model_name"] == "unet" and run["model_kwargs"]["base"] == 4 and run["data"] == "default"


def test_evaluate_prints_both_metric_variants(run_dir, capsys):
    ckpt = str(run_dir / "checkpoints" / "best.ckpt")
    assert main(["evaluate", "--checkpoint", ckpt, "--data", "default:n=4"]) == 0
    text = capsys.readouterr().out
    assert "IoU  per-image mean" in text and "Dice batch-pooled (batch 2, authors)" in text
    assert main(["evaluate", "--checkpoint", ckpt, "--data", "default:n=4", "--resize", "32", "--format", "json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert {"iou", "dice", "iou_batch_pooled", "dice_batch_pooled"} <= set(scores) and scores["images"] == 4


def test_evaluate_has_resize_not_patch_size(run_dir, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", str(run_dir / "checkpoints" / "best.ckpt"), "--data", "default",
              "--patch-size", "32"])
    assert "unrecognized arguments: --patch-size" in capsys.readouterr().err


# extra `bixnas train` arguments -> the data keyword arguments handed to fit()
TEST_CASES_TRAIN_DATA = [
    [[], {"patch_size": None, "resize": None, "split_seed": 0}],
    [["--patch-size", "256"], {"patch_size": 256, "resize": None, "split_seed": 0}],
    [["--resize", "256", "--patch-size", "128"], {"patch_size": 128, "resize": 256, "split_seed": 0}],
    [["--seed", "3", "--split-seed", "7"], {"patch_size": None, "resize": None, "split_seed": 7, "seed": 3}],
]


@pytest.mark.parametrize("extra, expected", TEST_CASES_TRAIN_DATA)
def test_train_forwards_crop_resize_and_split_seed_to_fit(extra, expected, monkeypatch, tmp_path):
    import nni_bixnas.training as training

    calls = []

    def fake_fit(*args, **kwargs):
        calls.append(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(training, "fit", fake_fit)
    assert main(["train", "--model", "unet", "--out", str(tmp_path / "r"), *extra]) == 2
    assert {key: calls[0][key] for key in expected} == expected


def test_train_help_explains_crop_resize_and_split_seed(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "random crop size for training; validation uses full patches" in text
    assert "downscale every patch, training and validation, to N x N" in text
    assert "seed of the train/validation split, kept fixed across training seeds" in text


def test_predict_writes_masks_and_overlays(run_dir, tmp_path):
    image = tmp_path / "tile.png"
    Image.fromarray(np.full((33, 47, 3), 128, dtype=np.uint8)).save(image)
    assert main(["predict", "--checkpoint", str(run_dir / "checkpoints" / "best.ckpt"), str(image),
                 "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "tile_mask.png").is_file() and (tmp_path / "pred" / "tile_overlay.png").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "nonet", "--epochs", "1"], "unknown model 'nonet'"),
        (["train", "--model", "unet", "--data", "nosuch:/x", "--epochs", "1", "--out", "{tmp}/r"], "nosuch"),
        (["train", "--model", "unet", "--model-arg", "width", "--out", "{tmp}/r"], "key=value"),
        (["train", "--model", "unet", "--gene", "{tmp}/missing.txt"], "gene file not found"),
        (["evaluate", "--checkpoint", "{tmp}/none.ckpt", "--data", "default"], "checkpoint not found"),
        (["compare", "{tmp}"], "no history.json"),
    ],
)
def test_bad_input_is_one_clear_error_line(argv, message, tmp_path, capsys):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bixnas {argv[0]}: error:") and message in err
    assert not list(tmp_path.rglob("*.ckpt"))


def _fake_run(path, model, seed, iou, dice):
    path.mkdir(parents=True)
    (path / "history.json").write_text(json.dumps({"best_iou": iou, "best_dice": dice, "seed": seed, "history": []}))
    (path / "run.json").write_text(json.dumps({"model_name": model, "seed": seed}))
    return str(path)


def test_compare_groups_by_model_and_runs_a_paired_t_test(tmp_path, capsys):
    from scipy.stats import ttest_rel

    a_iou, b_iou = [0.70, 0.72, 0.75], [0.65, 0.69, 0.68]
    a = [_fake_run(tmp_path / f"bixnet_s{s}", "bixnet", s, a_iou[s], a_iou[s] + 0.1) for s in range(3)]
    b = [_fake_run(tmp_path / f"unet_s{s}", "unet", s, b_iou[s], b_iou[s] + 0.1) for s in reversed(range(3))]
    assert main(["compare", *a, *b, "--format", "json"]) == 0
    groups = {g["group"]: g for g in json.loads(capsys.readouterr().out)["groups"]}
    assert groups["bixnet"]["iou"]["mean"] == pytest.approx(np.mean(a_iou))
    assert groups["unet"]["iou"]["std"] == pytest.approx(np.std(b_iou, ddof=1))

    assert main(["compare", "--a", *a, "--b", *b, "--label-a", "bixnet", "--label-b", "unet", "--format", "json"]) == 0
    test = json.loads(capsys.readouterr().out)["paired_t_test"]
    expected = ttest_rel(a_iou, b_iou)  # b was listed in reverse seed order: pairing must follow seeds
    assert test["iou"]["p"] == pytest.approx(expected.pvalue) and test["iou"]["t"] == pytest.approx(expected.statistic)
    assert main(["compare", "--a", *a, "--b", *b]) == 0
    assert "Paired two-tailed t-test" in capsys.readouterr().out

    assert main(["compare", "--a", a[0], "--b", b[0]]) == 2
    assert "at least 2 seeds" in capsys.readouterr().err
