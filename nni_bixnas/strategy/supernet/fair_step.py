"""One Phase 2 training step of a population on shared SuperNet weights (skip fairness, paper §2.3).

A supernet taking part in Phase 2 implements the head/tail protocol:

- ``set_active(sample)``: the next forwards run ``sample`` (``{label: indices}``);
- ``forward_head(x, stage) -> features``: stages ``0 .. stage - 1`` (a dataclass of tensors, e.g.
  :class:`~nni_bixnas.space.StageFeatures`);
- ``forward_tail(features) -> logits``: stages ``stage ..`` and the output head; never modifies
  ``features``.

Every member is the full sample of one architecture; the members of one step agree on the stages
before ``stage`` (the head), and differ from ``stage`` on (their tails). The steps compute the gradient
of ``(1/s) * sum_i loss_i`` into the parameters' ``.grad`` (the caller zeroes the gradients and steps
the optimiser):

``'low_memory'`` (the default)
    Head once; its output tensors are detached into leaves that require grad; then, per member, tail
    forward, ``loss_i / s``, backward (accumulating parameter and feature gradients, freeing that
    tail's graph); finally one head backward with the accumulated feature gradients. The same gradients
    as ``'plain'`` (one big backward) at the peak memory of one member's step.
``'plain'``
    The paper's literal step: head once, all tails, the mean loss, one backward. Keeps every tail's
    graph alive until the backward (3-6x the memory; ``shared/notes/phase2-calibration.md``).
``'naive'``
    Each member runs its own full forward (head included) and backward of ``loss_i / s``: the cost of
    training the members individually. Without optimiser steps in between it yields the same gradients;
    the *unfair* naive training of :class:`ProgressiveEvolution` (``mode='naive'``) steps the optimiser
    after every member, so later members see a head that earlier members already changed.

``'batched'``
    Head once, then every member's tail in one batched forward (``model.forward_tails(features,
    members)``: members stacked along the batch, per-member fusion weights, per-member BatchNorm
    statistics; :mod:`nni_bixnas.space.batched_tails`), the mean loss, one backward. The same gradients
    as ``'low_memory'``, at the memory of ``'plain'``; fewer, larger kernels (faster where the step is
    launch- or overhead-bound: small inputs, GPUs). Needs a supernet with ``forward_tails``.

Mixed precision. Under autocast the head's outputs are half precision; ``'low_memory'`` detaches them into
float32 leaves, each tail reads its own cast of them, and the leaves accumulate the members' gradients in
float32 (half-precision accumulation of ``s`` already loss-scaled gradients overflows under ``16-mixed``
for large populations); the sum is cast back for the one head backward.

Head liveness. Which head blocks a network computes depends on the whole sample (blocks whose output
never reaches the output head are skipped). The head is therefore run with the *union* of the
members' choices active, so every block any member's tail reads is computed; a member's live blocks
see exactly the inputs they would see on their own (liveness is monotone in the choices), which the
fairness tests check against each member's own forward.

BatchNorm. In training mode every forward normalises with its own batch statistics, so each member's
loss and gradients are those of that member alone. The running statistics, though, are shared: the head
updates its BatchNorms once per step, and every tail updates the tail BatchNorms it uses, one member
after another (an exponential average over the members, weighted towards the last). Validation in
eval mode therefore uses statistics pooled over the population, for every member, as the authors' code
does. ``'naive'`` updates the head's running statistics ``s`` times per step instead of once.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch

from nni_bixnas._checks import one_of

__all__ = [
    "FAIR_STEPS", "MEMBER_BN", "StepResult", "batch_statistics", "recalibrated_statistics", "fair_step",
    "evaluate_members",
    "union_sample", "detach_features", "feature_tensors",
]

#: The available steps; ``'low_memory'`` is the default everywhere.
FAIR_STEPS = ("low_memory", "plain", "naive", "batched")

Sample = Mapping[str, Sequence[int]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class StepResult:
    """What one step computed.

    Attributes
    ----------
    losses
        Every member's (undivided) loss, in member order.
    loss
        Their mean, the loss whose gradient the step accumulated.
    head_features
        The head's output (``None`` for ``'naive'``, which has no shared head).
    feature_grads
        ``'low_memory'`` only: the gradient of the mean loss with respect to every tensor of
        :func:`feature_tensors` ``(head_features)`` (``None`` where no tail read the tensor).
    """

    losses: List[float]
    loss: float
    head_features: Any = None
    feature_grads: Optional[Tuple[Optional[torch.Tensor], ...]] = None


def union_sample(members: Sequence[Sample]) -> Dict[str, List[int]]:
    """Per label, the union of the members' choices: the head runs with this active."""
    union: Dict[str, set] = {}
    for member in members:
        for label, value in member.items():
            union.setdefault(label, set()).update(int(v) for v in value)
    return {label: sorted(values) for label, values in union.items()}


