"""Model spaces as strategies see them: unwrapped from NNI's executable wrapper, referenced by class and
keyword arguments (so a unit can rebuild the space inside its trial), and narrowed to Phase 1's candidates."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch.nn as nn
from nni.nas.space import ExecutableModelSpace

from nni_bixnas.space.mutables import SkipSubset
from nni_bixnas.space.protocol import Phase2Supernet

__all__ = ["inner_module", "space_module", "space_name", "space_reference", "build_space", "narrow_space",
           "check_stage_skips", "phase2_module", "bionet_genes"]


def inner_module(model_space: ExecutableModelSpace) -> Optional[Any]:
    """The model space inside NNI's executable wrapper (``RawFormatModelSpace`` holds the module,
    ``SimplifiedModelSpace`` a trace copy), or ``None``."""
    inner = getattr(model_space, "model_space", None)  # RawFormatModelSpace
    if inner is None:
        inner = getattr(model_space, "model", None)  # SimplifiedModelSpace
    return inner


def space_module(model_space: ExecutableModelSpace) -> nn.Module:
    """The model space as a module instance: the wrapped one, else rebuilt from its trace."""
    inner = inner_module(model_space)
    return inner if isinstance(inner, nn.Module) else build_space(space_reference(model_space))


def phase2_module(model_space: ExecutableModelSpace) -> nn.Module:
    """:func:`space_module`, checked to implement the Phase 2 head/tail protocol."""
    module = space_module(model_space)
    if not isinstance(module, Phase2Supernet):
        raise ValueError(f"{type(module).__name__} does not implement the Phase 2 head/tail protocol "
                         "(set_active, forward_head, forward_tail; see nni_bixnas.space.Phase2Supernet)")
    return module


def space_name(model_space: ExecutableModelSpace) -> str:
    """The class name of the space (its module's, else the wrapper's): what error messages name."""
    inner = inner_module(model_space)
    return type(inner if isinstance(inner, nn.Module) else model_space).__name__


def space_reference(model_space: ExecutableModelSpace) -> Dict[str, Any]:
    """``{'symbol': class, 'kwargs': dict}`` to rebuild the (un-frozen) model space inside a unit."""
    inner = inner_module(model_space)
    if inner is None or not hasattr(inner, "trace_symbol"):
        raise TypeError(f"cannot find a traceable model space inside {type(model_space).__name__}")
    if inner.trace_args:
        raise TypeError("model spaces used by BiX-NAS strategies must be built with keyword arguments only")
    return {"symbol": inner.trace_symbol, "kwargs": dict(inner.trace_kwargs)}


def build_space(reference: Dict[str, Any], **overrides) -> nn.Module:
    """Instantiate a model space from :func:`space_reference` output, with ``overrides`` applied."""
    return reference["symbol"](**{**reference["kwargs"], **overrides})


def narrow_space(model_space: ExecutableModelSpace, candidates: Mapping[str, Sequence[int]]) -> ExecutableModelSpace:
    """The same executable space (same wrapper type and evaluator) rebuilt with ``candidates`` narrowing
    its skip choices: what Phase 2 searches and freezes after Phase 1.

    A narrowed choice may hold more inputs than the full space's ``max_k`` (Phase 1 'code' exports the
    sequential input and up to ``N - 2`` picks); its ``max_k`` is then ``|candidates|``.
    """
    reference = space_reference(model_space)
    narrowed = build_space(reference, candidates={k: sorted(int(i) for i in v) for k, v in candidates.items()})
    return type(model_space).from_model(narrowed, model_space.evaluator)


def check_stage_skips(mutables: Mapping[str, Any], candidates: Optional[Mapping[str, Sequence[int]]] = None,
                      fits_max_k: bool = False) -> Dict[str, SkipSubset]:
    """The skip choices among a space's ``mutables`` (``model_space.simplify()``), checked for Phase 2:
    each has a stage, ``candidates`` (Phase 1's) name
    known choices and stay within their candidates; with ``fits_max_k`` every choice's whole candidate
    set is a valid sample (blocks of stages not yet searched read all their candidates)."""
    skips = {label: m for label, m in mutables.items() if isinstance(m, SkipSubset)}
    if not skips:
        raise ValueError(
            f"the model space has no skip choices (SkipSubset mutables); ProgressiveEvolution searches skip "
            f"sets, found only {', '.join(f'{k} ({type(v).__name__})' for k, v in mutables.items()) or 'no mutables'}"
        )
    missing = sorted(label for label, m in skips.items() if m.stage is None)
    if missing:
        raise ValueError(f"skip choice(s) {', '.join(missing)} have no stage index (SkipSubset(stage=...)); "
                         "Phase 2 groups choices by stage")
    unknown = sorted(set(candidates or {}) - set(skips))
    if unknown:
        raise ValueError(f"candidates name unknown skip choice(s) {', '.join(unknown)}")
    for label, cands in (candidates or {}).items():
        if not cands:
            raise ValueError(f"the candidate set of {label} would be empty; every block needs at least one input")
        outside = [c for c in cands if c not in skips[label].candidates]
        if outside:
            raise ValueError(f"candidate {outside[0]} of {label} is not among the space's candidates "
                             f"{skips[label].candidates}")
    for label, m in skips.items() if fits_max_k else ():
        if len(m.candidates) > m.max_k:
            raise ValueError(
                f"{label} has {len(m.candidates)} candidates but max_k={m.max_k}: blocks of stages not yet searched "
                "read all their candidates, which is not a valid sample; build the space with max_k=None (a narrowed "
                "choice then takes max_k = |candidates|) or a larger max_k (Phase 1's 'code' variant exports the "
                "sequential input besides its picks)"
            )
    return skips


def bionet_genes(reference: Dict[str, Any], samples: Sequence[Mapping[str, Sequence[int]]]) -> List[Any]:
    """``samples`` of the BiO-Net++ space ``reference`` (:func:`space_reference`) as
    :class:`~nni_bixnas.space.Gene` objects; a clear error for another space (or none)."""
    from nni_bixnas.space import BiONetPlusPlus, Gene

    symbol = None if reference is None else reference["symbol"]
    if not (isinstance(symbol, type) and issubclass(symbol, BiONetPlusPlus)):
        raise TypeError("final_genes() needs a BiONetPlusPlus search space; use final_samples for other spaces")
    kwargs = reference["kwargs"]
    return [Gene.from_sample(s, kwargs.get("iterations", 3), kwargs.get("levels", 4)) for s in samples]


def phase2_space(model_space: ExecutableModelSpace, candidates: Optional[Mapping[str, Sequence[int]]] = None
                 ) -> Tuple[ExecutableModelSpace, Dict[str, SkipSubset], List[int]]:
    """What Phase 2 searches: ``model_space`` narrowed to ``candidates`` (checked, see
    :func:`check_stage_skips`), its skip choices and their stages, last first."""
    check_stage_skips(model_space.simplify(), candidates)
    if candidates is not None:
        # search (and freeze) the narrowed space: a narrowed set may exceed the full space's max_k
        model_space = narrow_space(model_space, candidates)
    skips = check_stage_skips(model_space.simplify(), fits_max_k=True)
    return model_space, skips, sorted({int(m.stage) for m in skips.values()}, reverse=True)
