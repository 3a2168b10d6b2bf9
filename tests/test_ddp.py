"""Data-parallel Phase 2 on CPU: two gloo processes, checked against one process.

What is proven (float64 where stated):

- one step on 2 ranks (shards A and B of a batch, every fair step) leaves on both ranks the **mean of the two
  single-process steps on A and on B**: gradients, BatchNorm running statistics, loss (rtol 1e-10), and the
  ranks agree bitwise;
- with BatchNorm in eval mode (no per-shard batch statistics) that mean **is** the single-process step on the
  whole batch A + B (rtol 1e-10); in training mode it is not (each rank normalises with its shard's
  statistics, as DDP without ``SyncBatchNorm``), which the test checks too;
- a whole stage through Lightning's DDP (``phase2_stage_unit(training={'devices': 2, 'accelerator': 'cpu'})``):
  both ranks end with bitwise identical weights and report the same population, and every member's IoU equals a
  single-process validation of those weights on the whole validation set (3 images, one of them repeated
  by ``DistributedSampler``; abs 1e-12);
- ``fit('unet', devices=2)`` (Phase 1 and retraining: automatic optimisation) trains data-parallel.

The processes are started the way ``torchrun`` starts them (``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` in
the environment), so Lightning's DDP strategy joins them instead of re-running pytest in new processes.
"""

from __future__ import annotations

import copy
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn

from nni_bixnas.strategy.supernet.fair_step import FAIR_STEPS, fair_step
from nni_bixnas.training.distributed import average_step, unpadded

pytestmark = pytest.mark.slow

WORLD = 2
TIMEOUT = 900  # seconds: the machine is shared
DATA = "default:n=11,size=32"  # with val_fraction 0.27: 8 training tiles (4 per rank), 3 validation tiles
VAL_FRACTION = 0.27


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(worker, *args) -> None:
    """Run ``worker(rank, port, *args)`` on ``WORLD`` processes and wait (generously) for all of them."""
    context = mp.start_processes(worker, args=(free_port(), *args), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {WORLD} processes did not finish within {TIMEOUT} s")


def torchrun_env(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank), NODE_RANK="0",
                      RANK=str(rank), WORLD_SIZE=str(WORLD), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)


# ----- one step, no Lightning -------------------------------------------------------------------------
def tiny_model():
    from test_fairness import tiny_model as make

    return make()


def members_of(model, stage=2):
    from test_fairness import population

    return population(model, stage)


def whole_batch():
    from test_fairness import batch

    return batch(4)


LOSS = nn.BCEWithLogitsLoss()


def freeze_norms(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model


def state_after(model, images, target, step, distributed=False):
    """Gradients, running statistics and loss after one step (averaged over the ranks when distributed)."""
    members = members_of(model)
    result = fair_step(model, images, target, 2, members, LOSS, step=step)
    loss = average_step(model, [result.loss])[0] if distributed else result.loss
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    stats = {n: b.clone() for n, b in model.named_buffers() if b.is_floating_point()}
    return {"grads": grads, "stats": stats, "loss": torch.tensor(loss, dtype=torch.float64)}


def step_worker(rank: int, port: int, out: str) -> None:
    torchrun_env(rank, port)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=WORLD)
    images, target = whole_batch()
    shard = slice(2 * rank, 2 * rank + 2)
    found = {}
    for step in FAIR_STEPS:
        found[step] = state_after(tiny_model(), images[shard], target[shard], step, distributed=True)
        found[f"{step}-frozen"] = state_after(freeze_norms(tiny_model()), images[shard], target[shard], step,
                                              distributed=True)
    torch.save(found, Path(out) / f"step{rank}.pt")
    torch.distributed.destroy_process_group()


def mean_of(a, b):
    return {key: (mean_of(a[key], b[key]) if isinstance(a[key], dict) else (a[key] + b[key]) / 2) for key in a}


def assert_close_states(actual, expected, rtol=1e-10):
    assert actual["grads"].keys() == expected["grads"].keys()
    for part in ("grads", "stats"):
        for name, value in expected[part].items():
            torch.testing.assert_close(actual[part][name], value, rtol=rtol, atol=1e-13, msg=f"{part} {name}")
    torch.testing.assert_close(actual["loss"], expected["loss"], rtol=rtol, atol=1e-13)


def test_one_step_on_two_ranks_is_the_mean_of_the_shard_steps(tmp_path):
    spawn(step_worker, str(tmp_path))
    ranks = [torch.load(tmp_path / f"step{r}.pt", weights_only=True) for r in range(WORLD)]
    images, target = whole_batch()
    for step in FAIR_STEPS:
        for key in (step, f"{step}-frozen"):  # the ranks agree bitwise
            for part in ("grads", "stats"):
                for name, value in ranks[0][key][part].items():
                    assert torch.equal(value, ranks[1][key][part][name]), (key, part, name)
        shards = [state_after(tiny_model(), images[s], target[s], step) for s in (slice(0, 2), slice(2, 4))]
        assert_close_states(ranks[0][step], mean_of(*shards))
        # without per-shard batch statistics the mean is the step on the whole batch ...
        assert_close_states(ranks[0][f"{step}-frozen"], state_after(freeze_norms(tiny_model()), images, target, step))
        # ... with them it is not (DDP without SyncBatchNorm)
        whole = state_after(tiny_model(), images, target, step)
        differences = [float((ranks[0][step]["grads"][n] - g).abs().max()) for n, g in whole["grads"].items()]
        assert max(differences) > 1e-6


