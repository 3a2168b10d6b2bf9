"""The nets an experiment searched, rebuilt at the searched width: model arguments, genes, params.

The search space's constructor arguments (``classArgs.model_space_kwargs`` of the nnictl config) fix the
width the search ran at; :func:`searched_model_args` turns them into the arguments that rebuild a found
gene with ``create_model("bixnet", gene=..., **args)``, defaults of
:class:`~nni_bixnas.space.BiONetPlusPlus` filled in, so the record does not depend on them.
:class:`NetCounter` builds members' genes, their identity (the net they compute) and their params.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional

from nni_bixnas.space.gene_header import MODEL_ARG_KEYS, SEARCH_ONLY_KEYS

__all__ = ["BIONET_SPACE", "NetCounter", "checkpoint_model_args", "searched_model_args"]

#: The ``model_space`` of an nnictl config that searches BiO-Net++.
BIONET_SPACE = "nni_bixnas.space.BiONetPlusPlus"


def _shape_args(kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    """The :data:`MODEL_ARG_KEYS` of the BiO-Net++ that ``kwargs`` build (NNI's wrapper hides the defaults
    from :func:`inspect.signature`, so they are read off a built net)."""
    from nni_bixnas.models import create_model

    try:
        net = create_model("bionet_pp", **kwargs)
    except (TypeError, ValueError):
        return {}
    return {key: getattr(net, key) for key in MODEL_ARG_KEYS}


def searched_model_args(class_args: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The model arguments of a BiO-Net++ search (``None`` for another space).

    ``width``, ``stem_width``, ``iterations``, ``levels``, ``in_channels`` and ``num_classes`` always
    (the space's defaults where the config gives none), then the config's other non-search arguments
    (e.g. ``bn_momentum``); ``candidates``, ``max_k`` and ``gene`` describe the search and are left out.
    """
    if class_args.get("model_space") != BIONET_SPACE:
        return None
    kwargs = class_args.get("model_space_kwargs") or {}
    if not isinstance(kwargs, dict):
        return None
    kwargs = {k: v for k, v in kwargs.items() if k not in SEARCH_ONLY_KEYS}
    return {**_shape_args(kwargs), **kwargs}


def checkpoint_model_args(hparams: Any) -> Optional[Dict[str, Any]]:
    """The model arguments of a ``bixnet`` checkpoint's hyper-parameters (``None`` for another model)."""
    if not isinstance(hparams, dict) or hparams.get("model_name") != "bixnet":
        return None
    kwargs = hparams.get("model_kwargs") or {}
    return {k: v for k, v in kwargs.items() if k not in SEARCH_ONLY_KEYS} if isinstance(kwargs, dict) else None


class NetCounter:
    """Genes, identities and params of BiO-Net++ samples at the searched model arguments.

    Parameters
    ----------
    model_args
        From :func:`searched_model_args`; ``None`` when unknown (then params are ``None`` and samples are
        told apart as given).
    """

    def __init__(self, model_args: Optional[Mapping[str, Any]]) -> None:
        self.model_args = dict(model_args) if model_args else None
        self._params: Dict[str, Optional[int]] = {}

    def gene(self, sample: Mapping):
        """The :class:`~nni_bixnas.space.gene.Gene` of ``sample``, or ``None`` if it is not one."""
        from nni_bixnas.space.gene import Gene

        args = self.model_args or {}
        try:
            return Gene.from_sample(sample, int(args.get("iterations", 3)), int(args.get("levels", 4)))
        except (ValueError, TypeError):
            return None

    def identity(self, sample: Mapping) -> str:
        """A key two samples computing the same net share: the choices of the blocks that reach the head."""
        gene = self.gene(sample)
        if gene is None:
            return json.dumps(sample, sort_keys=True, default=str)
        return json.dumps(gene.live_choices(), sort_keys=True)

    def params(self, sample: Mapping) -> Optional[int]:
        """Parameters of the fixed net of ``sample`` (``None`` without model arguments or a gene)."""
        if self.model_args is None:
            return None
        key = self.identity(sample)
        if key not in self._params:
            gene = self.gene(sample)
            self._params[key] = None if gene is None else _count_params(gene, self.model_args)
        return self._params[key]

    def stage_choices(self, stage: Any, sample: Mapping) -> str:
        """``'dec_2_0=1,3 dec_2_1=0; skipped: dec_2_2'``: the choices of ``stage``'s blocks in ``sample``."""
        from nni_bixnas.space.gene import block_label

        gene = self.gene(sample)
        if gene is None or not isinstance(stage, int):
            return "–"
        labels = [block_label(stage, level) for level in range(gene.levels)]
        live = gene.live_blocks()
        text = " ".join(f"{label}={','.join(map(str, gene.choices[label]))}" for label in labels if label in live)
        dead = [label for label in labels if label not in live]
        return (text + (f"; skipped: {', '.join(dead)}" if dead else "")).strip("; ") or "–"


def _count_params(gene, model_args: Mapping[str, Any]) -> Optional[int]:
    from nni_bixnas.models import create_model
    from nni_bixnas.profile import count_params

    try:
        return count_params(create_model("bixnet", gene=gene, **model_args))
    except (TypeError, ValueError):
        return None
