"""``TrainingSettings``: one frozen, validated object of training settings, and the places that take it."""

import ast
import dataclasses
from pathlib import Path

import pytest

from nni_bixnas.data import SegDataModule
from nni_bixnas.settings import TRAINING_KEYS, TrainingSettings, check_setting
from nni_bixnas.training import fit
from nni_bixnas.training.evaluator import make_evaluator

PACKAGE = Path(__file__).resolve().parents[1] / "nni_bixnas"

# one bad value per setting -> the message (exact); every message names the field and what was expected
TEST_CASES_BAD = [
    [{"data": 3}, "data must be a string, got 3"],
    [{"batch_size": 0}, "batch_size must be a positive int, got 0"],
    [{"seed": 1.5}, "seed must be an int, got 1.5"],
    [{"split_seed": -1}, "split_seed must be a non-negative int, got -1"],
    [{"lr": 0}, "lr must be a finite number > 0, got 0"],
    [{"lr": "1e-3"}, "lr must be a finite number > 0, got '1e-3'; in YAML write 1.0e-3, not 1e-3 (read as a string)"],
    [{"patch_size": (32,)}, "patch_size must be a positive int or an (H, W) pair of them, got (32,)"],
    [{"resize": 0}, "resize must be a positive int or an (H, W) pair of them, got 0"],
    [{"val_fraction": 1.0}, "val_fraction must be a number in [0, 1), got 1.0"],
    [{"precision": 1.5}, "precision must be a Lightning precision like '32-true' or 'bf16-mixed', or None, got 1.5"],
    [{"accelerator": None}, "accelerator must be a string, got None"],
    [{"devices": 0}, "devices must be a positive int, a string like 'auto', or a list of device ids, got 0"],
    [{"channels_last": 1}, "channels_last must be true or false, got 1"],
    [{"num_threads": 0}, "num_threads must be a positive int, got 0"],
    [{"loss": "dice"}, "loss must be one of 'ce', 'dice_ce', got 'dice'"],
]


@pytest.mark.parametrize("bad, message", TEST_CASES_BAD)
def test_a_bad_value_is_one_error_naming_it(bad, message):
    with pytest.raises(ValueError) as err:
        TrainingSettings(**bad)
    assert str(err.value) == message
    with pytest.raises(ValueError) as err:  # the same rule through a mapping, named with the prefix
        TrainingSettings.from_mapping(bad, "training.")
    assert str(err.value) == "training." + message


def test_every_setting_has_a_bad_value_case():
    assert sorted({key for bad, _ in TEST_CASES_BAD for key in bad}) == sorted(TRAINING_KEYS)


def test_settings_are_frozen_and_replace_checks_again():
    settings = TrainingSettings(data="default:n=4", patch_size=32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 3
    assert settings.replace(seed=3).seed == 3 and settings.seed == 0
    with pytest.raises(ValueError, match="split_seed must be a non-negative int, got -2"):
        settings.replace(split_seed=-2)
    with pytest.raises(ValueError, match="unknown training setting.s. epochs; expected some of data, batch_size"):
        settings.replace(epochs=3)


def test_to_dict_is_plain_and_reads_back():
    settings = TrainingSettings(data="default", patch_size=(32, 48), devices=[0, 1], num_threads=1)
    plain = settings.to_dict()
    assert list(plain) == list(TRAINING_KEYS)
    assert plain["patch_size"] == [32, 48] and plain["devices"] == [0, 1]
    assert TrainingSettings.from_mapping(plain) == TrainingSettings(data="default", patch_size=[32, 48],
                                                                    devices=[0, 1], num_threads=1)


def test_from_mapping_refuses_unknown_keys_and_non_mappings():
    assert TrainingSettings.from_mapping(None) == TrainingSettings()
    with pytest.raises(ValueError, match="unknown training setting.s. max_epochs; expected some of data"):
        TrainingSettings.from_mapping({"max_epochs": 3})
    with pytest.raises(ValueError, match="^training must be a dict of training settings, got list$"):
        TrainingSettings.from_mapping(["data"], "training.")


def test_the_data_module_takes_the_settings():
    settings = TrainingSettings(data="default:n=4,size=32", batch_size=3, seed=2, split_seed=1, patch_size=16,
                                val_fraction=0.25)
    module = SegDataModule.from_settings(settings, augment=False)
    assert (module.data, module.batch_size, module.seed, module.split_seed, module.patch_size,
            module.val_fraction, module.augment) == ("default:n=4,size=32", 3, 2, 1, 16, 0.25, False)


def test_fit_takes_the_settings_and_refuses_the_same_setting_beside_them(tmp_path):
    settings = TrainingSettings(data="default:n=4,size=32", num_threads=1)
    with pytest.raises(ValueError, match="^fit: lr, patch_size given beside settings; set them in the"):
        fit("unet", settings=settings, max_epochs=1, out_dir=tmp_path / "a", lr=0.1, patch_size=16)
    with pytest.raises(ValueError, match="^settings must be a TrainingSettings, got dict$"):
        fit("unet", settings={"data": "default"}, max_epochs=1, out_dir=tmp_path / "b")


def test_fit_with_settings_trains_as_with_the_same_keywords(tmp_path):
    keywords = dict(seed=1, batch_size=2, patch_size=32, split_seed=0, num_threads=1)
    data = "default:n=4,size=64"
    plain = fit("unet", data, max_epochs=1, out_dir=tmp_path / "plain", progress=False,
                model_kwargs={"base": 4}, **keywords)
    given = fit("unet", settings=TrainingSettings(data=data, **keywords), max_epochs=1, out_dir=tmp_path / "settings",
                progress=False, model_kwargs={"base": 4})
    assert given.best_iou == plain.best_iou and given.history[0]["val_loss"] == plain.history[0]["val_loss"]


def test_the_evaluator_checks_with_the_same_rules():
    with pytest.raises(ValueError) as err:
        make_evaluator(data="default", split_seed=-1)
    assert str(err.value) == "split_seed must be a non-negative int, got -1"
    assert check_setting("split_seed", 3) == 3


def _checked_names(path: Path):
    """The string first arguments of calls whose function name starts with a check helper's."""
    helpers = ("positive_int", "non_negative_int", "an_int", "fraction", "positive_number", "_check_int",
               "check_setting")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name in helpers and name != "check_setting":
                yield node.args[0].value


def test_no_module_checks_a_training_setting_with_a_rule_of_its_own():
    """Each setting's rule is in nni_bixnas/settings.py; elsewhere a setting is checked with check_setting.

    ``patch_size``/``resize`` (single ints in ``bixnas table1``/``cv``, ``Phase1``'s sizes), ``seed`` of other
    things than training (a strategy's RNG) and ``num_workers`` are not training settings' rules.
    """
    others = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "settings.py" and path.parent == PACKAGE:
            continue
        for name in _checked_names(path):
            if name in ("split_seed", "val_fraction", "lr", "batch_size", "num_threads"):
                others.append(f"{path.relative_to(PACKAGE)}: {name}")
    assert others == []


def test_every_strategy_module_is_at_most_350_lines():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines())
             for p in (PACKAGE / "strategy").glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 350} == {}


