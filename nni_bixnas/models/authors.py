"""The authors' checkpoints: load a ``state_dict`` of their ``Phase2`` model (``tiangexiang/BiX-NAS``) into ours.

Their key layout (``CORE/pytorch_version/Phase2model.py``, ``shared/notes/official-code.md`` §1), read from
their code and their released ``bixnet_monuseg.pt`` (``{'state_dict': ...}``):

- ``pre_transform_conv_block.{0,1,3,4,6,7}.*``: the stem (our ``stem.*``, the same indices);
- ``iteration{t}_layer{l}_{encoder|decoder}_blocks.operator{1|2}.{0|1}.*``: block ``(t, l)``, ``.0`` its
  convolution (absent where their code built none), ``.1`` its BatchNorm; the same modules are saved again
  under ``encoders.{i}`` / ``decoders.{i}``, which we ignore;
- ``middles.{0,1,3,4}.*``: the bridge (our ``bridge.*``);
- ``post_transform_conv_block.{0,1,3,4}.*`` and ``post2.0.weight``: the head (our ``head.{0,1,3,4,6}``);
- ``att2.*``: their channel attention (``--with_att``, in ``bixnet_tnbc.pt``), which we do not build.

Their network ends in a sigmoid; ours returns the logits before it.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Mapping, Optional, Union

import torch

from ..space.bionet_pp import BiONetPlusPlus
from ..space.gene import Gene

__all__ = ["authors_key", "detect_legacy_shared", "load_authors_state_dict", "load_authors_checkpoint"]

_BLOCK = re.compile(r"iteration(\d+)_layer(\d+)_(encoder|decoder)_blocks\.")
_HEAD = {"0": "post_transform_conv_block.0", "1": "post_transform_conv_block.1",
         "3": "post_transform_conv_block.3", "4": "post_transform_conv_block.4", "6": "post2.0"}


def _block_prefix(kind: str, iteration: int, level: int) -> str:
    return f"iteration{iteration}_layer{level}_{'encoder' if kind == 'enc' else 'decoder'}_blocks"


def _conv_key(kind: str, iteration: int, level: int, index: int) -> str:
    return f"{_block_prefix(kind, iteration, level)}.operator{index + 1}.0.weight"


def authors_key(model: BiONetPlusPlus, key: str, state_dict: Mapping[str, torch.Tensor]) -> str:
    """The key of ``state_dict`` (the authors' layout) that holds our ``model``'s ``key``.

    A shared convolution is read from the first block that runs it and has it in ``state_dict``.
    """
    module, _, rest = key.partition(".")
    if module == "stem":
        return f"pre_transform_conv_block.{rest}"
    if module == "bridge":
        return f"middles.{rest}"
    if module == "head":
        index, _, name = rest.partition(".")
        return f"{_HEAD[index]}.{name}"
    if module == "blocks":
        label, _, rest = rest.partition(".")
        kind, iteration, level = _label_parts(label)
        bn, _, name = rest.partition(".")  # bn1 / bn2
        return f"{_block_prefix(kind, iteration, level)}.operator{bn[2]}.1.{name}"
    if module == "convs":
        level_key, index, _ = rest.split(".")
        kind, level = level_key.split("_")
        for label in model._conv_users(kind, int(level)):
            candidate = _conv_key(*_label_parts(label), int(index))
            if candidate in state_dict:
                return candidate
        return _conv_key(kind, 0, int(level), int(index))
    raise ValueError(f"no key of the authors' layout holds {key!r}")


def detect_legacy_shared(state_dict: Mapping[str, torch.Tensor], iterations: int, levels: int) -> bool:
    """Whether ``state_dict`` was trained with the authors' pre-2022 sharing (see ``legacy_shared`` of
    :class:`~nni_bixnas.space.BiONetPlusPlus`): every block of iterations >= 1 holds the convolutions of the
    last iteration-0 decoder level. ``False`` when they hold their own level's (their code since ``36490ad``).

    Raises ``ValueError`` when neither holds.
    """
    legacy = head = True
    for kind in ("enc", "dec"):
        for iteration in range(1, iterations):
            for level in range(levels):
                for index in range(2):
                    weight = state_dict.get(_conv_key(kind, iteration, level, index))
                    if weight is None:
                        continue
                    last = state_dict.get(_conv_key("dec", 0, levels - 1, index))
                    own = state_dict.get(_conv_key(kind, 0, level, index))
                    legacy &= last is not None and torch.equal(weight, last)
                    head &= own is not None and torch.equal(weight, own)
    if legacy != head:
        return legacy
    if legacy:  # no convolution beyond iteration 0 (one iteration): both wirings agree
        return False
    raise ValueError("the checkpoint's convolutions of iterations >= 1 are neither those of their level in "
                     "iteration 0 (per-level sharing) nor those of the last iteration-0 decoder (legacy sharing); "
                     "expected a state_dict of the authors' Phase2 model")


def load_authors_state_dict(model: BiONetPlusPlus, state_dict: Mapping[str, torch.Tensor]) -> BiONetPlusPlus:
    """Copy a ``state_dict`` of the authors' ``Phase2`` model into ``model`` (built with their gene, widths and
    ``legacy_shared`` wiring); returns ``model``.

    Raises ``ValueError`` naming the first missing or mis-shaped key, or a convolution that the checkpoint's
    blocks do not share the way ``model`` does.
    """
    if any(key.startswith("att2.") for key in state_dict):
        raise ValueError("the checkpoint has channel attention (att2.*, the authors' --with_att, as in "
                         "bixnet_tnbc.pt); expected one without: nni_bixnas does not build that module")
    ours = model.state_dict()
    mapped: Dict[str, torch.Tensor] = {}
    for key, value in ours.items():
        theirs = authors_key(model, key, state_dict)
        if theirs not in state_dict:
            raise ValueError(f"the checkpoint has no {theirs!r} (for {key!r}); expected a state_dict of the "
                             "authors' Phase2 model with this gene")
        if tuple(state_dict[theirs].shape) != tuple(value.shape):
            raise ValueError(f"the checkpoint's {theirs!r} has shape {tuple(state_dict[theirs].shape)}, "
                             f"expected {tuple(value.shape)} (for {key!r})")
        mapped[key] = state_dict[theirs]
    _check_sharing(model, state_dict)
    model.load_state_dict(mapped, strict=True)
    return model


def _check_sharing(model: BiONetPlusPlus, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Every block of ``model`` that shares a convolution finds the same weights in ``state_dict``."""
    for level_key in model.convs:
        kind, level = level_key.split("_")
        users = [_label_parts(label) for label in model._conv_users(kind, int(level)) if label in model.blocks]
        for index in range(2):
            found = [key for key in (_conv_key(*user, index) for user in users) if key in state_dict]
            for other in found[1:]:
                if not torch.equal(state_dict[other], state_dict[found[0]]):
                    raise ValueError(
                        f"the checkpoint's {other!r} differs from {found[0]!r}, which legacy_shared="
                        f"{model.legacy_shared} shares; load it with legacy_shared={not model.legacy_shared}")


