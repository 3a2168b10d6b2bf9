"""The one gene format of nni-bixnas.

A gene fixes, for every block of the recurrent bi-directional U-Net, which of its ``N = levels + 1``
incoming streams it fuses. The text form is the authors' (``tiangexiang/BiX-NAS:bixnet_gene.txt``)::

    enc_1_0_3_1        # encoder, iteration 1, level 0 reads streams 3 and 1
    dec_2_3_0          # decoder, iteration 2, level 3 reads its sequential input only

Index conventions (the authors' Phase 2 convention, the one every part of this package uses):

- index ``0`` is the block's *sequential* input (the stem output for encoder level 0, the max-pooled
  previous encoder for deeper encoders, the up-sampled bridge for decoder level 0, the up-sampled previous
  decoder otherwise);
- index ``k >= 1`` is level ``k - 1`` of the *preceding* extraction stage. Encoders of iteration ``t``
  read the decoders of iteration ``t - 1`` in decoding order (``dec[0]`` is the deepest); decoders read
  the encoders of the same iteration from the shallowest (``enc[0]``) to the deepest.

Block labels (``enc_{it}_{lvl}`` / ``dec_{it}_{lvl}``) are also the labels of the NNI mutables, so an NNI
sample is simply ``{label: sorted list of indices}`` for the searching blocks. Extraction stage ``s`` is
``2 * it`` for encoders and ``2 * it + 1`` for decoders; stage 0 (the iteration-0 encoders) has no skips
and is never searched.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

_LINE = re.compile(r"^(enc|dec)_(\d+)_(\d+)((?:_\d+)*)$")
_HEADER = re.compile(r"^[-+0-9.eE]+_[-+0-9.eE]+$")


def block_label(stage: int, level: int) -> str:
    """Label of the block at extraction ``stage`` and ``level`` (``enc_{it}_{lvl}`` / ``dec_{it}_{lvl}``)."""
    it, is_decoder = divmod(stage, 2)
    return f"{'dec' if is_decoder else 'enc'}_{it}_{level}"


def parse_label(label: str) -> Tuple[int, int]:
    """Inverse of :func:`block_label`: ``(stage, level)``."""
    match = re.fullmatch(r"(enc|dec)_(\d+)_(\d+)", label)
    if match is None:
        raise ValueError(f"{label!r} is not a block label; "
                         "expected 'enc_<iteration>_<level>' or 'dec_<iteration>_<level>'")
    kind, it, level = match.groups()
    return 2 * int(it) + (kind == "dec"), int(level)


def block_labels(iterations: int = 3, levels: int = 4) -> List[str]:
    """Every block label, in forward order (stage by stage, level by level)."""
    return [block_label(s, l) for s in range(2 * iterations) for l in range(levels)]


def searching_labels(iterations: int = 3, levels: int = 4) -> List[str]:
    """Labels of the blocks that can be searched (all but the iteration-0 encoders)."""
    return [block_label(s, l) for s in range(1, 2 * iterations) for l in range(levels)]


@dataclasses.dataclass(frozen=True)
class Gene:
    """Skip choices of every block of a ``levels`` x ``iterations`` BiO-Net++.

    Parameters
    ----------
    choices
        Block label -> sorted tuple of chosen input indices, for every block (iteration-0 encoders are
        always ``(0,)``).
    iterations
        Number of iterations ``T`` (the net has ``2T`` extraction stages).
    levels
        Number of levels ``L`` (each searching block has ``N = L + 1`` incoming streams).
    """

    choices: Mapping[str, Tuple[int, ...]]
    iterations: int = 3
    levels: int = 4

    def __post_init__(self):
        expected = block_labels(self.iterations, self.levels)
        missing = [label for label in expected if label not in self.choices]
        if missing:
            raise ValueError(f"gene is missing block(s) {', '.join(missing)}; "
                             f"every one of {len(expected)} blocks needs a line")
        unknown = sorted(set(self.choices) - set(expected))
        if unknown:
            raise ValueError(
                f"gene has unknown block(s) {', '.join(unknown)}; expected iterations 0..{self.iterations - 1} "
                f"and levels 0..{self.levels - 1}"
            )
        normalised = {}
        for label in expected:
            value = tuple(sorted(set(int(i) for i in self.choices[label])))
            _check_indices(label, value, self.levels)
            normalised[label] = value
        object.__setattr__(self, "choices", normalised)

    @property
    def n_inputs(self) -> int:
        """Number of incoming streams of a searching block, ``N = levels + 1``."""
        return self.levels + 1

    # ----- text ---------------------------------------------------------------------------------------
    @classmethod
    def parse(
        cls, text: str, iterations: Optional[int] = None, levels: Optional[int] = None, source: str = "gene"
    ) -> "Gene":
        """Read the authors' text format.

        A first line ``<iou>_<macs>`` (the authors' header) is ignored, as are blank lines and ``#`` comments.
        Repeated indices in a line count once. Iteration-0 encoder lines are forced to ``[0]`` (as the
        authors' ``decode`` does: those blocks have no skips). ``iterations``/``levels`` default to what the
        lines contain.
        """
        entries: Dict[str, Tuple[int, ...]] = {}
        where: Dict[str, int] = {}
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line or (lineno == 1 and _HEADER.match(line)):
                continue
            match = _LINE.match(line)
            if match is None:
                raise ValueError(
                    f"{source}, line {lineno}: {line!r} is not a gene line; expected "
                    "'enc_<iteration>_<level>_<i>[_<j>...]' or 'dec_<iteration>_<level>_<i>[_<j>...]'"
                )
            kind, it, level, rest = match.groups()
            label = f"{kind}_{int(it)}_{int(level)}"
            indices = tuple(int(v) for v in rest.split("_")[1:])
            if not indices:
                raise ValueError(f"{source}, line {lineno}: block {label} chooses no input; "
                                 "expected at least one index")
            if label in entries:
                raise ValueError(f"{source}, line {lineno}: block {label} appears twice (first on line {where[label]})")
            entries[label] = indices
            where[label] = lineno
        if not entries:
            raise ValueError(f"{source}: no gene lines found")
        stages = [parse_label(label) for label in entries]
        shape = (max(s for s, _ in stages) // 2 + 1, max(l for _, l in stages) + 1)
        if set(entries) == set(block_labels(*shape)):  # a whole gene of another shape, not a stray line
            _check_shape(source, shape, iterations, levels)
        iterations, levels = (shape[0] if iterations is None else iterations), (shape[1] if levels is None else levels)
        for label, indices in entries.items():
            try:
                _check_indices(label, tuple(sorted(set(indices))), levels, allow_stage0_any=True)
            except ValueError as err:
                raise ValueError(f"{source}, line {where[label]}: {err}") from None
            if parse_label(label)[0] == 0:
                entries[label] = (0,)
        return cls(entries, iterations=iterations, levels=levels)

    @classmethod
    def load(cls, path: Union[str, Path], iterations: Optional[int] = None, levels: Optional[int] = None) -> "Gene":
        """Read a gene file (see :meth:`parse`).

        Raises
        ------
        FileNotFoundError
            If ``path`` is not a file.
        ValueError
            If the file holds binary data (NUL bytes, or not UTF-8), or a line is not a gene line.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"gene file {path} does not exist")
        data = path.read_bytes()
        try:
            if b"\0" in data:
                raise UnicodeError("NUL byte")
            text = data.decode("utf-8")
        except UnicodeError:
            raise ValueError(
                f"{path} is not a text gene file (it holds binary data); expected lines like 'enc_1_0_3_1', "
                "as written by `bixnas export` or the authors' bixnet_gene.txt"
            ) from None
        return cls.parse(text, iterations, levels, source=str(path))

    def to_text(self, header: Optional[str] = None) -> str:
        """The authors' text format (indices sorted; optional first line ``header``)."""
        lines = [header] if header else []
        lines += [label + "".join(f"_{i}" for i in self.choices[label])
                  for label in block_labels(self.iterations, self.levels)]
        return "\n".join(lines) + "\n"

    # ----- NNI samples ---------------------------------------------------------------------------------
    @classmethod
    def from_sample(
        cls, sample: Mapping[str, Sequence[int]], iterations: int = 3, levels: int = 4, base: Optional["Gene"] = None
    ) -> "Gene":
        """Build a gene from an NNI sample ``{label: indices}`` of the searching blocks.

        Blocks missing from the sample come from ``base`` (if given); otherwise they are an error.
        Keys that are not block labels of this shape are ignored (a sample may hold other choices).
        """
        choices: Dict[str, Tuple[int, ...]] = {}
        for label in block_labels(iterations, levels):
            stage, _ = parse_label(label)
            if stage == 0:
                choices[label] = (0,)
            elif label in sample:
                value = sample[label]
                if not isinstance(value, (list, tuple)):
                    raise ValueError(f"sample[{label!r}] = {value!r}; expected a list of input indices")
                choices[label] = tuple(value)
            elif base is not None:
                choices[label] = base.choices[label]
            else:
                raise ValueError(f"sample has no value for block {label}; "
                                 "expected one list of indices per searching block")
        return cls(choices, iterations=iterations, levels=levels)

    def to_sample(self) -> Dict[str, List[int]]:
        """NNI sample of the searching blocks: ``{label: sorted list of indices}``."""
        return {label: list(self.choices[label]) for label in searching_labels(self.iterations, self.levels)}

    @classmethod
    def dense(cls, iterations: int = 3, levels: int = 4) -> "Gene":
        """Every searching block reads all ``N`` streams (the BiO-Net++ SuperNet)."""
        every = tuple(range(levels + 1))
        choices = {label: (0,) if parse_label(label)[0] == 0 else every for label in block_labels(iterations, levels)}
        return cls(choices, iterations, levels)

    # ----- structure -----------------------------------------------------------------------------------
    def live_blocks(self) -> Set[str]:
        """Blocks whose output reaches the segmentation head (see :func:`live_blocks`)."""
        return live_blocks(self.choices, self.iterations, self.levels)

    def live_choices(self) -> Dict[str, List[int]]:
        """The choices of the live blocks: what the net computes (genes differing elsewhere are one net)."""
        live = self.live_blocks()
        return {label: list(v) for label, v in self.choices.items() if label in live}


def _check_shape(source: str, shape: Tuple[int, int], iterations: Optional[int], levels: Optional[int]) -> None:
    """The iterations and levels the gene lines have (``shape``) are those asked for, where asked for."""
    for what, found, asked in (("iterations", shape[0], iterations), ("levels", shape[1], levels)):
        if asked is not None and found != asked:
            raise ValueError(
                f"{source} is a gene of {shape[0]} iterations and {shape[1]} levels, but the net is built with "
                f"{what}={asked} (from the arguments or the '# model:' line); expected a gene of {asked} {what}, "
                f"or {what}={found}"
            )


def _check_indices(label: str, indices: Tuple[int, ...], levels: int, allow_stage0_any: bool = False) -> None:
    if not indices:
        raise ValueError(f"block {label} chooses no input; expected a non-empty subset of 0..{levels}")
    bad = [i for i in indices if not 0 <= i <= levels]
    if bad:
        raise ValueError(
            f"block {label}: index {bad[0]} is out of range; expected 0 (sequential input) to {levels} "
            f"(level {levels - 1} of the preceding stage)"
        )
    if parse_label(label)[0] == 0 and indices != (0,) and not allow_stage0_any:
        raise ValueError(f"block {label} is an iteration-0 encoder, which has no skips; expected (0,), got {indices}")


def live_blocks(choices: Mapping[str, Iterable[int]], iterations: int, levels: int) -> Set[str]:
    """Blocks whose output reaches the segmentation head.

    Walks backwards from the last decoder of the last stage (the head's input): index 0 reaches the
    sequential predecessor (level ``l - 1`` of the same stage; for decoder level 0, through the bridge, the
    deepest encoder of the same iteration; for encoder level 0, the stem), index ``k`` reaches level
    ``k - 1`` of the preceding stage. Blocks not reached are skipped: they pass their sequential input
    through and own no weights.

    This is the authors' ``BFS`` (``Phase2tools.py``) with two fixes: it starts from the block the head
    actually reads (the authors mark every last-stage decoder live), and it follows sequential links in
    stage 0 too. On the published BiX-Net gene both give the same result.
    """
    n_stages = 2 * iterations
    live: Set[str] = set()
    todo = [(n_stages - 1, levels - 1)]
    while todo:
        stage, level = todo.pop()
        label = block_label(stage, level)
        if label in live:
            continue
        live.add(label)
        for index in choices[label]:
            if index == 0:
                if level > 0:
                    todo.append((stage, level - 1))
                elif stage % 2 == 1:  # decoder level 0 reads the bridge, fed by the deepest encoder
                    todo.append((stage - 1, levels - 1))
            elif stage > 0:
                todo.append((stage - 1, index - 1))
    return live


def published_gene(name: str = "bixnet") -> Gene:
    """A gene shipped with the package (``'bixnet'``: the authors' published BiX-Net)."""
    try:
        text = resources.files("nni_bixnas.space").joinpath("genes").joinpath(f"{name}.txt").read_text()
    except FileNotFoundError:
        raise ValueError(f"no published gene named {name!r}; available: 'bixnet'") from None
    return Gene.parse(text, source=f"published gene {name!r}")
