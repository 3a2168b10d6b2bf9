"""Skip fairness of the Phase 2 steps (paper §2.3), checked exactly in float64.

For one batch: every tail receives features bitwise identical to the head's output; no tail modifies
the head's output; the gradient reaching the parameters and the head features is the sum of every
member's own gradient of ``loss_i / s``; and the low-memory step equals the paper's plain step.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Dict, List

import pytest
import torch
import torch.nn as nn
from numpy.random import RandomState

from nni_bixnas.space import BiONetPlusPlus
from nni_bixnas.strategy.supernet.fair_step import (
    FAIR_STEPS,
    detach_features,
    evaluate_members,
    fair_step,
    feature_tensors,
    union_sample,
)

S = 3  # members per step


def tiny_model() -> BiONetPlusPlus:
    torch.manual_seed(0)
    return BiONetPlusPlus(width=4, stem_width=4, max_k=5).double().train()


def population(model: BiONetPlusPlus, stage: int, seed: int = 0) -> List[Dict[str, List[int]]]:
    """``S`` members sharing stages != ``stage``; the first reads only its sequential inputs at ``stage``."""
    rs = RandomState(seed)
    choices = model.skip_choices()
    base = {label: c.choice.random(random_state=rs) for label, c in choices.items()}
    members = []
    for i in range(S):
        member = dict(base)
        for label, c in choices.items():
            if c.choice.stage == stage:
                member[label] = [0] if i == 0 else c.choice.random(random_state=rs)
        members.append(member)
    assert len({str(sorted(m.items())) for m in members}) == S
    return members


def batch(images: int = 2):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(images, 3, 32, 32, generator=g, dtype=torch.float64)
    target = (torch.rand(images, 1, 32, 32, generator=g) > 0.6).double()
    return x, target


LOSS = nn.BCEWithLogitsLoss()


class Recorder:
    """Wraps ``forward_head``/``forward_tail`` of one model instance and keeps what flowed between them."""

    def __init__(self, model: BiONetPlusPlus) -> None:
        self.heads, self.snapshots, self.received = [], [], []
        head, tail = model.forward_head, model.forward_tail

        def forward_head(x, stage):
            out = head(x, stage)
            self.heads.append(out)
            self.snapshots.append([t.detach().clone() for t in feature_tensors(out)])
            return out

        def forward_tail(features, skipped=None):
            self.received.append([t.detach().clone() for t in feature_tensors(features)])
            return tail(features, skipped)

        model.forward_head, model.forward_tail = forward_head, forward_tail


def grads(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def reference_grads(model: BiONetPlusPlus, members, images, target) -> Dict[str, torch.Tensor]:
    """Sum over members of each member's own full forward/backward of loss / s."""
    total: Dict[str, torch.Tensor] = {}
    for member in members:
        model.zero_grad(set_to_none=True)
        model.set_active(member)
        (LOSS(model(images), target) / len(members)).backward()
        for name, g in grads(model).items():
            total[name] = total[name] + g if name in total else g
    model.set_active(None)
    model.zero_grad(set_to_none=True)
    return total


def reference_feature_grads(model: BiONetPlusPlus, stage, members, images, target):
    """Sum over members of d(loss_i / s)/d(head features), each member's tail run on its own."""
    model.set_active(union_sample(members))
    detached, _, leaves = detach_features(model.forward_head(images, stage))
    total = [None] * len(leaves)
    for member in members:
        model.set_active(member)
        loss = LOSS(model.forward_tail(detached), target) / len(members)
        for i, g in enumerate(torch.autograd.grad(loss, leaves, allow_unused=True)):
            if g is not None:
                total[i] = g if total[i] is None else total[i] + g
    model.set_active(None)
    return total


def assert_same_grads(actual, expected, rtol=1e-10):
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=rtol, atol=1e-13, msg=name)


def run_step(model, stage, members, step):
    images, target = batch()
    model.zero_grad(set_to_none=True)
    return fair_step(model, images, target, stage, members, LOSS, step=step)


@pytest.mark.parametrize("stage", [1, 2, 3, 4, 5])
def test_tails_read_the_heads_output_and_never_modify_it(stage):
    model = tiny_model()
    members = population(model, stage)
    recorder = Recorder(model)
    run_step(model, stage, members, "low_memory")
    assert len(recorder.heads) == 1 and len(recorder.received) == S
    snapshot = recorder.snapshots[0]
    for got in recorder.received:
        assert len(got) == len(snapshot)
        assert all(torch.equal(a, b) for a, b in zip(got, snapshot))  # bitwise identical inputs
    now = feature_tensors(recorder.heads[0])
    assert all(torch.equal(a, b) for a, b in zip(now, snapshot))  # the head output is untouched


