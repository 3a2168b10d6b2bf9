"""The wiring of a searched BiO-Net++ as a diagram: where every block sits, which arrows it receives.

The layout follows the paper's Fig. 1, unrolled: one column per extraction stage (the encoder, then the
decoder, of every iteration), between the stem (left) and the segmentation head (right); one row per
resolution, the full-resolution level on top. An encoder of level ``l`` sits on row ``l``; a decoder of
level ``l`` on row ``L - 1 - l`` (decoder level 0 is the deepest, see :mod:`nni_bixnas.space.gene`), so
every iteration draws a U. Each iteration's bridge sits below, between its two columns.

The arrows are the inputs the gene keeps, for every block that reaches the head
(:meth:`~nni_bixnas.space.gene.Gene.live_blocks`): index 0 is the block's sequential input (the stem for
encoder level 0, the bridge for decoder level 0, the level above or below in the same column otherwise);
index ``k >= 1`` is level ``k - 1`` of the preceding stage (the previous column). Blocks the head never
reaches are *dead*: the net skips them (they own no weights), and the diagram greys them.

Coordinates are in grid units (``column``, ``row``); :mod:`nni_bixnas.space.wiring_plot` maps them to pixels.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

from .gene import Gene, block_label, block_labels, parse_label

__all__ = ["Arrow", "Node", "Wiring", "wiring"]

#: Row of the line above the top row along which the stem's arrows travel to later iterations.
STEM_BUS_ROW = -0.55


@dataclasses.dataclass(frozen=True)
class Node:
    """One box of the diagram.

    Attributes
    ----------
    name
        ``'stem'``, ``'head'``, ``'bridge_{it}'`` or a block label (``enc_{it}_{lvl}`` / ``dec_{it}_{lvl}``).
    kind
        ``'stem'``, ``'head'``, ``'bridge'``, ``'enc'`` or ``'dec'``.
    column, row
        Position in grid units (see the module docstring).
    live
        False for a block (or bridge) whose output does not reach the head.
    inputs
        The gene's indices of a block (empty for the other nodes).
    """

    name: str
    kind: str
    column: float
    row: float
    live: bool
    inputs: Tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class Arrow:
    """One kept input: ``source`` feeds ``target`` through the gene's ``index`` (``None`` for the head)."""

    source: str
    target: str
    index: Optional[int]

    @property
    def sequential(self) -> bool:
        """True for a block's sequential input (index 0) and the head's input."""
        return self.index in (0, None)


@dataclasses.dataclass(frozen=True)
class Wiring:
    """Nodes and arrows of a gene's diagram (see :func:`wiring`)."""

    gene: Gene
    nodes: Dict[str, Node]
    arrows: List[Arrow]

    @property
    def n_columns(self) -> int:
        """Columns of the grid: the stem, two per iteration, the head."""
        return 2 * self.gene.iterations + 2

    @property
    def n_rows(self) -> int:
        """Rows of the grid: one per level, and the bridges' row."""
        return self.gene.levels + 1

    def path(self, arrow: Arrow) -> List[Tuple[float, float]]:
        """The polyline of ``arrow`` in grid units, from the source's centre to the target's centre.

        The stem's arrows to the encoders of later iterations go up to :data:`STEM_BUS_ROW`, across and
        down, so they do not run through the blocks of the top row; every other arrow is one straight
        segment (between neighbouring columns, or neighbouring rows of one column).
        """
        source, target = self.nodes[arrow.source], self.nodes[arrow.target]
        start, end = (source.column, source.row), (target.column, target.row)
        if source.kind == "stem" and target.column > 1:
            return [start, (start[0], STEM_BUS_ROW), (end[0], STEM_BUS_ROW), end]
        return [start, end]


def source_of(label: str, index: int, levels: int) -> str:
    """The node that input ``index`` of block ``label`` reads (see :mod:`nni_bixnas.space.gene`)."""
    stage, level = parse_label(label)
    if index > 0:
        return block_label(stage - 1, index - 1)
    if level > 0:
        return block_label(stage, level - 1)
    return f"bridge_{stage // 2}" if stage % 2 else "stem"


def wiring(gene: Gene) -> Wiring:
    """The diagram of ``gene``: a node per block, bridge, stem and head, an arrow per input a live block keeps.

    Arrows come in forward order (block by block as :func:`~nni_bixnas.space.gene.block_labels` lists them,
    each block's inputs by index, the bridges before the decoders that read them), the head's last.
    """
    levels, iterations = gene.levels, gene.iterations
    live = gene.live_blocks()
    arrows: List[Arrow] = []
    for label in block_labels(iterations, levels):
        if label in live:
            arrows += [Arrow(source_of(label, index, levels), label, index) for index in gene.choices[label]]
    used_bridges = {a.source for a in arrows if a.source.startswith("bridge_")}
    for bridge in sorted(used_bridges):  # the bridge of iteration t is fed by its deepest encoder
        feeder = block_label(2 * int(bridge.split("_")[1]), levels - 1)
        arrows.insert(_first_reader(arrows, bridge), Arrow(feeder, bridge, None))
    last = block_label(2 * iterations - 1, levels - 1)
    arrows.append(Arrow(last, "head", None))
    nodes = _nodes(gene, live, used_bridges)
    return Wiring(gene, nodes, arrows)


def _first_reader(arrows: Sequence[Arrow], bridge: str) -> int:
    return next(i for i, a in enumerate(arrows) if a.source == bridge)


def _nodes(gene: Gene, live, used_bridges) -> Dict[str, Node]:
    levels, iterations = gene.levels, gene.iterations
    nodes = {"stem": Node("stem", "stem", 0, 0, True)}
    for label in block_labels(iterations, levels):
        stage, level = parse_label(label)
        kind = "dec" if stage % 2 else "enc"
        row = levels - 1 - level if kind == "dec" else level
        nodes[label] = Node(label, kind, stage + 1, row, label in live, gene.choices[label])
    for it in range(iterations):
        name = f"bridge_{it}"
        nodes[name] = Node(name, "bridge", 2 * it + 1.5, levels, name in used_bridges)
    nodes["head"] = Node("head", "head", 2 * iterations + 1, 0, True)
    return nodes
