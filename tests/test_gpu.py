"""The GPU path (``pytest -m gpu``): run only where CUDA is available; skipped everywhere else.

Fairness exact on CUDA (float64), a bf16 fair step finite and close to each member's own bf16 step,
float32 leaves under fp16 loss scaling, one training epoch in bf16 with channels_last, the Phase 1 fusion
without host synchronisation, and a Phase 1 and a Phase 2 unit on tiny data.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn as nn

from nni_bixnas.space import BiONetPlusPlus, SkipSubset
from nni_bixnas.strategy.supernet.fair_step import fair_step

#: ``BIXNAS_GPU_TESTS_DEVICE=cpu`` runs these tests on the CPU, to check the tests themselves without a GPU.
DEVICE = os.environ.get("BIXNAS_GPU_TESTS_DEVICE", "cuda")
ACCELERATOR = "gpu" if DEVICE == "cuda" else DEVICE
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="the GPU tests need CUDA")]

LOSS = nn.BCEWithLogitsLoss()
DATA = "default:n=8,size=32"


def _population(model, stage, size=3, seed=0):
    from test_fairness import population

    return population(model, stage, seed=seed)[:size]


def _batch(dtype, size=32):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, size, size, generator=g, dtype=dtype)
    target = (torch.rand(2, 1, size, size, generator=g) > 0.6).to(dtype)
    return images.to(DEVICE), target.to(DEVICE)


def _grads(model):
    return {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("stage", [1, 3, 5])
def test_fair_steps_agree_exactly_on_cuda_in_float64(stage):
    torch.manual_seed(0)
    model = BiONetPlusPlus(width=4, stem_width=4, max_k=5).double().to(DEVICE).train()
    members = _population(model, stage)
    images, target = _batch(torch.float64)
    results = {}
    for step in ("naive", "low_memory", "plain", "batched"):
        twin = copy.deepcopy(model)
        out = fair_step(twin, images, target, stage, members, LOSS, step=step)
        results[step] = (out.losses, _grads(twin))
    for step in ("low_memory", "plain", "batched"):
        assert results[step][0] == pytest.approx(results["naive"][0], rel=1e-10)
        for name, grad in results["naive"][1].items():
            torch.testing.assert_close(results[step][1][name], grad, rtol=1e-8, atol=1e-11, msg=f"{step} {name}")


def test_bf16_fair_step_is_finite_and_close_to_each_members_own():
    torch.manual_seed(0)
    model = BiONetPlusPlus(width=8, stem_width=8, max_k=5).to(DEVICE).train()
    members = _population(model, 2)
    images, target = _batch(torch.float32, 64)
    runs = {}
    for step, dtype in (("naive", torch.float32), ("low_memory", torch.bfloat16), ("batched", torch.bfloat16),
                        ("naive", torch.bfloat16)):
        twin = copy.deepcopy(model)
        with torch.autocast(DEVICE, dtype=dtype, enabled=dtype != torch.float32):
            result = fair_step(twin, images, target, 2, members, LOSS, step=step)
        runs[step, dtype] = (result, torch.cat([g.flatten() for g in _grads(twin).values()]))
    leaves = [g for g in runs["low_memory", torch.bfloat16][0].feature_grads if g is not None]
    assert leaves and {g.dtype for g in leaves} == {torch.float32}
    fp32_losses, own = runs["naive", torch.float32][0].losses, runs["naive", torch.bfloat16][1]
    for step in ("low_memory", "batched"):
        result, grads = runs[step, torch.bfloat16]
        assert torch.isfinite(grads).all(), step
        assert result.losses == pytest.approx(fp32_losses, rel=0.01), step  # the fp32 losses, to bf16 rounding
        # bf16 gradients of a fresh net are noisy (cosine ~0.6 to fp32 at this size, for every method), so
        # each step is compared with the members' own bf16 steps: the same ops (low_memory) or the same
        # maths in other kernels (batched, cosine ~0.97 measured on CPU)
        assert float(torch.nn.functional.cosine_similarity(grads, own, dim=0)) > 0.9, step


def test_fp16_loss_scaled_leaves_accumulate_in_float32_without_overflow():
    torch.manual_seed(0)
    model = BiONetPlusPlus(width=4, stem_width=4, max_k=5).to(DEVICE).train()
    members = _population(model, 1, size=3)
    images, target = _batch(torch.float32)
    with torch.autocast(DEVICE, dtype=torch.float16):
        result = fair_step(model, images, target, 1, members, LOSS, step="low_memory",
                           backward=lambda loss: (loss * 2.0**16).backward())
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in result.feature_grads if g is not None)


@pytest.mark.skipif(DEVICE != "cuda", reason="host synchronisation is a CUDA notion")
def test_phase1_fusion_forward_never_synchronises_the_host():
    from nni_bixnas.strategy.supernet.supermodule import SelectionMatrixFusion

    fusion = SelectionMatrixFusion(SkipSubset(5, 3, label="b")).to(DEVICE)
    inputs = [torch.rand(2, 4, 16 // 2 ** min(i, 2), 16 // 2 ** min(i, 2), device=DEVICE) for i in range(5)]
    fusion(inputs)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = fusion(inputs)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert out.device.type == DEVICE and out.shape == (2, 4, 16, 16)


@pytest.mark.skipif(DEVICE != "cuda", reason="host synchronisation is a CUDA notion")
def test_batched_tails_forward_never_synchronises_the_host():
    from nni_bixnas.strategy.supernet.fair_step import union_sample

    torch.manual_seed(0)
    model = BiONetPlusPlus(width=4, stem_width=4, max_k=5).to(DEVICE).train()
    members = _population(model, 2)
    images, _ = _batch(torch.float32)
    model.set_active(union_sample(members))
    head = model.forward_head(images, 2)
    model.forward_tails(head, members)  # the first step copies the population's constants to the device
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        outputs = model.forward_tails(head, members)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
        model.set_active(None)
    assert len(outputs) == len(members)


def test_one_training_epoch_in_bf16_with_channels_last(tmp_path):
    from nni_bixnas.training import fit

    result = fit("bixnet", DATA, max_epochs=1, out_dir=tmp_path, accelerator=ACCELERATOR, devices=1,
                 precision="bf16-mixed", channels_last=True, progress=False, model_kwargs={"width": 8, "stem_width": 8})
    assert result.best_iou is not None and 0.0 <= result.best_iou <= 1.0


def test_phase1_and_a_phase2_stage_unit_on_cuda(tmp_path):
    from nni_bixnas.strategy.supernet.spaces import space_reference
    from nni_bixnas.strategy.units import phase2_stage_unit, selection_matrix_unit
    from test_progressive_evolution import executable, tiny_space

    space = tiny_space()
    ref = space_reference(executable(space))
    training = {"data": DATA, "accelerator": ACCELERATOR, "devices": 1, "precision": "bf16-mixed"}
    phase1 = selection_matrix_unit(None, space=ref, epochs=1, training=training, out_dir=str(tmp_path / "p1"))
    assert phase1["candidates"]
    members = [{label: [0] for label in space.skip_choices()}, {label: [0, 1] for label in space.skip_choices()}]
    result = phase2_stage_unit(space=ref, stage=2, members=members, epochs=1, step="batched",
                               training={"data": DATA, "accelerator": ACCELERATOR, "precision": "bf16-mixed"},
                               macs_input_size=(32, 32), out_dir=str(tmp_path / "p2"))
    assert len(result["population"]) == 2 and all(0 <= p["iou"] <= 1 for p in result["population"])