@pytest.mark.parametrize("stage", [1, 2, 3, 4, 5])
def test_low_memory_gradients_are_the_sum_of_each_members_own(stage):
    model = tiny_model()
    members = population(model, stage)
    images, target = batch()
    expected = reference_grads(model, members, images, target)
    expected_features = reference_feature_grads(model, stage, members, images, target)

    result = run_step(model, stage, members, "low_memory")
    assert_same_grads(grads(model), expected)
    assert len(result.feature_grads) == len(expected_features)
    assert any(g is not None for g in expected_features)
    for got, want in zip(result.feature_grads, expected_features):
        assert (got is None) == (want is None)
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)
    # the mean of the members' own losses
    own = []
    for member in members:
        model.set_active(member)
        with torch.no_grad():
            own.append(float(LOSS(model(images), target)))
    model.set_active(None)
    assert result.losses == pytest.approx(own, rel=1e-12)
    assert result.loss == pytest.approx(sum(own) / S, rel=1e-12)


@pytest.mark.parametrize("stage", [1, 3, 5])
def test_low_memory_equals_plain_and_naive(stage):
    model = tiny_model()
    members = population(model, stage)
    recorder = Recorder(model)
    low = run_step(model, stage, members, "low_memory")
    low_grads = grads(model)
    plain = run_step(model, stage, members, "plain")
    assert_same_grads(grads(model), low_grads)
    assert plain.losses == pytest.approx(low.losses, rel=1e-12)
    naive = run_step(model, stage, members, "naive")
    assert_same_grads(grads(model), low_grads)
    assert naive.losses == pytest.approx(low.losses, rel=1e-12)
    assert len(recorder.heads) == 2 + S  # one head per shared step, one per member for naive


def test_members_with_different_head_liveness_still_get_their_own_features():
    # Member 0 reads only sequential inputs at stage 3, so most stage-2 blocks are dead for it while
    # other members need them: the head must compute them all.
    model = tiny_model()
    members = population(model, 3, seed=4)
    live = [model.freeze(m).gene.live_blocks() for m in members]
    assert len({frozenset(b for b in l if b.startswith("dec_0")) for l in live}) > 1
    images, target = batch()
    expected = reference_grads(model, members, images, target)
    run_step(model, 3, members, "low_memory")
    assert_same_grads(grads(model), expected)


@pytest.mark.parametrize("member_bn", ["running", "batch"])
def test_evaluate_members_matches_each_members_own_forward(member_bn):
    from nni_bixnas.strategy.supernet.fair_step import batch_statistics

    model = tiny_model().eval()
    members = population(model, 2)
    images, _ = batch()
    outputs = evaluate_members(model, images, 2, members, member_bn)
    for member, out in zip(members, outputs):
        model.set_active(member)
        with torch.no_grad(), (batch_statistics(model) if member_bn == "batch" else contextlib.nullcontext()):
            assert torch.equal(out, model(images))
    model.set_active(None)


def test_a_tail_that_writes_into_the_heads_output_is_caught():
    # The authors' bug: a tail writing into the head's features. The checks above must see it.
    model = tiny_model()
    members = population(model, 2)
    recorder = Recorder(model)
    inner = model.forward_tail

    def leaky_tail(features, skipped=None):
        out = inner(features, skipped)
        features.stem.data.add_(1.0)  # shares storage with the head's output
        return out

    model.forward_tail = leaky_tail
    run_step(model, 2, members, "low_memory")
    snapshot = recorder.snapshots[0]
    assert not all(torch.equal(a, b) for a, b in zip(recorder.received[1], snapshot))
    assert not torch.equal(feature_tensors(recorder.heads[0])[0], snapshot[0])


def test_fair_step_errors():
    model = tiny_model()
    with pytest.raises(ValueError,
                       match="unknown step 'fused'; expected one of 'low_memory', 'plain', 'naive', 'batched'"):
        run_step(model, 1, population(model, 1), "fused")
    with pytest.raises(ValueError, match="population is empty"):
        run_step(model, 1, [], "low_memory")
    assert FAIR_STEPS == ("low_memory", "plain", "naive", "batched")


