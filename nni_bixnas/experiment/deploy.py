"""A retrained network as a self-contained ``torch.export`` program (``model.pt2``): loads with torch alone.

The program holds the graph (ATen operators only) and the weights; reading it needs neither nni_bixnas nor
NNI::

    import torch
    net = torch.export.load("model.pt2").module()
    logits = net(images)          # float32 (B, C, H, W) in [0, 1] -> logits (B, num_classes, H, W)

Height and width are dynamic: any multiple of ``2 ** (levels + 1)`` (32 for BiO-Net++ with 4 levels) from
twice that (64) up to :data:`MAX_SIDE`, and any batch size. (``torch.export`` specialises a size of one
unit of the multiple, so 32 x 32 inputs, valid for the PyTorch model, are not accepted by the program.)
Where the graph cannot be exported with dynamic sizes, the program is exported at the example size only
and ``model.json`` says so.

ONNX is not written: ``torch.onnx.export`` needs the ``onnx`` package (TorchScript exporter) or ``onnx`` and
``onnxscript`` (the dynamo exporter), which are not dependencies of nni_bixnas.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from nni_bixnas.utils import PathLike, atomic_write

__all__ = ["MAX_SIDE", "export_program", "max_difference", "size_multiple", "training_input_size"]

_logger = logging.getLogger(__name__)

#: Largest height / width the dynamic program accepts.
MAX_SIDE = 8192

#: Batch size of the example input (a batch of 1 would be specialised by ``torch.export``).
_EXAMPLE_BATCH = 2


def size_multiple(net: nn.Module) -> int:
    """What input height and width must be a multiple of: ``2 ** (levels + 1)``, else 32."""
    levels = getattr(net, "levels", None)
    return 2 ** (levels + 1) if isinstance(levels, int) and levels > 0 else 32


def training_input_size(checkpoint: PathLike, default: Sequence[int] = (512, 512)) -> Tuple[int, int]:
    """The input size of the run that wrote ``checkpoint`` (``<run>/checkpoints/best.ckpt``).

    Read from ``<run>/run.json``: the training crop (``data_kwargs.patch_size``), else the resize, else
    ``default``. Rounded up to a multiple of 32.
    """
    run = Path(checkpoint).parent.parent / "run.json"
    size: Any = None
    try:
        data_kwargs = json.loads(run.read_text()).get("data_kwargs") or {}
        size = data_kwargs.get("patch_size") or data_kwargs.get("resize")
    except (OSError, ValueError, AttributeError):
        pass
    if isinstance(size, int):
        size = (size, size)
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        size = tuple(default)
    return tuple(-(-int(v) // 32) * 32 for v in size)


def _example(net: nn.Module, input_size: Sequence[int]) -> torch.Tensor:
    in_channels = getattr(net, "in_channels", 3)
    return torch.rand(_EXAMPLE_BATCH, in_channels, *input_size, generator=torch.Generator().manual_seed(0))


def _dynamic_shapes(multiple: int):
    batch = torch.export.Dim("batch", min=1, max=1024)
    units = MAX_SIDE // multiple
    height = torch.export.Dim("height_units", min=2, max=units)
    width = torch.export.Dim("width_units", min=2, max=units)
    return ({0: batch, 2: multiple * height, 3: multiple * width},)


def export_program(net: nn.Module, path: PathLike, input_size: Sequence[int] = (512, 512),
                   info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Export ``net`` (in eval mode, on the CPU) as a ``torch.export`` program to ``path``; return its description.

    The description (also written beside the program as ``<stem>.json``) gives the input contract:
    channels, the example size, whether height/width are dynamic and their multiple, and ``info``.

    Raises
    ------
    ValueError
        If the network cannot be exported at all (the message gives torch's reason).
    """
    path = Path(path)
    net = net.cpu().eval()
    multiple = size_multiple(net)
    input_size = tuple(int(v) for v in input_size)
    example = _example(net, input_size)
    dynamic = True
    with torch.no_grad():
        try:
            program = torch.export.export(net, (example,), dynamic_shapes=_dynamic_shapes(multiple))
        except Exception as err:  # torch raises many types for a graph it cannot make dynamic
            _logger.warning("cannot export %s with dynamic height/width (%s); exporting at %s only",
                            type(net).__name__, str(err).splitlines()[0], input_size)
            dynamic = False
            try:
                program = torch.export.export(net, (example,))
            except Exception as err2:
                raise ValueError(f"cannot export {type(net).__name__} with torch.export: {err2}") from err2
    with atomic_write(path, "wb") as handle:
        torch.export.save(program, handle)
    description = _description(net, input_size, multiple, dynamic, info)
    with atomic_write(path.with_suffix(".json")) as handle:
        json.dump(description, handle, indent=2, sort_keys=True)
    return description


def _description(net: nn.Module, input_size: Tuple[int, int], multiple: int, dynamic: bool,
                 info: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    return {
        "format": "torch.export program (torch.export.load(path).module())",
        "torch": torch.__version__,
        "input": {"dtype": "float32", "range": [0, 1], "layout": "(batch, channels, height, width)",
                  "channels": getattr(net, "in_channels", None), "example_size": list(input_size),
                  "dynamic_batch": dynamic, "dynamic_size": dynamic,
                  "size_multiple": multiple, "min_side": 2 * multiple if dynamic else None,
                  "max_side": MAX_SIDE if dynamic else None},
        "output": {"dtype": "float32", "layout": "(batch, num_classes, height, width)", "values": "logits",
                   "num_classes": getattr(net, "num_classes", None)},
        **(info or {}),
    }


def max_difference(program_path: PathLike, net: nn.Module, images: torch.Tensor) -> float:
    """Largest absolute difference between the saved program's and ``net``'s outputs on ``images``."""
    loaded = torch.export.load(str(program_path)).module()
    with torch.no_grad():
        return float((loaded(images) - net.cpu().eval()(images)).abs().max())
