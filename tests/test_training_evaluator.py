"""The NNI evaluator and the reporting helpers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nni
import pytest
import torch

from nni_bixnas.training import NNIReporter, make_evaluator, nni_tensorboard_dir, train_and_report

sys.path.insert(0, str(Path(__file__).parent))
from test_training_fixtures import TinyNet  # noqa: E402


@pytest.fixture
def reports(monkeypatch):
    sent = {"intermediate": [], "final": []}
    monkeypatch.setattr(nni, "report_intermediate_result", sent["intermediate"].append)
    monkeypatch.setattr(nni, "report_final_result", sent["final"].append)
    return sent


def test_functional_evaluator_reports_every_epoch_and_a_final_dict(tmp_path, reports):
    evaluator = make_evaluator(data="default", max_epochs=2, patch_size=32, out_dir=str(tmp_path))
    torch.manual_seed(0)
    final = evaluator.evaluate(TinyNet(width=4))
    assert len(reports["intermediate"]) == 2
    assert all(set(r) == {"default", "dice", "loss"} for r in reports["intermediate"])
    assert reports["final"] == [final]
    assert {"default", "dice", "iou_batch_pooled", "dice_batch_pooled", "best_epoch", "params", "macs"} <= set(final)
    assert final["default"] == max(r["default"] for r in reports["intermediate"])
    assert final["params"] == sum(p.numel() for p in TinyNet(width=4).parameters())
    # 1x3x512x512: conv3x3 3->4 (+BN) and conv1x1 4->1 dominate; exact rules belong to profile's tests
    assert final["macs"] >= 512 * 512 * (3 * 4 * 9 + 4)
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()


def test_outside_nni_the_real_report_functions_only_log(tmp_path):
    final = train_and_report(TinyNet(width=4), data="default", max_epochs=1, patch_size=32, out_dir=str(tmp_path))
    assert 0.0 <= final["default"] <= 1.0


def test_make_evaluator_rejects_unknown_arguments():
    with pytest.raises(ValueError, match="unknown train_and_report argument.*epochs"):
        make_evaluator(epochs=3)


def test_in_a_trial_tensorboard_goes_to_nni_output_dir_and_is_linked(tmp_path, monkeypatch):
    output = tmp_path / "exp" / "environments" / "local-env" / "trials" / "Ab12C"
    monkeypatch.setenv("NNI_PLATFORM", "local")
    monkeypatch.setenv("NNI_OUTPUT_DIR", str(output))
    monkeypatch.setenv("NNI_TRIAL_JOB_ID", "Ab12C")
    tb_dir = nni_tensorboard_dir()
    assert tb_dir == output / "tensorboard" and tb_dir.is_dir()
    link = tmp_path / "exp" / "trials" / "Ab12C" / "output" / "tensorboard"
    assert link.is_symlink() and os.path.samefile(link, tb_dir)
    assert nni_tensorboard_dir() == tb_dir  # idempotent


def test_no_tensorboard_redirect_outside_a_trial(monkeypatch):
    monkeypatch.delenv("NNI_PLATFORM", raising=False)
    assert nni_tensorboard_dir() is None


def test_reporter_skips_sanity_checks_and_epochs_without_metrics():
    sent = []
    reporter = NNIReporter(report=sent.append)

    class FakeTrainer:
        sanity_checking = False
        is_global_zero = True
        current_epoch = 0
        callback_metrics = {"val_iou": torch.tensor(0.5), "val_dice": torch.tensor(0.6)}

    trainer = FakeTrainer()
    reporter.on_validation_end(trainer, None)
    reporter.on_validation_end(trainer, None)  # same epoch again (e.g. a replayed hook): not re-sent
    trainer.sanity_checking = True
    trainer.current_epoch = 1
    reporter.on_validation_end(trainer, None)
    trainer.sanity_checking, trainer.callback_metrics = False, {}
    reporter.on_validation_end(trainer, None)
    assert sent == [{"default": 0.5, "dice": pytest.approx(0.6)}]


def test_same_seed_same_result_whatever_the_initial_weights(tmp_path, reports):
    finals = []
    for init_seed in (1, 2):
        torch.manual_seed(init_seed)  # NNI builds the frozen model with whatever RNG state it has
        finals.append(train_and_report(TinyNet(width=4), data="default", max_epochs=1, patch_size=32,
                                       seed=3, out_dir=str(tmp_path / str(init_seed))))
    assert finals[0] == finals[1]


def test_retrained_search_result_checkpoint_is_self_describing(tmp_path, reports):
    from nni_bixnas.space import BiONetPlusPlus, published_gene
    from nni_bixnas.training import evaluate

    space = BiONetPlusPlus(width=4, stem_width=4)
    frozen = space.freeze(published_gene().to_sample())
    train_and_report(frozen, data="default", max_epochs=1, patch_size=32, out_dir=str(tmp_path))
    scores = evaluate(tmp_path / "checkpoints" / "best.ckpt", "default", resize=32)
    assert 0.0 <= scores["iou"] <= 1.0
