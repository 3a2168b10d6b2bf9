"""The model arguments a gene was searched with, kept with the gene as a ``# model:`` comment line.

A gene fixes the wiring of a BiO-Net++, not its width: the same gene at ``width=4`` and at the default
``width=48`` are nets of very different sizes. ``bixnas export`` therefore writes, above the gene lines::

    # model: bixnet width=4 stem_width=4 iterations=3 levels=4 in_channels=3 num_classes=1

:meth:`Gene.parse <nni_bixnas.space.gene.Gene.parse>` ignores ``#`` comments, so the file stays a valid gene
file for every reader; :func:`read_model_header` gives the arguments back (``bixnas profile --gene`` uses
them). Values are JSON (``width=4``, ``bn_momentum=0.1``), as ``bixnas train --model-arg key=value``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

__all__ = ["MODEL_ARG_KEYS", "load_gene_file", "model_header", "read_model_header", "with_model_header"]

#: The constructor arguments of BiO-Net++ that fix the shape of the net, in header order.
MODEL_ARG_KEYS = ("width", "stem_width", "iterations", "levels", "in_channels", "num_classes")

#: Arguments of the search space that describe the search, not the found net.
SEARCH_ONLY_KEYS = ("candidates", "max_k", "gene")

_PREFIX = "# model:"


def model_header(model_args: Mapping[str, Any], model: str = "bixnet") -> str:
    """The ``# model: <name> key=value ...`` line (no newline) of ``model_args``.

    Keys of :data:`MODEL_ARG_KEYS` come first in that order, then the others sorted.

    Raises
    ------
    ValueError
        If a key or a value holds white space (the line could not be read back), or a value is not JSON.
    """
    ordered = [k for k in MODEL_ARG_KEYS if k in model_args] + sorted(k for k in model_args if k not in MODEL_ARG_KEYS)
    parts = [_PREFIX, model]
    for key in ordered:
        value = json.dumps(model_args[key], separators=(",", ":"))
        if any(c.isspace() for c in key + value):
            raise ValueError(f"model argument {key}={value} holds white space; it cannot go in a gene header")
        parts.append(f"{key}={value}")
    return " ".join(parts)


def read_model_header(text: str) -> Tuple[Optional[str], Dict[str, Any]]:
    """``(model name, arguments)`` of the first ``# model:`` line of a gene text; ``(None, {})`` without one.

    Raises
    ------
    ValueError
        If the line names no model or an argument is not ``key=value``.
    """
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line.startswith(_PREFIX):
            continue
        words = line[len(_PREFIX):].split()
        if not words or "=" in words[0]:
            raise ValueError(f"gene line {lineno}: {line!r} names no model; expected '# model: bixnet key=value ...'")
        return words[0], _arguments(words[1:], lineno)
    return None, {}


def _arguments(words, lineno: int) -> Dict[str, Any]:
    arguments: Dict[str, Any] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise ValueError(f"gene line {lineno}: model argument {word!r} is not key=value")
        try:
            arguments[key] = json.loads(value)
        except json.JSONDecodeError:
            arguments[key] = value
    return arguments


def with_model_header(gene_text: str, model_args: Optional[Mapping[str, Any]], model: str = "bixnet") -> str:
    """``gene_text`` with the :func:`model_header` line of ``model_args`` in front (unchanged without them)."""
    if not model_args:
        return gene_text
    return model_header(model_args, model) + "\n" + gene_text


def load_gene_file(gene_file: str, overrides: Optional[Mapping[str, Any]] = None) -> Tuple[Any, Dict[str, Any]]:
    """``(gene, model arguments)`` of a gene file: its ``# model:`` header, updated by ``overrides``.

    Raises
    ------
    ValueError
        If the header names a model other than ``bixnet`` or an argument it does not take, or the gene does not
        parse (at the header's ``iterations``/``levels``).
    """
    from nni_bixnas.models.registry import check_model_kwargs
    from nni_bixnas.space.gene import Gene

    gene = Gene.load(gene_file)
    model, header_args = read_model_header(Path(gene_file).read_text())
    if model not in (None, "bixnet"):
        raise ValueError(f"{gene_file}: the header names model {model!r}; a gene file describes a 'bixnet'")
    check_model_kwargs("bixnet", header_args, f" (the '# model:' line of {gene_file})")
    args = {**header_args, **dict(overrides or {})}
    args.pop("gene", None)
    iterations, levels = args.get("iterations"), args.get("levels")
    if (iterations, levels) != (None, None):
        gene = Gene.load(gene_file, iterations, levels)
    return gene, args
