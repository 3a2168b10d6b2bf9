"""The Phase 2 head/tail protocol and the skip-choice mixin, on both search spaces."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from nni_bixnas.space import BiONetPlusPlus, Phase2Supernet, SkipChoice, SkipSpaceMixin

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from second_space import NestedSkipNet  # noqa: E402


def bionet() -> BiONetPlusPlus:
    return BiONetPlusPlus(width=2, stem_width=2, levels=2, iterations=2)


def bionet_fixed() -> BiONetPlusPlus:
    return bionet().freeze({label: [0] for label in bionet().skip_choices()})


def nested() -> NestedSkipNet:
    return NestedSkipNet(width=2, depth=2)


def nested_fixed() -> NestedSkipNet:
    return nested().freeze({"x_0_1": [1], "x_1_1": [0], "x_0_2": [2]})


def tensors_of(features) -> list:
    values = [getattr(features, field.name) for field in dataclasses.fields(features)]
    return [t for v in values for t in (v if isinstance(v, tuple) else (v,)) if isinstance(t, torch.Tensor)]


SPACES = [bionet, bionet_fixed, nested, nested_fixed]
METHODS = ["set_active", "forward_head", "forward_tail"]


@pytest.mark.parametrize("make", SPACES)
def test_spaces_are_phase2_supernets(make):
    assert isinstance(make(), Phase2Supernet)


@pytest.mark.parametrize(
    "methods, expected", [(METHODS, True)] + [([m for m in METHODS if m != gone], False) for gone in METHODS]
)
def test_a_phase2_supernet_has_all_three_methods(methods, expected):
    cls = type("Net", (nn.Module,), {name: lambda self, *args: None for name in methods})
    assert isinstance(cls(), Phase2Supernet) is expected


@pytest.mark.parametrize("make, size", [(bionet, 8), (nested, 4)])
def test_head_then_tail_is_the_forward_and_leaves_the_features(make, size):
    torch.manual_seed(0)
    net = make().eval()
    net.set_active({label: [0, 1] for label in net.skip_choices()})
    x = torch.rand(1, 3, size, size)
    full = net(x)
    for stage in range(net.n_stages + 1):
        features = net.forward_head(x, stage)
        tensors = tensors_of(features)
        before = [t.clone() for t in tensors]
        torch.testing.assert_close(net.forward_tail(features), full)
        assert [id(t) for t in tensors_of(features)] == [id(t) for t in tensors]
        assert all(map(torch.equal, tensors, before))


BIONET_ITERATION_0 = ["enc_0_0", "enc_0_1", "dec_0_0", "dec_0_1"]
BIONET_DEFAULT = {label: [0] for label in BIONET_ITERATION_0 + ["enc_1_0", "enc_1_1", "dec_1_0", "dec_1_1"]}
NESTED_DEFAULT = {"x_0_1": [0], "x_1_1": [0], "x_0_2": [0]}


@pytest.mark.parametrize(
    "make, labels, default, first, second",
    [
        (
            bionet, ["dec_0_0", "dec_0_1", "enc_1_0", "enc_1_1", "dec_1_0", "dec_1_1"], BIONET_DEFAULT,
            ({"dec_0_1": [2, 0], "enc_1_0": [1]}, {"dec_0_1": [0, 2], "enc_1_0": [1]}),
            ({"dec_0_1": [1], "not_a_label": [0]}, {"dec_0_1": [1], "enc_1_0": [1]}),
        ),
        (
            nested, ["x_0_1", "x_1_1", "x_0_2"], NESTED_DEFAULT,
            ({"x_0_2": [2, 0], "x_1_1": [1]}, {"x_0_2": [0, 2], "x_1_1": [1]}),
            ({"x_0_2": [1], "not_a_label": [0]}, {"x_0_2": [1], "x_1_1": [1]}),
        ),
    ],
)
def test_mixin_reads_and_sets_the_choices(make, labels, default, first, second):
    net = make()
    assert list(net.skip_choices()) == labels
    assert all(isinstance(choice, SkipChoice) for choice in net.skip_choices().values())
    assert net.current_choices() == default
    for sample, changed in (first, second):  # labels not in the sample keep their value
        net.set_active(sample)
        assert net.current_choices() == {**default, **changed}
    net.set_active(None)
    assert net.current_choices() == default
    assert all(choice.active is None for choice in net.skip_choices().values())


@pytest.mark.parametrize(
    "make, current",
    [
        # all-[0] leaves the iteration-0 blocks unreached: not built, reported as reading all N = 3 inputs
        (bionet_fixed, {**BIONET_DEFAULT, **{label: [0, 1, 2] for label in BIONET_ITERATION_0}}),
        (nested_fixed, {"x_0_1": [1], "x_1_1": [0], "x_0_2": [2]}),
    ],
)
def test_mixin_on_a_fixed_network(make, current):
    net = make()
    assert net.skip_choices() == {}
    assert net.current_choices() == current
    net.set_active({label: [0] for label in current})
    assert net.current_choices() == current


def test_mixin_without_a_fallback_choice_names_the_block():
    class Space(SkipSpaceMixin):
        def fusion_modules(self):
            return {"a": None}

    with pytest.raises(NotImplementedError, match="Space: block 'a'"):
        Space().current_choices()
    with pytest.raises(NotImplementedError, match="must implement fusion_modules"):
        SkipSpaceMixin().skip_choices()
