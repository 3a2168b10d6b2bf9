"""A member's inference latency on the search's device, timed once per distinct architecture.

MACs are not time (BiX-Net has 43% of U-Net's MACs but runs only 1.30x faster on CPU), so Phase 2 may rank
its members by measured latency instead (``ProgressiveEvolution(objective='latency')``). A member's latency
is the median of ``repeats`` timed forwards of its fixed network (``supernet.freeze(sample)``, eval mode,
``torch.no_grad``, batch 1) after ``warmup`` untimed ones, with ``torch.cuda.synchronize`` around every
timed forward on CUDA. Two members that compute the same net (the same
:meth:`~nni_bixnas.space.Gene.live_choices`, the key of :mod:`~nni_bixnas.strategy.supernet.member_macs`) are timed
once: the value is cached by that key, the input size and the device.

The clock is :func:`forward_ms`; pass ``timer=`` (or patch this module's ``forward_ms``) to replace it,
e.g. with fixed values in tests, which cannot depend on wall time.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from time import perf_counter
from typing import Any, Callable, Dict, List, Mapping, MutableMapping, Optional, Sequence

import torch
import torch.nn as nn

from nni_bixnas._checks import non_negative_int, positive_int, positive_ints
from nni_bixnas.strategy.supernet.member_macs import architecture_key

__all__ = ["LatencySettings", "member_latency", "forward_ms", "check_device", "resolve_device"]

_logger = logging.getLogger("nni_bixnas.strategy.progressive_evolution")  # the search's log, as before

_LATENCY_CACHE: Dict[str, float] = {}

#: ``timer(model, inputs, repeats, warmup) -> milliseconds`` of one forward of ``model`` on ``inputs``.
Timer = Callable[[nn.Module, torch.Tensor, int, int], float]


def forward_ms(model: nn.Module, inputs: torch.Tensor, repeats: int, warmup: int) -> float:
    """Median wall time in milliseconds of ``repeats`` forwards of ``model`` on ``inputs``, after ``warmup``.

    The caller puts ``model`` in eval mode on ``inputs``'s device; on CUDA the device is synchronised before
    and after every timed forward, so the time is the kernels' and not their launch.
    """
    cuda = inputs.device.type == "cuda"
    times = []
    with torch.no_grad():
        for _ in range(warmup):
            model(inputs)
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize(inputs.device)
            start = perf_counter()
            model(inputs)
            if cuda:
                torch.cuda.synchronize(inputs.device)
            times.append(perf_counter() - start)
    return 1e3 * statistics.median(times)


def check_device(name: str, value: Any) -> Optional[str]:
    """``None``, ``'cpu'``, ``'cuda'`` or ``'cuda:<index>'``, else one clear error."""
    if value is None:
        return None
    try:
        device = torch.device(value) if isinstance(value, str) else None
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be None, 'cpu', 'cuda' or 'cuda:<index>', got {value!r}")
    return str(device)


def resolve_device(requested: Optional[str], accelerator: Any = None) -> str:
    """The device members are timed on: ``requested``, else where the training runs (``'cpu'`` for
    ``accelerator='cpu'``, else ``'cuda'`` if this process sees a GPU, else ``'cpu'``).

    Raises
    ------
    ValueError
        If ``requested`` is a CUDA device this process cannot use.
    """
    if requested is None:
        return "cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"latency_device {requested!r} is not available in this process "
                         f"({torch.cuda.device_count()} CUDA device(s) visible); set latency_device='cpu' or None")
    return requested


def member_latency(supernet: nn.Module, space: Dict[str, Any], sample: Mapping[str, Sequence[int]],
                   input_size: Sequence[int] = (512, 512), *, repeats: int = 5, warmup: int = 2,
                   device: str = "cpu", timer: Optional[Timer] = None,
                   cache: Optional[MutableMapping[str, float]] = None) -> float:
    """Latency in milliseconds of ``sample``'s fixed network at ``1 x C x H x W``, timed once per net.

    Parameters
    ----------
    supernet, space, sample
        As for :func:`~nni_bixnas.strategy.supernet.member_macs.member_macs`: the space's module, its
        :func:`~nni_bixnas.strategy.supernet.spaces.space_reference` and the member.
    input_size
        ``(H, W)`` of the timed input; ``C`` is the net's ``in_channels`` (default 3).
    repeats, warmup
        Timed forwards (their median is the latency) and untimed ones before them.
    device
        Where the net runs (see :func:`resolve_device`).
    timer
        Replaces :func:`forward_ms` (same arguments).
    cache
        ``{key: ms}`` to read and fill (a search's own, kept in its state); default this module's.
    """
    cache = _LATENCY_CACHE if cache is None else cache
    frozen = supernet.freeze(dict(sample))
    key = architecture_key(space, sample, frozen, list(input_size), str(device))
    if key not in cache:
        timer = forward_ms if timer is None else timer
        model = frozen.to(device).eval()
        channels = int(getattr(frozen, "in_channels", 3))
        inputs = torch.rand(1, channels, *input_size, generator=torch.Generator().manual_seed(0)).to(device)
        cache[key] = float(timer(model, inputs, int(repeats), int(warmup)))
        del model, inputs
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return cache[key]


@dataclasses.dataclass(frozen=True)
class LatencySettings:
    """How a search times its members (``ProgressiveEvolution(objective='latency')``), checked on creation.

    Attributes
    ----------
    input_size
        ``(H, W)`` of the timed input (batch 1).
    repeats, warmup
        Timed forwards per net (the latency is their median) and untimed forwards before them.
    device
        ``None`` (where the training runs, :func:`resolve_device`: ``'cpu'`` with ``accelerator='cpu'``, else
        ``'cuda'`` if this process sees a GPU, else ``'cpu'``), ``'cpu'``, ``'cuda'`` or ``'cuda:<index>'``.
        Under ``nnictl`` the strategy runs in NNI's dispatcher, which sees only the GPUs of
        ``tunerGpuIndices``.
    """

    input_size: List[int]
    repeats: int = 5
    warmup: int = 2
    device: Optional[str] = None

    def __post_init__(self) -> None:
        # the messages name ProgressiveEvolution's keywords (latency_<field>)
        size = positive_ints("latency_input_size", self.input_size, 2, "(height, width) of positive ints or None")
        object.__setattr__(self, "input_size", size)
        object.__setattr__(self, "repeats", positive_int("latency_repeats", self.repeats))
        object.__setattr__(self, "warmup", non_negative_int("latency_warmup", self.warmup))
        object.__setattr__(self, "device", check_device("latency_device", self.device))

    def options(self) -> Dict[str, Any]:
        """``{'latency_input_size': ..., 'latency_repeats': ..., 'latency_warmup': ..., 'latency_device': ...}``."""
        return {f"latency_{field.name}": getattr(self, field.name) for field in dataclasses.fields(self)}

    def time_members(self, supernet: nn.Module, space: Dict[str, Any], members: Sequence[Mapping[str, Sequence[int]]],
                     device: str, cache: MutableMapping[str, float], stage: int) -> List[float]:
        """Every member's latency (ms) on ``device``, from ``cache`` or timed now (once per distinct net)."""
        timed = len(cache)
        values = [member_latency(supernet, space, m, self.input_size, repeats=self.repeats, warmup=self.warmup,
                                 device=device, cache=cache) for m in members]
        _logger.info("[stage %d] latency on %s at %d x %d (median of %d forwards; %d net(s) timed now): "
                     "%.2f to %.2f ms", stage, device, *self.input_size, self.repeats, len(cache) - timed,
                     min(values), max(values))
        return values
