"""The training loop: task, checkpoints, exact resume, NaN stop, TensorBoard, evaluate/predict."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from nni_bixnas.training import SegmentationTask, evaluate, fit, load_task, predict

sys.path.insert(0, str(Path(__file__).parent))
from test_training_fixtures import BlobData, StopAt, TinyNet  # noqa: E402

TIMING = {"train_seconds"}


def _task(**kw) -> SegmentationTask:
    torch.manual_seed(0)
    return SegmentationTask(TinyNet(nan_at=kw.pop("nan_at", -1)), **kw)


def _untimed(history):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"lr": -1.0}, "lr must be"),
        ({"lr_decay": -0.1}, "lr_decay"),
        ({"log_images": -1}, "log_images"),
    ],
)
def test_task_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SegmentationTask(TinyNet(), **kwargs)


def test_schedule_is_inverse_time_per_epoch():
    task = SegmentationTask(TinyNet(), lr=1e-3, lr_decay=3e-3)
    config = task.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "epoch"
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in task.model.parameters()}
    for _ in range(300):
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 / 1.9)


def test_losses_binary_and_multiclass():
    logits = torch.zeros(2, 1, 4, 4)
    assert SegmentationTask(TinyNet()).loss(logits, torch.ones(2, 1, 4, 4)).item() == pytest.approx(np.log(2))
    multi = SegmentationTask(TinyNet(num_classes=3), num_classes=3)
    loss = multi.loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    assert loss.item() == pytest.approx(np.log(3))


def test_fit_writes_checkpoints_history_and_run_config(tmp_path):
    result = fit(_task(lr=1e-2), BlobData(), max_epochs=2, out_dir=tmp_path, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2]
    for record in result.history:
        for key in ("train_loss", "val_loss", "val_iou", "val_dice", "val_iou_batch_pooled", "val_dice_batch_pooled",
                    "lr"):
            assert np.isfinite(record[key]), key
    ious = [r["val_iou"] for r in result.history]
    assert result.best_epoch == (2 if ious[1] >= ious[0] else 1)
    assert result.best_iou == max(ious)
    assert result.best_checkpoint == tmp_path / "checkpoints" / "best.ckpt" and result.best_checkpoint.is_file()
    assert result.last_checkpoint.is_file()
    assert torch.load(result.last_checkpoint, weights_only=False)["epoch"] == 1  # Lightning counts from 0
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["best_iou"] == result.best_iou and _untimed(saved["history"]) == _untimed(result.history)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["seed"] == 0 and run["max_epochs"] == 2 and run["lr"] == 1e-2
    assert not list(tmp_path.rglob("*.tmp"))


def test_run_json_records_one_split_across_training_seeds(tmp_path):
    runs = []
    for seed, split_seed in [(0, 0), (5, 0), (5, 3)]:
        out = tmp_path / f"s{seed}_{split_seed}"
        fit("unet", "default:n=10,size=32", max_epochs=1, out_dir=out, progress=False, seed=seed, split_seed=split_seed,
            model_kwargs={"base": 2, "levels": 2})
        runs.append(json.loads((out / "run.json").read_text()))
    assert [r["split_seed"] for r in runs] == [0, 0, 3]
    assert runs[0]["val_sources"] == runs[1]["val_sources"] and len(runs[0]["val_sources"]) == 2
    assert runs[2]["val_sources"] != runs[0]["val_sources"]
    with pytest.raises(ValueError, match="different configuration.*split_seed"):
        fit("unet", "default:n=10,size=32", max_epochs=2, out_dir=tmp_path / "s5_3", progress=False, seed=5,
            split_seed=4, model_kwargs={"base": 2, "levels": 2})


def test_ties_select_the_later_epoch(tmp_path):
    class Blind(nn.Module):  # predicts background everywhere: IoU is 0 at every epoch
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 1)

        def forward(self, x):
            return self.conv(x) * 0 - 10

    result = fit(SegmentationTask(Blind()), BlobData(), max_epochs=2, out_dir=tmp_path, progress=False)
    assert [r["val_iou"] for r in result.history] == [0.0, 0.0]
    assert result.best_epoch == 2
    assert torch.load(result.best_checkpoint, weights_only=False)["epoch"] == 1


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    # lr_decay 0.5 makes a wrongly restored schedule visible; dropout makes the RNG stream matter.
    straight = fit(_task(lr=1e-2, lr_decay=0.5), BlobData(), max_epochs=3, out_dir=tmp_path / "a", progress=False)
    with pytest.raises(RuntimeError, match="simulated kill"):
        fit(_task(lr=1e-2, lr_decay=0.5), BlobData(), max_epochs=3, out_dir=tmp_path / "b", progress=False,
            callbacks=[StopAt(epoch=1, step=2)])
    assert len(json.loads((tmp_path / "b" / "history.json").read_text())["history"]) == 1
    resumed = fit(_task(lr=1e-2, lr_decay=0.5), BlobData(), max_epochs=3, out_dir=tmp_path / "b", progress=False)
    a, b = _weights(straight.last_checkpoint), _weights(resumed.last_checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _untimed(resumed.history) == _untimed(straight.history)
    assert (resumed.best_epoch, resumed.best_iou) == (straight.best_epoch, straight.best_iou)


def test_resume_refuses_a_different_configuration(tmp_path):
    fit(_task(), BlobData(), max_epochs=1, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="different configuration.*lr"):
        fit(_task(lr=5e-3), BlobData(), max_epochs=2, out_dir=tmp_path, progress=False)
    # --no-resume starts afresh in the same folder
    result = fit(_task(lr=5e-3), BlobData(), max_epochs=1, out_dir=tmp_path, progress=False, resume=False)
    assert [r["epoch"] for r in result.history] == [1]


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path):
    # 4 training steps per epoch: the 6th forward is epoch 2, step index 1.
    message = r"epoch 2, step 1 .*last good checkpoint .*last\.ckpt is kept\. Lower the learning rate"
    with pytest.raises(FloatingPointError, match=message):
        fit(_task(nan_at=6), BlobData(), max_epochs=3, out_dir=tmp_path, progress=False)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert len(json.loads((tmp_path / "history.json").read_text())["history"]) == 1


def test_multiclass_training_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    task = SegmentationTask(TinyNet(num_classes=3), num_classes=3, log_images=2)
    result = fit(task, BlobData(num_classes=3), max_epochs=1, out_dir=tmp_path, progress=False)
    assert 0.0 <= result.best_iou <= 1.0
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert {"val_iou", "val_dice", "val_loss"} <= set(events.Tags()["scalars"])
    assert "val/image_gt_prediction" in events.Tags()["images"]


def test_registry_model_round_trip_through_evaluate_and_predict(tmp_path):
    result = fit("unet", "default", max_epochs=1, out_dir=tmp_path / "run", progress=False,
                 model_kwargs={"base": 4, "levels": 2}, patch_size=32)
    task = load_task(result.best_checkpoint)
    assert task.hparams["model_name"] == "unet"
    assert task.hparams["model_kwargs"] == {"in_channels": 3, "num_classes": 1, "base": 4, "levels": 2}

    scores = evaluate(result.best_checkpoint, "default", resize=32)
    assert {"iou", "dice", "iou_batch_pooled", "dice_batch_pooled", "images"} <= set(scores)
    assert scores["images"] == 32 and 0.0 <= scores["iou"] <= 1.0

    image = tmp_path / "cells.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(image)
    [entry] = predict(result.best_checkpoint, [image], tmp_path / "pred")
    mask = np.asarray(Image.open(entry["mask"]))
    assert mask.shape == (40, 50) and set(np.unique(mask)) <= {0, 255}
    assert np.asarray(Image.open(entry["overlay"])).shape == (40, 50, 3)


def test_fit_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="max_epochs"):
        fit(_task(), BlobData(), max_epochs=0, out_dir=tmp_path)
    with pytest.raises(ValueError, match="spec string"):
        fit(_task(), BlobData(), max_epochs=1, out_dir=tmp_path, batch_size=4)
    with pytest.raises(ValueError, match="unknown model|not registered|no model"):
        fit("no_such_net", "default", max_epochs=1, out_dir=tmp_path, patch_size=32)


def test_loading_a_missing_or_foreign_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_task(tmp_path / "none.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="model_name"):
        load_task(tmp_path / "foreign.ckpt")


@pytest.mark.slow
def test_resume_is_exact_with_the_real_data_module_and_augmentation(tmp_path):
    kwargs = dict(max_epochs=2, progress=False, model_kwargs={"base": 4, "levels": 2}, patch_size=32)
    straight = fit("unet", "default", out_dir=tmp_path / "a", **kwargs)
    with pytest.raises(RuntimeError, match="simulated kill"):
        fit("unet", "default", out_dir=tmp_path / "b", callbacks=[StopAt(epoch=1, step=3)], **kwargs)
    resumed = fit("unet", "default", out_dir=tmp_path / "b", **kwargs)
    a, b = _weights(straight.last_checkpoint), _weights(resumed.last_checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _untimed(resumed.history) == _untimed(straight.history)


def test_channels_last_trains_the_same_network_in_nhwc(tmp_path):
    torch.manual_seed(0)
    task = _task(lr=1e-2)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = task.model.eval()(x)
    task.model.train()
    nhwc = fit(task, BlobData(), max_epochs=1, out_dir=tmp_path / "b", progress=False, channels_last=True,
               lr=None)
    convs = [m.weight for m in task.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert json.loads((tmp_path / "b" / "run.json").read_text())["channels_last"] is True
    assert np.isfinite(nhwc.best_iou)
    # the same computation in another layout: equal forwards up to rounding (Adam's normalised steps
    # amplify that rounding on near-zero gradients, so whole trainings are not compared)
    torch.manual_seed(0)
    fresh = _task(lr=1e-2).model.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), before)
        torch.testing.assert_close(fresh.to(memory_format=torch.channels_last)(x), before, rtol=1e-5, atol=1e-6)
    plain = fit(_task(), BlobData(), max_epochs=1, out_dir=tmp_path / "a", progress=False)
    assert json.loads((tmp_path / "a" / "run.json").read_text())["channels_last"] is False
    with pytest.raises(ValueError, match="channels_last must be true or false, got 'yes'"):
        fit(_task(), BlobData(), max_epochs=1, out_dir=tmp_path / "c", channels_last="yes")
    assert plain.best_iou is not None
