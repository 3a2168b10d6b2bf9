"""Batched tails (``fair_step(step='batched')``): every member's loss, the parameters' gradients and the
BatchNorm running statistics equal the low-memory step's, in float64, for every stage; and the low-memory
step keeps float32 feature leaves under autocast."""

from __future__ import annotations

import copy

import pytest
import torch

from nni_bixnas.space import BiONetPlusPlus
from nni_bixnas.space.batched_tails import forward_tails
from nni_bixnas.strategy.supernet.fair_step import fair_step, union_sample
from test_fairness import LOSS, S, assert_same_grads, batch, grads, population, run_step, tiny_model


def running_stats(model):
    return {n: b.clone() for n, b in model.named_buffers()}


@pytest.mark.parametrize("stage", [0, 1, 2, 3, 4, 5])
def test_batched_equals_low_memory(stage):
    model = tiny_model()
    members = population(model, max(stage, 1), seed=stage)  # stage 0 (the whole net) has no choices
    twin = copy.deepcopy(model)
    low = run_step(model, stage, members, "low_memory")
    batched = run_step(twin, stage, members, "batched")
    assert batched.losses == pytest.approx(low.losses, rel=1e-12)
    assert batched.loss == pytest.approx(low.loss, rel=1e-12)
    assert_same_grads(grads(twin), grads(model))
    # running statistics: updated member after member, as the sequential tails do
    expected, actual = running_stats(model), running_stats(twin)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-10, atol=1e-13, msg=name)


def test_batched_members_with_different_liveness_and_duplicates():
    model = tiny_model()
    members = population(model, 3, seed=4)
    members = [members[0], members[1], members[0], members[2]]  # a duplicate member counts twice
    live = [model.freeze(m).gene.live_blocks() for m in members]
    assert len({frozenset(b for b in lv if b.startswith("dec_1")) for lv in live}) > 1
    twin = copy.deepcopy(model)
    low = run_step(model, 3, members, "low_memory")
    batched = run_step(twin, 3, members, "batched")
    assert batched.losses == pytest.approx(low.losses, rel=1e-12)
    assert_same_grads(grads(twin), grads(model))


@pytest.mark.parametrize("training", [True, False])
def test_forward_tails_equals_each_members_tail(training):
    model = tiny_model().train(training)
    members = population(model, 2, seed=1)
    images, _ = batch()
    with torch.no_grad():
        model.set_active(union_sample(members))
        head = model.forward_head(images, 2)
        before = running_stats(model)
        outputs = forward_tails(model, head, members)
        for member, logits in zip(members, outputs):
            model.load_state_dict({**model.state_dict(), **before})  # each tail from the same statistics
            model.set_active(member)
            torch.testing.assert_close(logits, model.forward_tail(head), rtol=1e-10, atol=1e-12)
    model.set_active(None)
    assert len(outputs) == S


def test_batched_needs_forward_tails():
    class NoBatch(BiONetPlusPlus):
        forward_tails = None

    torch.manual_seed(0)
    model = NoBatch(width=4, stem_width=4, max_k=5).double()
    with pytest.raises(ValueError, match=r"step='batched' needs a supernet with forward_tails\(features, members\); "
                                         r"NoBatch has none \(use step='low_memory'\)"):
        run_step(model, 1, population(model, 1), "batched")


def test_low_memory_keeps_float32_leaves_under_bf16_autocast():
    torch.manual_seed(0)
    model = BiONetPlusPlus(width=4, stem_width=4, max_k=5).train()
    members = population(model, 2)
    images, target = (t.float() for t in batch())
    naive = copy.deepcopy(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = fair_step(model, images, target, 2, members, LOSS, step="low_memory")
        fair_step(naive, images, target, 2, members, LOSS, step="naive")
    assert result.head_features.stem.dtype == torch.bfloat16  # the head ran in bf16 ...
    assert {g.dtype for g in result.feature_grads if g is not None} == {torch.float32}  # ... its leaves are fp32
    got, want = grads(model), grads(naive)
    assert got.keys() == want.keys()
    assert all(torch.isfinite(g).all() for g in got.values())
    # the same as each member's own bf16 forward/backward, up to bf16 rounding (~1%; measured 1.1%)
    flat_got, flat_want = (torch.cat([g[n].flatten() for n in want]) for g in (got, want))
    assert float((flat_got - flat_want).norm() / flat_want.norm()) < 0.05