def test_a_strategy_takes_the_settings_object_or_a_dict():
    from nni_bixnas.strategy import BiXNAS, ProgressiveEvolution, SelectionMatrix

    settings = TrainingSettings(data="default", patch_size=32)
    for strategy in (ProgressiveEvolution, SelectionMatrix, BiXNAS):
        assert strategy(training=settings).training == settings.to_dict()
        assert strategy(training={"data": "default"}).training == {"data": "default"}
    with pytest.raises(ValueError, match="^training.lr must be a finite number > 0, got -1$"):
        BiXNAS(training={"lr": -1})


# (logits, target, num_classes) -> soft Dice loss, by hand: 1 - mean over images (and classes) of
# (2 * sum(p * y) + 1) / (sum(p) + sum(y) + 1)
TEST_CASES_DICE = [
    # one class, one 1x2 image: p = sigmoid(0) = 0.5 on both pixels, y = [1, 0] -> (2*0.5+1)/(1+1+1) = 2/3
    [[[[[0.0, 0.0]]]], [[[[1.0, 0.0]]]], 1, 1 - 2 / 3],
    # certain and right: p ~ [1, 0] = y -> (2+1)/(2+1) = 1
    [[[[[50.0, -50.0]]]], [[[[1.0, 0.0]]]], 1, 0.0],
    # empty truth, empty prediction: (0+1)/(0+1) = 1
    [[[[[-50.0, -50.0]]]], [[[[0.0, 0.0]]]], 1, 0.0],
    # two classes, one 1x1 image of class 1 predicted 50/50: p1 = 0.5 -> (1+1)/(1.5+1) = 0.8
    [[[[[0.0]], [[0.0]]]], [[[1]]], 2, 1 - 0.8],
]


@pytest.mark.parametrize("logits, target, num_classes, expected", TEST_CASES_DICE)
def test_soft_dice_loss_exact(logits, target, num_classes, expected):
    import torch

    from nni_bixnas.training.task import soft_dice_loss

    logits, target = torch.tensor(logits), torch.tensor(target)
    assert float(soft_dice_loss(logits, target, num_classes)) == pytest.approx(expected, abs=1e-6)


def test_dice_ce_adds_the_dice_loss_to_the_authors_loss():
    import torch

    from nni_bixnas.training.task import SegmentationTask, soft_dice_loss

    logits, target = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.zeros(2, 1, 4, 4)
    target[:, :, :2] = 1
    ce, both = SegmentationTask("unet", loss="ce"), SegmentationTask("unet", loss="dice_ce")
    assert both.hparams["loss"] == "dice_ce"
    assert float(both.loss(logits, target)) == pytest.approx(float(ce.loss(logits, target))
                                                           + float(soft_dice_loss(logits, target)), abs=1e-6)


def test_the_loss_is_recorded_and_part_of_a_resume_identity(tmp_path):
    import json

    settings = TrainingSettings(data="default:n=4,size=64", patch_size=32, num_threads=1)
    fit("unet", settings=settings.replace(loss="dice_ce"), max_epochs=1, out_dir=tmp_path, progress=False,
        model_kwargs={"base": 4})
    assert json.loads((tmp_path / "run.json").read_text())["loss"] == "dice_ce"
    with pytest.raises(ValueError, match="loss: 'dice_ce' -> None"):
        fit("unet", settings=settings, max_epochs=2, out_dir=tmp_path, progress=False, model_kwargs={"base": 4})
