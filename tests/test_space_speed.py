"""BiO-Net++'s pruned forward computes what the full one did.

The forward forms only the sequential inputs, block outputs and bridges that reach its result, and fuses
with a running sum instead of ``torch.stack(...).mean(0)``. :func:`reference_stages` is the forward before
that change (every sequential input, every encoder stage's bridge, stack-and-mean fusion); logits,
gradients and BatchNorm statistics must match it.
"""

from __future__ import annotations

import copy
import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from numpy.random import RandomState

from nni_bixnas import create_model
from nni_bixnas.space import BiONetPlusPlus, SkipChoice, SkipFusion, fuse
from nni_bixnas.space.bionet_pp import StageFeatures

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(width=4, stem_width=4)
LOSS = nn.BCEWithLogitsLoss()


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
    return x


def _fuse(fusion: nn.Module, inputs: List[torch.Tensor]) -> torch.Tensor:
    if not isinstance(fusion, (SkipChoice, SkipFusion)):  # a strategy's stand-in (Phase 1's selection matrix)
        return fusion(inputs)
    picked = [_resize(inputs[i], inputs[0].shape[-2:]) for i in fusion.chosen]
    return picked[0] if len(picked) == 1 else torch.stack(picked).mean(0)


def reference_stages(net: BiONetPlusPlus, x: torch.Tensor, stop: int, start: Optional[StageFeatures] = None,
                     skipped=None) -> StageFeatures:
    """Stages up to ``stop`` computed as before the pruning."""
    skipped = net._skipped() if skipped is None else skipped
    features = start or StageFeatures(0, net.stem(x), (), None, (x.shape[-2], x.shape[-1]))
    while features.stage < stop:
        it, is_decoder = divmod(features.stage, 2)
        kind = "dec" if is_decoder else "enc"
        outputs: List[torch.Tensor] = []
        h = features.bridge if is_decoder else features.stem
        for level in range(net.levels):
            label = f"{kind}_{it}_{level}"
            if level > 0:
                h = F.interpolate(outputs[-1], scale_factor=2, mode="bilinear", align_corners=True) if is_decoder \
                    else F.max_pool2d(outputs[-1], 2)
            if label not in skipped and label in net.blocks:
                block, convs = net.blocks[label], net.convs[f"{kind}_{level}"]
                fused = _fuse(block.fusion, [h, *features.previous])
                h = block.act(block.bn2(convs[1](block.act(block.bn1(convs[0](fused))))))
            outputs.append(h)
        bridge = None
        if not is_decoder:
            bridge = net.bridge(F.max_pool2d(outputs[-1], 2))
            bridge = F.interpolate(bridge, size=outputs[-1].shape[-2:], mode="bilinear", align_corners=True)
        features = StageFeatures(features.stage + 1, features.stem, tuple(outputs), bridge, features.input_size)
    return features


def reference_head(net: BiONetPlusPlus, features: StageFeatures) -> torch.Tensor:
    return net.head(F.interpolate(features.previous[-1], size=features.input_size, mode="bilinear",
                                  align_corners=True))


def reference_forward(net: BiONetPlusPlus, x: torch.Tensor) -> torch.Tensor:
    return reference_head(net, reference_stages(net, x, net.n_stages))


def assert_same(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    """Equal up to 1e-6 of the largest magnitude (in practice bit for bit)."""
    assert actual.shape == expected.shape, what
    scale = expected.abs().max().item() if expected.numel() else 0.0
    diff = (actual - expected).abs().max().item() if expected.numel() else 0.0
    assert diff <= 1e-6 * scale, f"{what}: differs by {diff:.3g} (largest value {scale:.3g})"


def step_state(model: nn.Module, forward, x: torch.Tensor, target: torch.Tensor):
    """Logits, every parameter's gradient and every buffer after one forward + backward."""
    model.zero_grad(set_to_none=True)
    logits = forward(x)
    LOSS(logits, target).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads, {n: b.clone() for n, b in model.named_buffers()}


def assert_steps_match(net: BiONetPlusPlus, x: torch.Tensor) -> None:
    target = (x[:, :1] > 0.5).float()
    ref = copy.deepcopy(net)
    logits, grads, buffers = step_state(net, net, x, target)
    logits_ref, grads_ref, buffers_ref = step_state(ref, lambda t: reference_forward(ref, t), x, target)
    assert_same(logits, logits_ref, "logits")
    assert grads.keys() == grads_ref.keys()
    for name in grads_ref:
        assert_same(grads[name], grads_ref[name], name)
    for name in buffers_ref:
        assert_same(buffers[name].double(), buffers_ref[name].double(), name)


def random_sample(space: BiONetPlusPlus, seed: int):
    rs = RandomState(seed)
    return {label: c.choice.random(random_state=rs) for label, c in space.skip_choices().items()}


def images(seed: int = 0, size: int = 64) -> torch.Tensor:
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ----- fusion -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_fuse_is_stack_mean_values_and_gradients(k):
    g = torch.Generator().manual_seed(k)
    leaves = [torch.randn(2, 3, 8 * (1 + i % 2), 8 * (1 + i % 2), generator=g, requires_grad=True) for i in range(k)]
    grad_out = torch.randn(2, 3, 8, 8, generator=g)
    out = fuse(leaves, list(range(k)))
    ref = torch.stack([_resize(t, (8, 8)) for t in leaves]).mean(0)
    assert_same(out, ref, "fused")
    for a, b in zip(torch.autograd.grad(out, leaves, grad_out), torch.autograd.grad(ref, leaves, grad_out)):
        assert_same(a, b, "input gradient")


def test_fuse_keeps_channels_last_and_leaves_inputs_alone():
    inputs = [torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last) for _ in range(3)]
    before = [t.clone() for t in inputs]
    out = fuse(inputs, [0, 1, 2])
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(a, b) for a, b in zip(inputs, before))
    assert fuse(inputs, [1]) is inputs[1]  # one same-size stream: no copy, no resize