def feature_tensors(features: Any) -> List[torch.Tensor]:
    """The distinct tensors held by a features object (dataclass fields, tuples/lists of tensors), in order."""
    seen: Dict[int, torch.Tensor] = {}
    for value in _field_values(features):
        for tensor in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(tensor, torch.Tensor) and id(tensor) not in seen:
                seen[id(tensor)] = tensor
    return list(seen.values())


def detach_features(features: Any, leaf_dtype: Optional[torch.dtype] = None
                    ) -> Tuple[Any, List[torch.Tensor], List[torch.Tensor]]:
    """Replace every tensor of ``features`` by a detached leaf (same values; no copy unless cast).

    A leaf requires grad when its tensor does (i.e. it depends on the head's parameters). With
    ``leaf_dtype`` (e.g. float32 under autocast) floating-point leaves of a lower precision are held in
    that dtype, and the detached features read them cast back to their original dtype.

    A tensor held twice (e.g. a skipped block passing the stem through) becomes one leaf, so the
    structure is kept. Returns ``(detached features, original tensors, their leaves)``.
    """
    originals = feature_tensors(features)
    # Only tensors that carry a gradient back into the head (not e.g. the input image) become grad leaves.
    leaves = [_leaf(t, leaf_dtype) for t in originals]
    return _cast_like(features, originals, leaves), originals, leaves