def _label_parts(label: str):
    kind, iteration, level = label.split("_")
    return kind, int(iteration), int(level)


def _read(path: Union[str, os.PathLike]) -> Mapping[str, torch.Tensor]:
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"{os.fspath(path)} does not load as weights only (tensors and plain data): {err}") from err
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or "pre_transform_conv_block.0.weight" not in state:
        raise ValueError(f"{os.fspath(path)} is not a state_dict of the authors' Phase2 model: expected "
                         "'pre_transform_conv_block.0.weight' (at the top or under 'state_dict')")
    return state


def load_authors_checkpoint(path: Union[str, os.PathLike], gene: Optional[Union[Gene, str]] = None,
                            legacy_shared: Optional[bool] = None, **model_kwargs) -> BiONetPlusPlus:
    """The authors' BiX-Net from their checkpoint (e.g. ``bixnet_monuseg.pt``), in eval mode.

    Parameters
    ----------
    path
        A ``torch.save`` of their ``Phase2`` model's ``state_dict``, or of ``{'state_dict': ...}``; read
        weights-only.
    gene
        The gene it was trained with (text or :class:`Gene`); default the published BiX-Net gene.
    legacy_shared
        The convolution wiring; default: told from the checkpoint (:func:`detect_legacy_shared`). Their
        released checkpoints have the pre-2022 wiring.
    model_kwargs
        Further arguments of :class:`~nni_bixnas.space.BiONetPlusPlus` (``bn_momentum``, default the
        authors' 0.99, matters only when training on); channels and widths come from the weights.
    """
    from . import create_model

    state = _read(path)
    stage_keys = [_BLOCK.match(k) for k in state]
    iterations = 1 + max(int(m.group(1)) for m in stage_keys if m)
    levels = 1 + max(int(m.group(2)) for m in stage_keys if m)
    if legacy_shared is None:
        legacy_shared = detect_legacy_shared(state, iterations, levels)
    stem, head = state["pre_transform_conv_block.0.weight"], state["post2.0.weight"]
    kwargs = {"in_channels": int(stem.shape[1]), "stem_width": int(stem.shape[0]),
              "width": int(state["pre_transform_conv_block.6.weight"].shape[0]), "num_classes": int(head.shape[0]),
              "iterations": iterations, "levels": levels, "bn_momentum": 0.99, **model_kwargs}
    model = create_model("bixnet", gene=gene, legacy_shared=legacy_shared, **kwargs)
    return load_authors_state_dict(model, state).eval()
