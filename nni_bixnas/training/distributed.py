"""Data-parallel Phase 2: one explicit gradient all-reduce per step, and validation metrics reduced over ranks.

DDP's reducer synchronises the gradients of one ``forward()``/``backward()`` pair. A Phase 2 step is neither:
it calls ``forward_head``/``forward_tail`` (which bypass ``DistributedDataParallel.forward``) and, with
``step='low_memory'``, runs one backward per member plus the head's. :class:`~nni_bixnas.strategy.supernet.phase2_task.
Phase2Task` therefore runs the step locally, with the reducer off, and then calls :func:`average_step`: every
parameter's ``.grad``, every BatchNorm's running statistics and the step's loss, averaged over the ranks in one
collective per dtype (one in total when the weights share a dtype).

What this equals, exactly (``tests/test_ddp.py``, float64):

- after :func:`average_step` every rank holds the **mean of the single-process steps on the ranks' shards**
  (gradients, BatchNorm running statistics, loss), so the ranks' weights stay identical;
- that mean is the gradient of the single-process step on the **whole batch** when the shards have equal
  sizes and BatchNorm does not normalise with per-shard batch statistics (BatchNorm in eval mode, or no
  BatchNorm). In training mode each rank normalises with its own shard's statistics, as plain DDP does
  without ``SyncBatchNorm``; the step is then that of ``K`` batches of ``B / K`` images, not of one of ``B``.

Validation: every rank scores its shard; :func:`unpadded` drops the samples ``DistributedSampler`` repeats
to give every rank as many, and :func:`reduce_metrics` sums the metric counts over the ranks, so the
reported scores are those of the whole validation set, each image once.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from nni_bixnas.metrics import SegmentationMetrics

__all__ = ["world_size", "global_rank", "average_step", "average_tensors", "reduce_metrics", "unpadded"]


def world_size() -> int:
    """Processes in the default process group (1 when ``torch.distributed`` is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def global_rank() -> int:
    """This process's rank in the default process group (0 when not initialised)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _running_statistics(module: torch.nn.Module) -> List[torch.Tensor]:
    """The floating-point running statistics of every BatchNorm (``num_batches_tracked`` agrees anyway)."""
    found = []
    for norm in module.modules():
        if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
            found += [b for b in (norm.running_mean, norm.running_var) if b is not None]
    return found


def _all_reduce_sum_(tensors: Sequence[torch.Tensor]) -> None:
    """Sum ``tensors`` over the ranks in place: one collective per (device, dtype)."""
    groups: Dict[tuple, List[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    for group in groups.values():
        flat = _flatten_dense_tensors(group)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        for tensor, reduced in zip(group, _unflatten_dense_tensors(flat, group)):
            tensor.copy_(reduced)


def average_tensors(tensors: Sequence[torch.Tensor]) -> None:
    """Replace every tensor by its mean over the ranks (in place; a no-op on one process)."""
    size = world_size()
    if size == 1 or not tensors:
        return
    _all_reduce_sum_(tensors)
    for tensor in tensors:
        tensor.div_(size)


@torch.no_grad()
def average_step(module: torch.nn.Module, values: Sequence[float] = ()) -> List[float]:
    """Average one step's gradients, BatchNorm running statistics and ``values`` over the ranks.

    Call it on every rank after the step's backward(s) and before ``optimizer.step()``.

    Parameters
    ----------
    module
        The (unwrapped) network whose parameters the optimiser steps.
    values
        Scalars to average with them (e.g. the step's loss).

    Returns
    -------
    list of float
        ``values`` averaged over the ranks (unchanged on one process).

    Notes
    -----
    Every rank contributes every trainable parameter, in ``module.parameters()`` order: a missing ``.grad``
    counts as zeros, and a parameter no rank computed a gradient for keeps ``grad = None`` afterwards (so
    Adam skips it, as in the single-process step). The metadata (which ranks had a gradient, ``values``)
    travels in the gradients' buffer, so with one weight dtype the step costs one collective. The mean
    over ranks is the gradient of the whole batch's mean loss only when the shards have equal sizes
    (``DistributedSampler`` pads them to equal sizes); see the module docs for BatchNorm.
    """
    size = world_size()
    if size == 1:
        return [float(v) for v in values]
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("average_step: the module has no trainable parameters")
    had = [p.grad is not None for p in params]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    first = params[0]
    wide = first.dtype if first.dtype in (torch.float32, torch.float64) else torch.float32  # loss, counts
    meta = torch.tensor([float(h) for h in had] + [float(v) for v in values], dtype=wide, device=first.device)
    statistics = _running_statistics(module)
    _all_reduce_sum_([p.grad for p in params] + statistics + [meta])
    for tensor in [p.grad for p in params] + statistics:
        tensor.div_(size)
    counts = meta[: len(params)].tolist()
    for p, count in zip(params, counts):
        if count == 0:
            p.grad = None
    return [v / size for v in meta[len(params):].tolist()]


def unpadded(sampler: object, start: int, count: int) -> int:
    """How many of the ``count`` samples at positions ``start ..`` of this rank's shard are real.

    ``DistributedSampler`` (and Lightning's wrappers of it) gives rank ``r`` the positions ``r, r + K, ...`` of
    the (shuffled) index list extended by repeats to ``K * ceil(N / K)``; positions ``>= N`` are repeats, and
    they come last. For any other sampler every sample is real.
    """
    if not isinstance(sampler, torch.utils.data.DistributedSampler):
        return count
    total = len(sampler.dataset)
    real = len(range(sampler.rank, total, sampler.num_replicas))
    return max(0, min(count, real - start))


def reduce_metrics(metrics: Sequence[SegmentationMetrics], values: Sequence[float] = (),
                   device: torch.device = torch.device("cpu")) -> List[float]:
    """Sum the counts of ``metrics`` (and ``values``) over the ranks, in place.

    Afterwards every rank's ``compute()`` scores the union of the ranks' images: the per-image means and
    the per-class sums exactly (up to the order of summation); the batch-pooled scores average the batches
    of every rank. ``device``: where the collective runs (a CUDA device under NCCL).

    Returns
    -------
    list of float
        ``values`` summed over the ranks (unchanged on one process).
    """
    if world_size() == 1:
        return [float(v) for v in values]
    parts = []
    for m in metrics:
        parts += [torch.tensor([m._iou_sum, m._dice_sum, float(m._images)], dtype=torch.float64),
                  m._class_sums.flatten(), m._class_pooled.flatten()]
    parts.append(torch.tensor([float(v) for v in values], dtype=torch.float64))
    flat = torch.cat(parts).to(device)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat = flat.cpu()
    gathered: List[list] = [None] * world_size()  # type: ignore[list-item]
    dist.all_gather_object(gathered, [(m._batch_scores, m._image_iou) for m in metrics])
    offset = 0
    for i, m in enumerate(metrics):
        m._iou_sum, m._dice_sum, m._images = float(flat[offset]), float(flat[offset + 1]), int(flat[offset + 2])
        offset += 3
        for name in ("_class_sums", "_class_pooled"):
            state = getattr(m, name)
            state.copy_(flat[offset: offset + state.numel()].view_as(state))
            offset += state.numel()
        m._batch_scores = [score for rank in gathered for score in rank[i][0]]
        m._image_iou = [value for rank in gathered for value in rank[i][1]]  # rank-major, alike for every member
    return flat[offset:].tolist()