def _leaf(t: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.Tensor:
    wider = dtype is not None and t.is_floating_point() and torch.finfo(t.dtype).bits < torch.finfo(dtype).bits
    return (t.detach().to(dtype) if wider else t.detach()).requires_grad_(t.requires_grad)


def _cast_like(features: Any, originals: Sequence[torch.Tensor], leaves: Sequence[torch.Tensor]) -> Any:
    """``features`` with every original tensor replaced by its leaf in the original's dtype.

    Called once per tail: a cast is a node of that tail's graph, freed by its backward.
    """
    cast = {id(t): leaf if leaf.dtype == t.dtype else leaf.to(t.dtype) for t, leaf in zip(originals, leaves)}

    def swap(value):
        if isinstance(value, torch.Tensor):
            return cast[id(value)]
        if isinstance(value, (tuple, list)):
            return type(value)(swap(v) for v in value)
        return value

    if dataclasses.is_dataclass(features):
        changes = {f.name: swap(getattr(features, f.name)) for f in dataclasses.fields(features)}
        detached = dataclasses.replace(features, **changes)
    elif isinstance(features, (tuple, list)):
        detached = swap(features)
    elif isinstance(features, torch.Tensor):
        detached = swap(features)
    else:
        raise TypeError(f"cannot detach head features of type {type(features).__name__}; "
                        "expected a dataclass, tuple or tensor")
    return detached


def _field_values(features: Any) -> List[Any]:
    if dataclasses.is_dataclass(features):
        return [getattr(features, f.name) for f in dataclasses.fields(features)]
    if isinstance(features, (tuple, list)):
        return list(features)
    return [features]


def fair_step(
    model: torch.nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    stage: int,
    members: Sequence[Sample],
    loss_fn: LossFn,
    *,
    step: str = "low_memory",
    backward: Optional[Callable[[torch.Tensor], Any]] = None,
) -> StepResult:
    """Accumulate the gradient of the members' mean loss on one batch into ``model``'s ``.grad``.

    Parameters
    ----------
    model
        A supernet with ``set_active``, ``forward_head`` and ``forward_tail`` (see the module docs).
    images, target
        One batch.
    stage
        First stage of the tails (the stage being searched).
    members
        Full samples of the population, which agree on the stages before ``stage``.
    loss_fn
        ``loss_fn(logits, target) -> scalar``.
    step
        ``'low_memory'`` (default), ``'plain'`` or ``'naive'`` (see the module docs).
    backward
        Runs the backward of a loss; default ``loss.backward()``. A Lightning module passes its
        ``manual_backward`` (so mixed-precision loss scaling applies; the head's backward then receives
        the already scaled feature gradients).

    Returns
    -------
    StepResult

    Raises
    ------
    ValueError
        For an unknown ``step`` or an empty population.
    """
    one_of("step", step, FAIR_STEPS)
    if not members:
        raise ValueError("the population is empty; a step needs at least one member")
    scale = 1.0 / len(members)
    backward = backward if backward is not None else torch.Tensor.backward
    losses: List[torch.Tensor] = []  # read on the host once, at the end: one synchronisation per step
    try:
        if step == "naive":
            for member in members:
                model.set_active(member)
                loss = loss_fn(model.forward_tail(model.forward_head(images, stage)), target)
                backward(loss * scale)
                losses.append(loss.detach())
            return _result(losses, scale)

        model.set_active(union_sample(members))
        head = model.forward_head(images, stage)
        if step == "plain":
            total = 0.0
            for member in members:
                model.set_active(member)
                loss = loss_fn(model.forward_tail(head), target)
                total = total + loss
                losses.append(loss.detach())
            backward(total * scale)
            return _result(losses, scale, head_features=head)

        if step == "batched":
            forward_tails = getattr(model, "forward_tails", None)
            if forward_tails is None:
                raise ValueError(f"step='batched' needs a supernet with forward_tails(features, members); "
                                 f"{type(model).__name__} has none (use step='low_memory')")
            tail_losses = torch.stack([loss_fn(logits, target) for logits in forward_tails(head, members)])
            backward(tail_losses.sum() * scale)
            return _result(list(tail_losses.detach()), scale, head_features=head)

        _, originals, leaves = detach_features(head, leaf_dtype=torch.float32)
        for member in members:
            model.set_active(member)
            loss = loss_fn(model.forward_tail(_cast_like(head, originals, leaves)), target)
            backward(loss * scale)
            losses.append(loss.detach())
        grads = tuple(leaf.grad for leaf in leaves)
        roots = [(t, g.to(t.dtype)) for t, g in zip(originals, grads) if g is not None and t.requires_grad]
        if roots:
            torch.autograd.backward([t for t, _ in roots], [g for _, g in roots])
        return _result(losses, scale, head_features=head, feature_grads=grads)
    finally:
        model.set_active(None)


def _result(losses: Sequence[torch.Tensor], scale: float, **kwargs) -> StepResult:
    values = torch.stack([v.to(torch.float64) for v in losses]).cpu().tolist()
    return StepResult(values, sum(values) * scale, **kwargs)


#: How members are scored: ``'batch'`` normalises with each batch's own statistics (BatchNorm in training
#: mode, running statistics left untouched); ``'running'`` uses the shared running statistics (the authors');
#: ``'recalibrate'`` gives every member its own running statistics from a few training batches
#: (:func:`recalibrated_statistics`) and scores it in eval mode, as SPOS and FairNAS score subnets.
MEMBER_BN = ("batch", "running", "recalibrate")

BatchNormState = List[Dict[str, torch.Tensor]]


def _norms(model: torch.nn.Module) -> List[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _buffers(norms) -> BatchNormState:
    return [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in norms]


def _load_buffers(norms, state: BatchNormState) -> None:
    for m, buffers in zip(norms, state):
        for name, value in buffers.items():
            getattr(m, name).copy_(value)


@contextlib.contextmanager
def _restored_norms(model: torch.nn.Module) -> Iterator[List[torch.nn.modules.batchnorm._BatchNorm]]:
    """The model's BatchNorm layers, whose modes, momenta and running statistics are restored on exit."""
    norms = _norms(model)
    modes, momenta, saved = [m.training for m in norms], [m.momentum for m in norms], _buffers(norms)
    try:
        yield norms
    finally:
        for m, training, momentum in zip(norms, modes, momenta):
            m.train(training)
            m.momentum = momentum
        _load_buffers(norms, saved)


@contextlib.contextmanager
def batch_statistics(model: torch.nn.Module) -> Iterator[None]:
    """Run BatchNorm layers on batch statistics without changing their running statistics.

    The members of a Phase 2 population share one set of BatchNorm running statistics, which every
    member's training forward moves towards its own feature distribution; scored with them, a member is
    normalised with a mixture of the others' statistics (with few epochs, every member can score ~0).
    """
    with _restored_norms(model) as norms:
        for m in norms:
            m.train()
        yield


@torch.no_grad()
def recalibrated_statistics(model: torch.nn.Module, batches: Sequence[torch.Tensor], stage: int,
                            member: Sample) -> BatchNormState:
    """The BatchNorm running statistics ``member`` alone would have: every BatchNorm reset, then the
    ``batches`` forwarded through the member's network in training mode with a cumulative average.

    The model's own statistics, modes and momenta are restored afterwards; pass the result to
    :func:`evaluate_members` (``member_bn='recalibrate'``). The head's BatchNorms are recalibrated too,
    so a member is scored exactly as its standalone network with recalibrated statistics.
    """
    with _restored_norms(model) as norms:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over the batches
            m.train()
        try:
            model.set_active(member)
            for images in batches:
                model.forward_tail(model.forward_head(images, stage))
        finally:
            model.set_active(None)
        return _buffers(norms)


@torch.no_grad()
def evaluate_members(
    model: torch.nn.Module,
    images: torch.Tensor,
    stage: int,
    members: Sequence[Sample],
    member_bn: str,
    statistics: Optional[Sequence[BatchNormState]] = None,
) -> List[torch.Tensor]:
    """Logits of every member on one batch.

    ``member_bn`` has no default here: callers pass the strategy's own (``'recalibrate'`` unless told
    otherwise), so that no path scores members another way than the search does.
    With ``member_bn`` ``'batch'`` or ``'running'`` the head runs once (union of the members' choices),
    then each tail. With ``'recalibrate'`` each member runs its whole network in eval mode on its own
    ``statistics`` (one :func:`recalibrated_statistics` per member); the model's statistics are restored.
    """
    one_of("member_bn", member_bn, MEMBER_BN)
    if member_bn == "recalibrate" and (statistics is None or len(statistics) != len(members)):
        raise ValueError("member_bn='recalibrate' needs one recalibrated_statistics() per member")
    outputs = []
    try:
        if member_bn == "recalibrate":
            with _restored_norms(model) as norms:
                for m in norms:
                    m.eval()
                for member, state in zip(members, statistics):
                    _load_buffers(norms, state)
                    model.set_active(member)
                    outputs.append(model.forward_tail(model.forward_head(images, stage)))
            return outputs
        model.set_active(union_sample(members))
        with batch_statistics(model) if member_bn == "batch" else contextlib.nullcontext():
            head = model.forward_head(images, stage)
            for member in members:
                model.set_active(member)
                outputs.append(model.forward_tail(head))
        return outputs
    finally:
        model.set_active(None)