# ----- fixed networks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("gene", ["published", "random0", "random1", "dense"])
def test_fixed_network_step_matches_the_full_forward(gene):
    if gene == "published":
        net = create_model("bixnet", **TINY)
    elif gene == "dense":
        net = create_model("bionet_pp", **TINY)
    else:
        space = BiONetPlusPlus(max_k=5, **TINY)
        net = space.freeze(random_sample(space, int(gene[-1])))
    torch.manual_seed(0)
    assert_steps_match(net.train(), images())
    net.eval()
    with torch.no_grad():
        assert_same(net(images(1)), reference_forward(net, images(1)), "eval logits")


def test_bixnet_runs_its_unread_bridge_only_while_it_updates_statistics():
    """The published gene never reads the bridge: eval skips it; training runs it in all three encoder stages
    (its BatchNorm statistics), and head/tail plans of a fixed network are computed once."""
    net = create_model("bixnet", **TINY)
    calls = []
    net.bridge.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        net.eval()(images())
        assert calls == []
        net.train()(images())
        assert len(calls) == 3
        plans = dict(net._fixed_plans)
        net(images())
    assert len(plans) == 2 and net._fixed_plans == plans  # eval and training


def test_state_dict_keys_are_unchanged():
    """Checkpoints written before the change load: same keys (their sha256 before the change)."""
    for net, count, digest in [(create_model("bixnet"), 197, "7326afefe5c763f3"),
                               (BiONetPlusPlus(), 299, "6ad3cda6e114e3e8")]:
        keys = list(net.state_dict())
        assert (len(keys), hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]) == (count, digest)


# ----- the search space ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_supernet_step_matches_the_full_forward(seed):
    torch.manual_seed(seed)
    space = BiONetPlusPlus(max_k=5, **TINY).train()
    space.set_active(random_sample(space, seed))
    assert_steps_match(space, images(seed))


@pytest.mark.parametrize("stage", range(7))
def test_head_features_and_tail_match_the_full_stages(stage):
    """A head's features are complete (every level, the bridge) whatever the active sample; a tail run
    under another sample gives that sample's reference logits."""
    torch.manual_seed(0)
    space = BiONetPlusPlus(max_k=5, **TINY).train()
    ref = copy.deepcopy(space)
    x = images(2)
    head_sample, tail_sample = random_sample(space, 3), random_sample(space, 4)
    for net in (space, ref):
        net.set_active(head_sample)
    features = space.forward_head(x, stage)
    expected = reference_stages(ref, x, stage)
    assert features.stage == expected.stage and len(features.previous) == len(expected.previous)
    for a, b in zip(features.previous, expected.previous):
        assert_same(a, b, "previous")
    assert (features.bridge is None) == (expected.bridge is None)
    if expected.bridge is not None:
        assert_same(features.bridge, expected.bridge, "bridge")
    for net in (space, ref):
        net.set_active(tail_sample)
    logits = space.forward_tail(features)
    expected_logits = reference_head(ref, reference_stages(ref, x, ref.n_stages, start=expected))
    assert_same(logits, expected_logits, "tail logits")
    for (name, a), b in zip(space.named_buffers(), ref.buffers()):
        assert_same(a.double(), b.double(), name)
    explicit = space.forward_tail(features, skipped=space._skipped())  # the full stages, as before
    assert_same(explicit, expected_logits, "tail logits with explicit skipped")  # batch statistics: same logits


def test_phase1_selection_matrix_supernet_matches_the_full_forward():
    from nni_bixnas.strategy.supernet.supermodule import to_supernet

    torch.manual_seed(0)
    supernet, _ = to_supernet(BiONetPlusPlus(**TINY))
    supernet.train()
    x = images(5)
    target = (x[:, :1] > 0.5).float()
    ref = copy.deepcopy(supernet)
    torch.manual_seed(1)  # the Gumbel noise
    logits, grads, _ = step_state(supernet, supernet, x, target)
    torch.manual_seed(1)
    logits_ref, grads_ref, _ = step_state(ref, lambda t: reference_forward(ref, t), x, target)
    assert_same(logits, logits_ref, "logits")
    for name in grads_ref:
        assert_same(grads[name], grads_ref[name], name)


# ----- the benchmark ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_speed_quick_run_writes_its_report(tmp_path):
    out = tmp_path / "train_speed.md"
    command = [sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--quick", "--threads", "1",
               "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    md = out.read_text()
    assert re.search(r"^bixnet/unet train images/s ratio: \d+\.\d\d$", md, re.M)
    assert "bit-identical" in md and "`torch.set_num_threads(1)`" in md
    for model in ("bixnet", "bixnet, pre-change forward", "unet"):
        for layout in ("contiguous", "channels_last"):
            assert re.search(rf"^\| {re.escape(model)} \| {layout} \| \d", md, re.M), (model, layout)