def test_step_restores_the_default_choices():
    model = tiny_model()
    before = copy.deepcopy(model.current_choices())
    run_step(model, 4, population(model, 4), "low_memory")
    assert model.current_choices() == before


def test_batch_statistics_scoring_leaves_running_statistics_untouched():
    import torch.nn as nn

    from nni_bixnas.strategy.supernet.fair_step import batch_statistics

    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(4, 1, 3, 3) * 5 + 3
    with torch.no_grad(), batch_statistics(net):
        y = net(x)
    # normalised with the batch's own statistics: zero mean per channel
    assert torch.allclose(y.mean(dim=(0, 2, 3)), net[1].bias, atol=1e-5)
    assert not net[1].training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


# ----- member scoring with recalibrated BatchNorm statistics ---------------------------------------------
def recalibration_batches(n=3):
    g = torch.Generator().manual_seed(7)
    return [torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64) for _ in range(n)]


def exact_freeze(model, member):
    """``model.freeze(member)`` in float64 with the supernet's exact weights."""
    frozen = model.freeze(member).double()
    own = model.state_dict()
    frozen.load_state_dict({k: own[k] for k in frozen.state_dict()})
    return frozen


def test_recalibrated_statistics_are_the_members_standalone_statistics():
    """Each member's statistics equal those of its own frozen network recalibrated on the same batches
    (every BatchNorm reset, cumulative average in training mode), and the supernet is left untouched."""
    from nni_bixnas.strategy.supernet.fair_step import recalibrated_statistics

    model = tiny_model().eval()
    members = population(model, 2)
    before = copy.deepcopy(model.state_dict())
    batches = recalibration_batches()
    for member in members:
        state = recalibrated_statistics(model, batches, 2, member)
        frozen = exact_freeze(model, member)
        norms = [m for m in frozen.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        frozen.train()
        with torch.no_grad():
            for images in batches:
                frozen(images)
        expected = {n: m for n, m in frozen.named_modules() if isinstance(m, nn.BatchNorm2d)}
        names = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
        mine = dict(zip(names, state))
        for name, m in expected.items():  # the frozen net owns only its live blocks' BatchNorms
            torch.testing.assert_close(mine[name]["running_mean"], m.running_mean, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(mine[name]["running_var"], m.running_var, rtol=1e-12, atol=1e-12)
            assert int(mine[name]["num_batches_tracked"]) == int(m.num_batches_tracked)  # the bridge: 3 per forward
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not model.training and all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_recalibrated_scores_do_not_depend_on_batch_composition():
    """With 'recalibrate' an image's logits are the same alone or in a batch (eval-mode BatchNorm); with
    'batch' (each batch's own statistics) they are not, and a batch of one image cannot be scored at all."""
    from nni_bixnas.strategy.supernet.fair_step import recalibrated_statistics

    model = tiny_model().eval()
    members = population(model, 3)
    images, _ = batch()
    statistics = [recalibrated_statistics(model, recalibration_batches(), 3, m) for m in members]
    together = evaluate_members(model, images, 3, members, "recalibrate", statistics)
    alone = [evaluate_members(model, images[i:i + 1], 3, members, "recalibrate", statistics) for i in range(2)]
    for m in range(S):
        torch.testing.assert_close(together[m], torch.cat([alone[0][m], alone[1][m]]), rtol=1e-10, atol=1e-12)
        frozen = exact_freeze(model, members[m])
        names = [n for n, mod in model.named_modules() if isinstance(mod, nn.BatchNorm2d)]
        own = dict(zip(names, statistics[m]))
        for name, mod in frozen.named_modules():
            if isinstance(mod, nn.BatchNorm2d):
                for key, value in own[name].items():
                    getattr(mod, key).copy_(value)
        with torch.no_grad():  # and equal the standalone network with those statistics
            torch.testing.assert_close(together[m], frozen.eval()(images), rtol=1e-10, atol=1e-12)
    batch_stats = evaluate_members(model, images, 3, members, "batch")
    other = torch.cat([images[:1], recalibration_batches(1)[0][:1]])  # image 0 beside another image
    assert not torch.allclose(batch_stats[0][:1], evaluate_members(model, other, 3, members, "batch")[0][:1])
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        evaluate_members(model, images[:1], 3, members, "batch")
    with pytest.raises(ValueError, match="one recalibrated_statistics"):
        evaluate_members(model, images, 3, members, "recalibrate")
