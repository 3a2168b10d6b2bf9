"""CHAOS, Table 2: auto-contrast, per-class IoU/Dice, folds by patient, and ``bixnas cv`` end to end on a
fixture in the CHAOS release layout (DICOM + ground-truth PNGs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from chaos_fixture import write_chaos, write_dicom
from nni_bixnas.cli import main
from nni_bixnas.data.chaos import autocontrast
from nni_bixnas.metrics import SegmentationMetrics

# ---------------------------------------------------------------------------------------------------
# auto-contrast


def test_autocontrast_exact_values():
    image = np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 100]], dtype=float)
    # 10 % of 10 pixels: one cut from each end, so lo = 1 (second smallest), hi = 8 (second largest)
    expected = np.clip((image - 1) / 7, 0, 1)
    np.testing.assert_array_equal(autocontrast(image, cutoff=10), expected)
    assert autocontrast(image, cutoff=10)[0].tolist() == [0.0, 0.0, 1 / 7, 2 / 7, 3 / 7]
    # no cut: a plain min-max stretch, so a no-op on [0, 1] data that reaches 0 and 1
    ramp = np.linspace(0, 1, 11)
    np.testing.assert_array_equal(autocontrast(ramp, cutoff=0), ramp)
    flat = np.full((3, 3), 0.25)
    np.testing.assert_array_equal(autocontrast(flat), flat)  # hi <= lo: unchanged, as PIL


def test_autocontrast_matches_pil_on_8_bit_images():
    # 100 pixels: 10 at 0 and 10 at 255 (the 10 % cut from each end), 80 in 100..105 -> lo 100, hi 105, and
    # PIL's 8-bit lookup table int(x * 51 - 5100) is exact there
    values = np.concatenate([np.zeros(10), np.full(10, 255), np.tile(np.arange(100, 106), 14)[:80]])
    image = np.random.default_rng(0).permutation(values).reshape(10, 10).astype(np.uint8)
    ours = autocontrast(image.astype(float), cutoff=10) * 255
    pil = np.asarray(ImageOps.autocontrast(Image.fromarray(image), cutoff=10))
    np.testing.assert_array_equal(ours, pil.astype(float))
    assert set(np.unique(pil)) == {0, 51, 102, 153, 204, 255}


def test_autocontrast_rejects_a_bad_cutoff():
    with pytest.raises(ValueError, match=r"cutoff must be a percent in \[0, 50\), got 50"):
        autocontrast(np.zeros(4), cutoff=50)


def test_chaos_slices_are_min_max_normalised_then_auto_contrasted(tmp_path):
    from nni_bixnas.data.chaos import read_slice

    # 256 x 256 (the loader's size, so no resampling): values 0..65535; 1 % of 65536 pixels = 655 cut per end
    pixels = np.arange(256 * 256).reshape(256, 256)
    write_dicom(tmp_path / "slice.dcm", pixels, 1)
    image, shape = read_slice(tmp_path / "slice.dcm")
    assert shape == (256, 256) and image.shape == (1, 256, 256) and image.dtype == np.float32
    expected = np.clip((pixels - 655) / (65535 - 655 - 655), 0, 1).astype(np.float32)
    np.testing.assert_allclose(image[0], expected, rtol=0, atol=1e-7)
    flat = image[0].ravel()  # flat[i] is the pixel of value i
    assert flat[655] == 0 and flat[656] > 0 and flat[64880] == 1 and flat[64879] < 1


# ---------------------------------------------------------------------------------------------------
# per-class IoU / Dice


def _labels(*maps):
    return torch.tensor(maps)


def _logits(labels, num_classes):
    return torch.nn.functional.one_hot(labels, num_classes).permute(0, 3, 1, 2).float() * 5


def test_per_class_scores_exact():
    metrics = SegmentationMetrics(num_classes=3)
    # image A: class 1 IoU 1/2 Dice 2/3, class 2 predicted only (0); image B: class 1 missed (0), class 2 1/2, 2/3
    pred = _labels([[1, 1], [0, 2]], [[2, 2], [0, 0]])
    truth = _labels([[1, 0], [0, 0]], [[2, 0], [1, 0]])
    metrics.update(_logits(pred, 3), truth)
    # image C (a second batch): class 1 perfect, class 2 in neither -> left out of class 2's mean
    metrics.update(_logits(_labels([[1, 0], [0, 0]]), 3), _labels([[1, 0], [0, 0]]))
    per_class = metrics.compute_per_class()
    assert per_class[1] == pytest.approx({"iou": (1 / 2 + 0 + 1) / 3, "dice": (2 / 3 + 0 + 1) / 3, "images": 3,
                                          "iou_pooled": 2 / 4, "dice_pooled": 4 / 6}, abs=1e-12)
    assert per_class[2] == pytest.approx({"iou": 1 / 4, "dice": 1 / 3, "images": 2,
                                          "iou_pooled": 1 / 3, "dice_pooled": 2 / 4}, abs=1e-12)
    # the headline is unchanged: per image the mean over the classes present (A 1/4, B 1/4, C 1)
    assert metrics.compute()["iou"] == pytest.approx((1 / 4 + 1 / 4 + 1) / 3, abs=1e-12)


def test_per_class_binary_and_empty():
    metrics = SegmentationMetrics()
    assert math.isnan(metrics.compute_per_class()[1]["iou"]) and metrics.compute_per_class()[1]["images"] == 0
    logits = torch.tensor([[[[4.0, -4.0]]], [[[-4.0, -4.0]]]])  # image 1 predicts one pixel, image 2 none
    target = torch.tensor([[[[1.0, 1.0]]], [[[0.0, 0.0]]]])
    metrics.update(logits, target)
    assert metrics.compute_per_class() == {1: pytest.approx(
        {"iou": 1 / 2, "dice": 2 / 3, "images": 1, "iou_pooled": 1 / 2, "dice_pooled": 2 / 3}, abs=1e-12)}
    assert metrics.compute()["iou"] == pytest.approx((1 / 2 + 1) / 2)  # the empty image scores 1 there


# ---------------------------------------------------------------------------------------------------
# folds by patient


def _series(key: str) -> str:
    parts = Path(key).parts
    return "T2SPIR" if "T2SPIR" in parts else parts[-2]  # InPhase / OutPhase


def test_folds_are_by_patient_never_by_slice(tmp_path):
    from nni_bixnas.comparison.cross_validation import fold_plan

    names = ["1", "2", "3", "5", "8", "10", "13"]  # CHAOS MR patient folders are numbered like this
    write_chaos(tmp_path, patients=names, slices=2, size=32)
    plan = fold_plan(f"chaos:{tmp_path}", folds=5)
    val_sets = [set(f["val_patients"]) for f in plan]
    assert sorted(p for s in val_sets for p in s) == sorted(names)  # each patient in exactly one fold
    assert sorted(len(s) for s in val_sets) == [1, 1, 1, 2, 2]
    seen_keys = []
    for fold, patients in zip(plan, val_sets):
        assert set(fold["train_patients"]) == set(names) - patients
        refs = fold["val_dataset"].refs
        assert fold["n_val"] == len(refs) == 3 * 2 * len(patients)  # 3 series x 2 slices per patient
        for patient in patients:
            mine = [r for r in refs if r.source == patient]
            assert sorted(_series(r.key) for r in mine) == ["InPhase"] * 2 + ["OutPhase"] * 2 + ["T2SPIR"] * 2
            assert all(Path(r.key).relative_to(tmp_path).parts[0] == patient for r in mine)
        seen_keys += [r.key for r in refs]
    assert len(seen_keys) == len(set(seen_keys)) == 3 * 2 * len(names)  # every slice validated exactly once


# ---------------------------------------------------------------------------------------------------
# bixnas cv end to end

# a tiny U-Net on 64 x 64 slices; 3 epochs at lr 0.02 learn something of the bright organs
TINY = ["--model", "unet", "--model-arg", "base=4", "--model-arg", "levels=2", "--resize", "64", "--lr", "0.02",
        "--batch-size", "4", "--no-progress", "--num-threads", "1"]


def _mtimes(out: Path):
    return {str(p): p.stat().st_mtime_ns for p in sorted(out.rglob("*.ckpt"))}


def test_cv_end_to_end_then_resume_trains_nothing(tmp_path, monkeypatch, capsys):
    import nni_bixnas.training as training

    write_chaos(tmp_path / "Train_Sets" / "MR", patients=5, slices=1, size=32, organs_bright=True)
    out = tmp_path / "out"
    argv = ["cv", "--data", f"chaos:{tmp_path / 'Train_Sets'}", "--folds", "5", "--epochs", "3", "--out", str(out),
            *TINY]
    calls = []
    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, **k: calls.append(k["fold"]) or real_fit(*a, **k))
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert calls == [0, 1, 2, 3, 4]
    assert "cv: seed 0 fold 5/5 done (%): liver IoU" in printed.err
    assert "| Liver mIoU(%) | Liver DICE(%) |" in printed.out

    report = json.loads((out / "cv.json").read_text())
    assert report["complete"] and report["organs"] == ["liver", "left_kidney", "right_kidney", "spleen"]
    assert sorted(p for f in report["folds"] for p in f["val_patients"]) == ["1", "2", "3", "4", "5"]
    for run in report["runs"]:
        run_dir = out / "seed_0" / f"fold_{run['fold']}"
        assert run["n_val"] == 3 and run["n_train"] == 12  # one patient's 3 series held out
        assert json.loads((run_dir / "run.json").read_text())["val_sources"] == run["val_patients"]
        # scoring the best checkpoint again gives the validation IoU fit recorded for its best epoch ...
        history = json.loads((run_dir / "history.json").read_text())
        assert run["overall"]["iou"] == pytest.approx(history["best_iou"], abs=1e-6)
        # ... and, every organ being in every slice, the mean of the organs' per-image IoUs
        organs = [run["organs"][o]["iou"] for o in report["organs"]]
        assert run["overall"]["iou"] == pytest.approx(sum(organs) / 4, abs=1e-9)
        assert all(run["organs"][o]["images"] == 3 for o in report["organs"])
    assert max(r["organs"]["spleen"]["iou"] for r in report["runs"]) > 0  # something was learnt
    spleen = [f["organs"]["spleen"]["iou"] for f in report["folds"]]
    mean = sum(spleen) / 5
    assert report["summary"]["spleen"]["iou"] == pytest.approx(
        {"mean": mean, "std": math.sqrt(sum((v - mean) ** 2 for v in spleen) / 4), "n": 5})
    table = (out / "cv.md").read_text()
    cell = f"{100 * mean:.1f}±{100 * report['summary']['spleen']['iou']['std']:.1f}"
    assert "\n| unet | " in table and cell in table
    assert table.count("\n| ") == 2 + 1 + 5  # Table 2's header and row, the per-fold header and 5 folds

    # a second run trains nothing: no fit call, checkpoints untouched, the same report
    before, cv_json = _mtimes(out), (out / "cv.json").read_text()
    calls.clear()
    assert main(argv) == 0
    assert calls == [] and _mtimes(out) == before and len(before) == 10
    assert json.loads((out / "cv.json").read_text()) == json.loads(cv_json)
    assert capsys.readouterr().err.count("not trained again") == 5

    # a fold without its fold.json goes through fit again, which finds it finished (no epoch trained)
    (out / "seed_0" / "fold_2" / "fold.json").unlink()
    assert main(argv) == 0
    assert calls == [2] and _mtimes(out) == before
    assert json.loads((out / "cv.json").read_text()) == json.loads(cv_json)

    # scoring the last checkpoints instead is another configuration: every fold goes through fit, nothing is
    # trained, and each scores its last epoch's validation IoU
    calls.clear()
    assert main([*argv, "--checkpoint", "last"]) == 0
    assert calls == [0, 1, 2, 3, 4] and _mtimes(out) == before
    for run in json.loads((out / "cv.json").read_text())["runs"]:
        history = json.loads((out / "seed_0" / f"fold_{run['fold']}" / "history.json").read_text())
        assert run["checkpoint"] == "checkpoints/last.ckpt"
        assert run["overall"]["iou"] == pytest.approx(history["history"][-1]["val_iou"], abs=1e-6)


def test_cv_writes_partial_results_and_continues(tmp_path, monkeypatch):
    """Interrupted after two folds: cv.json says incomplete; the rerun trains only the three others."""
    import nni_bixnas.training as training

    write_chaos(tmp_path / "MR", patients=5, slices=1, size=32)
    out = tmp_path / "out"
    argv = ["cv", "--data", f"chaos:{tmp_path / 'MR'}", "--epochs", "1", "--out", str(out), *TINY]
    calls = []
    real_fit = training.fit

    def stop_at_third(*args, **kwargs):
        calls.append(kwargs["fold"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(training, "fit", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    report = json.loads((out / "cv.json").read_text())
    assert not report["complete"] and [r["fold"] for r in report["runs"]] == [0, 1]
    assert "**Incomplete**: 2 of 5 fold runs done" in (out / "cv.md").read_text()
    calls.clear()
    monkeypatch.setattr(training, "fit", lambda *a, **k: calls.append(k["fold"]) or real_fit(*a, **k))
    assert main(argv) == 0
    assert calls == [2, 3, 4] and json.loads((out / "cv.json").read_text())["complete"]


@pytest.mark.parametrize("extra, message", [
    [["--folds", "1"], "folds must be an int >= 2, got 1"],
    [["--folds", "6"], "6-fold cross-validation needs at least 6 patients, found 5"],
    [["--seeds", "0", "0"], "seeds must be a non-empty list of distinct ints, got [0, 0]"],
    [["--model", "nosuch"], "unknown model 'nosuch'; available:"],
    [["--model-arg", "width"], "--model-arg expects key=value, got 'width'"],
])
def test_cv_bad_option_is_one_error_line(tmp_path, capsys, extra, message):
    write_chaos(tmp_path / "MR", patients=5, slices=1, size=32)
    argv = ["cv", "--data", f"chaos:{tmp_path / 'MR'}", "--epochs", "1", "--out", str(tmp_path / "out"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("bixnas cv: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_cv_missing_folder_or_other_data_is_one_error_line(tmp_path, capsys):
    argv = ["cv", "--epochs", "1", "--out", str(tmp_path / "out"), "--data"]
    assert main([*argv, f"chaos:{tmp_path / 'nosuch'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bixnas cv: error: CHAOS folder {tmp_path / 'nosuch'} does not exist.")
    assert err.count("\n") == 1
    assert main([*argv, "default"]) == 2
    err = capsys.readouterr().err
    assert err == ("bixnas cv: error: data must be a spec of a dataset split by patient (chaos:PATH) for "
                   "cross-validation, got 'default'\n")



def test_a_fold_failing_on_a_rerun_keeps_the_finished_table(tmp_path, monkeypatch, capsys):
    """A finished cv.json/cv.md is not rewritten as 'Incomplete' by a rerun whose fold fails midway."""
    import nni_bixnas.training as training

    write_chaos(tmp_path / "MR", patients=2, slices=1, size=32)
    out = tmp_path / "out"
    argv = ["cv", "--data", f"chaos:{tmp_path / 'MR'}", "--folds", "2", "--epochs", "1", "--out", str(out), *TINY]
    assert main(argv) == 0
    finished = {name: (out / name).read_text() for name in ("cv.json", "cv.md")}
    (out / "seed_0" / "fold_1" / "fold.json").write_text("{")  # damaged: the fold goes through fit again

    def refuse(*args, **kwargs):
        raise ValueError("cannot resume from last.ckpt: the file cannot be read")

    monkeypatch.setattr(training, "fit", refuse)
    capsys.readouterr()
    assert main(argv) == 2
    assert "bixnas cv: error: cannot resume from last.ckpt" in capsys.readouterr().err
    assert {name: (out / name).read_text() for name in finished} == finished