def test_unpadded_drops_the_repeats_of_distributed_sampler():
    dataset = list(range(3))
    for rank in range(2):
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False)
        positions = list(sampler)  # rank 0: [0, 2]; rank 1: [1, 0 (repeat)]
        kept = unpadded(sampler, 0, 1) + unpadded(sampler, 1, 1)
        assert positions[:kept] == [[0, 2], [1]][rank]
    assert unpadded(object(), 5, 2) == 2


# ----- a whole stage through Lightning's DDP -------------------------------------------------------------
def stage_kwargs(out_dir: str, devices="auto"):
    from nni_bixnas.strategy.supernet.spaces import space_reference
    from test_progressive_evolution import executable, tiny_space

    space = tiny_space()
    labels = list(space.skip_choices())
    members = [{label: [0] for label in labels}, {label: [0, 1] for label in labels},
               {label: [1] if space.skip_choices()[label].choice.stage == 2 else [0] for label in labels}]
    training = {"data": DATA, "val_fraction": VAL_FRACTION, "batch_size": 2, "accelerator": "cpu", "num_threads": 1,
                "devices": devices}
    return dict(space=space_reference(executable(space)), stage=2, members=members, epochs=1, training=training,
                macs_input_size=(32, 32), out_dir=out_dir, progress=False, recalibration_batches=2)


def stage_worker(rank: int, port: int, out: str) -> None:
    torchrun_env(rank, port)
    from nni_bixnas.strategy.supernet.phase2_task import Phase2Task
    from nni_bixnas.strategy.units import phase2_stage_unit

    def keep_weights(self) -> None:  # each rank's weights after training, to compare the ranks
        torch.save(self.model.state_dict(), Path(out) / f"weights{rank}.pt")

    Phase2Task.on_train_end = keep_weights
    result = phase2_stage_unit(**stage_kwargs(str(Path(out) / "run"), devices=2))
    result.pop("seconds")
    torch.save(result, Path(out) / f"result{rank}.pt")


def single_process_ious(kwargs, weights):
    """Every member's IoU of ``weights`` validated on one process, on the whole validation set."""
    import pytorch_lightning as pl

    from nni_bixnas.data import SegDataModule
    from nni_bixnas.strategy.supernet.phase2_task import Phase2Task
    from nni_bixnas.strategy.supernet.spaces import build_space

    supernet = build_space(kwargs["space"])
    supernet.load_state_dict(weights)
    task = Phase2Task(supernet, kwargs["stage"], kwargs["members"], recalibration_batches=2)
    datamodule = SegDataModule(data=DATA, batch_size=2, seed=0, split_seed=0, val_fraction=VAL_FRACTION)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.validate(task, datamodule=datamodule, verbose=False)
    assert sum(m.compute()["images"] for m in task.member_metrics) == 3 * len(kwargs["members"])
    return [float(m.compute()["iou"]) for m in task.member_metrics]


def test_stage_on_two_ranks_scores_the_whole_validation_set(tmp_path):
    torch.set_num_threads(1)
    spawn(stage_worker, str(tmp_path))
    results = [torch.load(tmp_path / f"result{r}.pt", weights_only=True) for r in range(WORLD)]
    weights = [torch.load(tmp_path / f"weights{r}.pt", weights_only=True) for r in range(WORLD)]
    assert results[0] == results[1]
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name
    kwargs = stage_kwargs(str(tmp_path / "unused"))
    reported = [p["iou"] for p in results[0]["population"]]
    assert reported == pytest.approx(single_process_ious(kwargs, copy.deepcopy(weights[0])), abs=1e-12)
    assert Path(results[0]["weights"]).is_file()


# ----- Phase 1 and retraining: plain automatic optimisation ---------------------------------------------
def fit_worker(rank: int, port: int, out: str) -> None:
    torchrun_env(rank, port)
    from nni_bixnas.training import fit

    result = fit("unet", DATA, max_epochs=1, out_dir=str(Path(out) / "run"), accelerator="cpu", devices=2,
                 batch_size=2, val_fraction=VAL_FRACTION, progress=False, num_threads=1,
                 model_kwargs={"base": 4})
    torch.save({"best_iou": result.best_iou, "epochs": len(result.history), "checkpoint": str(result.best_checkpoint)},
               Path(out) / f"fit{rank}.pt")


def test_fit_on_two_ranks_scores_the_whole_validation_set(tmp_path):
    import pytorch_lightning as pl

    from nni_bixnas.data import SegDataModule
    from nni_bixnas.training import load_task

    spawn(fit_worker, str(tmp_path))
    ranks = [torch.load(tmp_path / f"fit{r}.pt", weights_only=True) for r in range(WORLD)]
    assert ranks[0] == ranks[1] and ranks[0]["epochs"] == 1
    assert (tmp_path / "run" / "history.json").is_file()
    # the reported IoU is that of the whole validation set, each tile once, as one process scores it
    task = load_task(ranks[0]["checkpoint"])
    datamodule = SegDataModule(data=DATA, batch_size=2, seed=0, split_seed=0, val_fraction=VAL_FRACTION)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.validate(task, datamodule=datamodule, verbose=False)
    assert task.val_metrics.compute()["images"] == 3
    assert ranks[0]["best_iou"] == pytest.approx(task.last_val_metrics["val_iou"], abs=1e-12)
