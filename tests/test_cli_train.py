"""``bixnas train / evaluate / predict / compare``."""

from __future__ import annotations

import json
import re
from pathlib import Path

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


# extra `bixnas train` arguments -> the training settings handed to fit()
TEST_CASES_TRAIN_DATA = [
    [[], {"patch_size": None, "resize": None, "split_seed": 0}],
    [["--patch-size", "256"], {"patch_size": 256, "resize": None, "split_seed": 0}],
    [["--resize", "256", "--patch-size", "128"], {"patch_size": 128, "resize": 256, "split_seed": 0}],
    [["--seed", "3", "--split-seed", "7"], {"patch_size": None, "resize": None, "split_seed": 7, "seed": 3}],
    [["--num-threads", "1"], {"num_threads": 1}],
    [[], {"num_threads": None}],
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
    settings = calls[0]["settings"]
    assert {key: getattr(settings, key) for key in expected} == expected


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


def test_evaluate_prints_a_line_per_image_and_warns_about_training_images(run_dir, capsys):
    ckpt = str(run_dir / "checkpoints" / "best.ckpt")
    val_sources = set(json.loads((run_dir / "run.json").read_text())["val_sources"])
    assert main(["evaluate", "--checkpoint", ckpt, "--data", "default:n=8", "--no-progress"]) == 0
    captured = capsys.readouterr()
    trained = [f"synthetic_{i:04d}" for i in range(8) if f"synthetic_{i:04d}" not in val_sources]
    assert f"warning: the score includes training images: {len(trained)} of the 8 images" in captured.err
    rows = [line.split() for line in captured.out.splitlines() if line.startswith("synthetic_")]
    assert [row[0] for row in rows] == [f"synthetic_{i:04d}" for i in range(8)]
    assert {row[0] for row in rows if row[3] == "yes"} == set(trained)

    assert main(["evaluate", "--checkpoint", ckpt, "--data", "default:n=8", "--split", "val", "--format", "json",
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    scores = json.loads(captured.out)
    assert scores["training_images"] == 0 and scores["warning"] is None and "warning" not in captured.err
    held_out = sorted({f"synthetic_{i:04d}" for i in range(8)} - set(trained))
    assert [r["image"] for r in scores["per_image"]] == held_out
    assert scores["images"] == len(scores["per_image"]) == 8 - len(trained)


def test_evaluate_on_other_data_does_not_warn_and_refuses_split_val(run_dir, capsys):
    ckpt = str(run_dir / "checkpoints" / "best.ckpt")
    assert main(["evaluate", "--checkpoint", ckpt, "--data", "default:n=4,seed=5", "--format", "json",
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    scores = json.loads(captured.out)
    assert scores["training_images"] == 0 and "warning" not in captured.err
    assert main(["evaluate", "--checkpoint", ckpt, "--data", "default:seed=5", "--split", "val"]) == 2
    assert "is not the data it was trained on" in capsys.readouterr().err


def test_evaluate_and_predict_show_progress_unless_no_progress(run_dir, tmp_path, capsys):
    ckpt = str(run_dir / "checkpoints" / "best.ckpt")
    image = tmp_path / "tile.png"
    Image.fromarray(np.full((32, 32, 3), 128, dtype=np.uint8)).save(image)
    commands = {"evaluate": ["evaluate", "--checkpoint", ckpt, "--data", "default:n=4"],
                "predict": ["predict", "--checkpoint", ckpt, str(image), "--out", str(tmp_path / "p")]}
    for name, argv in commands.items():
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert f"{name}: 100%" in err, err
        assert main([*argv, "--no-progress"]) == 0
        assert "%|" not in capsys.readouterr().err


def _dataset_files(folder, n=2):
    """The first ``n`` images of the default data as PNGs in ``folder/images``, their masks in ``folder/masks``."""
    from nni_bixnas.data.build import load_collection

    collection = load_collection(f"default:n={n}")
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
    for ref in collection.patches:
        image, mask = collection.load(ref.key)
        Image.fromarray(np.asarray(image).transpose(1, 2, 0)).save(folder / "images" / f"{ref.key}.png")
        Image.fromarray((np.asarray(mask) * 255).astype(np.uint8)).save(folder / "masks" / f"{ref.key}_mask.png")
    return sorted((folder / "images").iterdir())


@pytest.mark.parametrize("gt", ["{tmp}/masks", "default:n=2"])
def test_predict_with_gt_writes_contours_probabilities_and_scores_each_image(run_dir, tmp_path, capsys, gt):
    from nni_bixnas.training import evaluate

    ckpt = str(run_dir / "checkpoints" / "best.ckpt")
    images = _dataset_files(tmp_path)
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", ckpt, *map(str, images), "--out", str(out), "--probabilities",
                 "--gt", gt.replace("{tmp}", str(tmp_path)), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for image in images:
        for kind in ("mask", "overlay", "contours", "prob", "gt_vs_pred"):
            assert (out / f"{image.stem}_{kind}.png").is_file(), kind
    with Image.open(out / f"{images[0].stem}_gt_vs_pred.png") as picture:  # ground truth | prediction, captioned
        band = picture.size[1] - 64
        assert picture.size[0] == 2 * 64 + 4 and band > 0
        captions = np.asarray(picture.convert("L"))[:band]
        assert (captions[:, :64] < 128).any() and (captions[:, 68:] < 128).any()  # text on both sides
    expected = evaluate(ckpt, "default:n=2")["per_image"]
    for image, scores in zip(images, expected):
        line = next(line for line in text.splitlines() if line.startswith(str(image)))
        assert f"IoU {scores['iou']:.4f}  Dice {scores['dice']:.4f}" in line
    assert "mean over 2 image(s): IoU" in text


def test_predict_gt_in_the_images_folder_takes_the_mask_not_the_image(run_dir, tmp_path, capsys):
    images = _dataset_files(tmp_path)
    together = tmp_path / "together"
    together.mkdir()
    for image in images:  # images and masks in one folder: case.png beside case_mask.png
        (together / image.name).write_bytes(image.read_bytes())
        (together / f"{image.stem}_mask.png").write_bytes((tmp_path / "masks" / f"{image.stem}_mask.png").read_bytes())
    ckpt = str(run_dir / "checkpoints" / "best.ckpt")
    inputs = [str(together / image.name) for image in images]
    assert main(["predict", "--checkpoint", ckpt, *inputs, "--out", str(tmp_path / "a"), "--gt", str(together),
                 "--no-progress"]) == 0
    shared = capsys.readouterr().out
    assert main(["predict", "--checkpoint", ckpt, *inputs, "--out", str(tmp_path / "b"), "--gt",
                 str(tmp_path / "masks"), "--no-progress"]) == 0
    apart = capsys.readouterr().out
    scores = [re.findall(r"IoU \S+  Dice \S+", text) for text in (shared, apart)]
    assert len(scores[0]) == len(images) + 1 and scores[0] == scores[1]  # each image and the mean
    assert main(["predict", "--checkpoint", ckpt, inputs[0], "--out", str(tmp_path / "c"), "--gt", inputs[0]]) == 2
    assert "is the image itself" in capsys.readouterr().err


def test_predict_says_when_a_prediction_is_empty(run_dir, tmp_path, capsys):
    images = _dataset_files(tmp_path)
    assert main(["predict", "--checkpoint", str(run_dir / "checkpoints" / "best.ckpt"), *map(str, images),
                 "--out", str(tmp_path / "pred"), "--threshold", "0.999999", "--no-progress"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "the prediction is empty" in line]
    assert [line.split(":")[0] for line in notes] == [str(image) for image in images]
    assert "threshold 0.999999 (highest foreground probability" in notes[0]
    mask = np.asarray(Image.open(tmp_path / "pred" / f"{images[0].stem}_mask.png"))
    assert not mask.any()


def test_predict_gt_errors_are_one_line(run_dir, tmp_path, capsys):
    images = _dataset_files(tmp_path)
    base = ["predict", "--checkpoint", str(run_dir / "checkpoints" / "best.ckpt"), *map(str, images),
            "--out", str(tmp_path / "pred")]
    assert main([*base, "--gt", str(tmp_path / "masks" / "synthetic_0000_mask.png")]) == 2
    assert "one mask file but 2 images" in capsys.readouterr().err
    assert main([*base, "--gt", str(tmp_path / "nowhere")]) == 2
    assert "no such mask file or folder, and not a data spec" in capsys.readouterr().err


def test_compare_reads_each_runs_seed_from_its_run_json(tmp_path, capsys):
    runs = []
    for seed, iou in zip((0, 1, 2), (0.70, 0.72, 0.75)):
        path = Path(_fake_run(tmp_path / f"bixnet_s{seed}", "bixnet", seed, iou, iou + 0.1))
        (path / "history.json").write_text(json.dumps({"best_iou": iou, "best_dice": iou + 0.1, "seed": 0}))
        runs.append(str(path))
    assert main(["compare", *runs]) == 0
    assert "| bixnet | 3 | 0, 1, 2 |" in capsys.readouterr().out


def test_predict_and_evaluate_a_multi_class_checkpoint(tmp_path, capsys):
    from nni_bixnas.cli.train import format_predictions

    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[4:12, 4:12], mask[18:28, 16:30] = 1, 2
    for i in range(6):
        image = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(image).save(tmp_path / "data" / "images" / f"c{i}.png")
        Image.fromarray(mask).save(tmp_path / "data" / "masks" / f"c{i}.png")
    data = f"folder:{tmp_path / 'data'}"
    argv = ["train", *TINY[:-7], "--data", data, "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    capsys.readouterr()
    ckpt = str(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert main(["evaluate", "--checkpoint", ckpt, "--data", data, "--format", "json", "--no-progress"]) == 0
    per_image = {r["image"]: r for r in json.loads(capsys.readouterr().out)["per_image"]}
    assert main(["predict", "--checkpoint", ckpt, str(tmp_path / "data" / "images" / "c0.png"), "--out",
                 str(tmp_path / "pred"), "--gt", str(tmp_path / "data" / "masks"), "--probabilities",
                 "--no-progress"]) == 0
    assert f"IoU {per_image['c0']['iou']:.4f}" in capsys.readouterr().out
    predicted = np.asarray(Image.open(tmp_path / "pred" / "c0_mask.png"))
    assert predicted.shape == (32, 32) and set(np.unique(predicted)) <= {0, 1, 2}  # class ids
    note = format_predictions([{"image": "x.png", "mask": "m.png", "empty": True, "highest_probability": 0.4,
                                "threshold": None}])
    assert "x.png: the prediction is empty: every pixel is background" in note


@pytest.mark.parametrize("extra, expected_width", [([], 4), (["--model-arg", "width=8"], 8)])
def test_train_gene_takes_the_model_arguments_of_its_header(extra, expected_width, monkeypatch, tmp_path):
    """A gene exported with `# model: bixnet width=4 ...` retrains at the searched width; --model-arg wins."""
    import nni_bixnas.training as training
    from nni_bixnas.space.gene import published_gene
    from nni_bixnas.space.gene_header import model_header

    gene = tmp_path / "gene.txt"
    header = model_header({"width": 4, "stem_width": 4, "in_channels": 3, "num_classes": 1})
    gene.write_text(header + "\n" + published_gene("bixnet").to_text())
    calls = []

    def fake_fit(*args, **kwargs):
        calls.append(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(training, "fit", fake_fit)
    assert main(["train", "--model", "bixnet", "--gene", str(gene), "--out", str(tmp_path / "r"), *extra]) == 2
    kwargs = calls[0]["model_kwargs"]
    assert kwargs["width"] == expected_width and kwargs["stem_width"] == 4
    assert "in_channels" not in kwargs and "num_classes" not in kwargs  # they come from the data


def test_data_sample_writes_a_tile_and_its_mask_for_predict(run_dir, tmp_path, capsys):
    from nni_bixnas.data.build import load_collection
    from nni_bixnas.data.sample import SAMPLE_SPEC

    tile, mask = tmp_path / "tile.png", tmp_path / "tile_mask.png"
    assert main(["data", "sample", str(tile), "--mask", str(mask)]) == 0
    assert f"synthetic_0000 of {SAMPLE_SPEC} -> {tile}, mask -> {mask}" in capsys.readouterr().out
    image, truth = load_collection(SAMPLE_SPEC).load("synthetic_0000")
    assert np.array_equal(np.asarray(Image.open(tile)), np.asarray(image).transpose(1, 2, 0))
    assert np.array_equal(np.asarray(Image.open(mask)), np.asarray(truth) * 255)
    assert main(["predict", "--checkpoint", str(run_dir / "checkpoints" / "best.ckpt"), str(tile), "--out",
                 str(tmp_path / "pred"), "--gt", str(mask), "--no-progress"]) == 0
    assert "IoU" in capsys.readouterr().out
    assert main(["data", "sample", str(tmp_path / "x.png"), "--data", "default:n=2", "--index", "2"]) == 2
    assert "index must be in 0..1" in capsys.readouterr().err
