"""A second search space built on the project's skip mutables: a tiny UNet++-style nested-skip network.

``NestedSkipNet`` shows that the BiX-NAS strategies are not tied to BiO-Net++. Its nodes ``X[i, j]``
(level ``i``, column ``j``) follow UNet++: column 0 is the encoder (``X[i, 0]`` is the max-pooled
``X[i-1, 0]`` through a Conv-BN-ReLU pair), and every nested node ``X[i, j]`` (``j >= 1``) fuses a
non-empty subset of its ``N = j + 1`` incoming streams with a :class:`~nni_bixnas.space.SkipChoice`
labelled ``x_{i}_{j}``:

* index 0: the node's **sequential input**, the up-sampled ``X[i+1, j-1]`` (as in the gene convention),
* index ``m`` (1..j): the nested skip ``X[i, m-1]`` of the same level.

Choices of column ``j`` have ``stage = j`` and ``level = i``. The network's output is a 1x1
convolution of ``X[0, depth]``; nodes the chosen skips never reach are not computed.

It implements the Phase 2 head/tail protocol (:class:`~nni_bixnas.space.Phase2Supernet`; ``set_active`` comes
from :class:`~nni_bixnas.space.SkipSpaceMixin`), ``freeze`` and a keyword-only constructor, so both phases
run on it unchanged; see ``examples/search_second_space.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.space import model_context

from nni_bixnas.space import SkipChoice, SkipSpaceMixin

__all__ = ["NestedSkipNet", "NestedFeatures"]

Node = Tuple[int, int]


def conv_pair(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


@dataclasses.dataclass(frozen=True)
class NestedFeatures:
    """Output of :meth:`NestedSkipNet.forward_head`: every node of the columns before ``stage``.

    Tensors are held in tuples (not a dict), so the Phase 2 helpers that detach head features
    (:func:`nni_bixnas.strategy.supernet.fair_step.detach_features`) see all of them.

    Attributes
    ----------
    stage
        The first column still to run (0 = the encoder).
    nodes
        ``(level, column)`` of every node of columns ``< stage``.
    tensors
        Their outputs, in the order of ``nodes``.
    image
        The network input (the encoder's input when ``stage == 0``).
    """

    stage: int
    nodes: Tuple[Node, ...]
    tensors: Tuple[torch.Tensor, ...]
    image: torch.Tensor

    def as_dict(self) -> Dict[Node, torch.Tensor]:
        """A new ``{node: tensor}`` dict (changing it leaves the features untouched)."""
        return dict(zip(self.nodes, self.tensors))


class NestedSkipNet(SkipSpaceMixin, ModelSpace):
    """UNet++-style nested-skip segmentation space whose decoder nodes choose their incoming skips.

    Parameters
    ----------
    in_channels
        Image channels.
    num_classes
        Output channels (1 = binary, logits).
    width
        Channels of every node.
    depth
        Encoder levels below full resolution; columns ``1..depth`` are searched, i.e.
        ``depth * (depth + 1) / 2`` choices. Inputs must be divisible by ``2 ** depth``.
    max_k
        Largest subset a node may fuse (default ``N - 2``, at least 1, as in the paper).
    candidates
        ``{label: indices}`` narrowing some choices (e.g. Phase 1's output); labels are unchanged.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 1,
        width: int = 8,
        depth: int = 3,
        max_k: Optional[int] = None,
        candidates: Optional[Mapping[str, Sequence[int]]] = None,
    ) -> None:
        super().__init__()
        sizes = [("in_channels", in_channels), ("num_classes", num_classes), ("width", width), ("depth", depth)]
        for name, value in sizes:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        labels = [self.label_of(i, j) for j in range(1, depth + 1) for i in range(depth + 1 - j)]
        unknown = sorted(set(candidates or {}) - set(labels))
        if unknown:
            raise ValueError(
                f"candidates name unknown choice(s) {', '.join(unknown)}; this space has {', '.join(labels)}"
            )
        self.in_channels, self.num_classes, self.width, self.depth = in_channels, num_classes, width, depth
        self.encoders = nn.ModuleList([conv_pair(in_channels if i == 0 else width, width) for i in range(depth + 1)])
        self.fusions = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        for label in labels:
            i, j = self.node_of(label)
            self.fusions[label] = SkipChoice(
                j + 1, max_k, candidates=None if candidates is None else candidates.get(label),
                stage=j, level=i, label=label,
            )
            self.blocks[label] = conv_pair(width, width)
        self.head = nn.Conv2d(width, num_classes, 1)

    # ----- structure ----------------------------------------------------------------------------------
    @staticmethod
    def label_of(level: int, column: int) -> str:
        return f"x_{level}_{column}"

    @staticmethod
    def node_of(label: str) -> Node:
        _, level, column = label.split("_")
        return int(level), int(column)

    @property
    def n_stages(self) -> int:
        """Number of columns, the encoder included (``forward_head`` takes a stage in ``0..n_stages``)."""
        return self.depth + 1

    def fusion_modules(self) -> Dict[str, nn.Module]:
        """Every node's fusion module by label (a :class:`SkipChoice`, or a ``SkipFusion`` once frozen)."""
        return dict(self.fusions.items())

    def freeze(self, sample: Mapping[str, Sequence[int]]) -> "NestedSkipNet":
        """The fixed network of ``sample`` (every choice a plain fusion), with this space's weights."""
        self.validate(dict(sample))
        with model_context(dict(sample)):
            frozen = type(self)(**self.trace_kwargs)
        frozen.load_state_dict(self.state_dict())  # fusions own no parameters: the keys are identical
        return frozen

    def _inputs_of(self, node: Node) -> List[Node]:
        i, j = node
        return [(i + 1, j - 1)] + [(i, m) for m in range(j)]

    def live_nodes(self) -> Set[Node]:
        """Nodes the output depends on under the current choices."""
        choices = self.current_choices()
        live: Set[Node] = set()
        todo = [(0, self.depth)]
        while todo:
            node = todo.pop()
            if node in live:
                continue
            live.add(node)
            i, j = node
            if j == 0:
                todo.extend((k, 0) for k in range(i))
            else:
                inputs = self._inputs_of(node)
                todo.extend(inputs[m] for m in choices[self.label_of(i, j)])
        return live

    # ----- forward ------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        factor = 2 ** self.depth
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected a (batch, {self.in_channels}, height, width) tensor, got shape {tuple(x.shape)}"
            )
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"input size {tuple(x.shape[-2:])} is not divisible by {factor} (2 ** depth with depth={self.depth})"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_tail(NestedFeatures(0, (), (), x))

    def forward_head(self, x: torch.Tensor, stage: int) -> NestedFeatures:
        """Run columns ``0 .. stage - 1`` (all their nodes, whatever the later choices need)."""
        self.check_input(x)
        if not 0 <= stage <= self.n_stages:
            raise ValueError(f"stage must be in 0..{self.n_stages}, got {stage}")
        nodes: Dict[Node, torch.Tensor] = {}
        for column in range(stage):
            for level in range(self.depth + 1 - column):
                nodes[(level, column)] = self._node(nodes, (level, column), x)
        return NestedFeatures(stage, tuple(nodes), tuple(nodes.values()), x)

    def forward_tail(self, features: NestedFeatures) -> torch.Tensor:
        """Run columns ``features.stage ..`` (live nodes only) and the head; ``features`` is not modified."""
        nodes = features.as_dict()
        live = self.live_nodes()
        for column in range(features.stage, self.n_stages):
            for level in range(self.depth + 1 - column):
                if (level, column) in live:
                    nodes[(level, column)] = self._node(nodes, (level, column), features.image)
        return self.head(nodes[(0, self.depth)])

    def _node(self, nodes: Mapping[Node, torch.Tensor], node: Node, image: torch.Tensor) -> torch.Tensor:
        i, j = node
        if j == 0:
            return self.encoders[i](image if i == 0 else F.max_pool2d(nodes[(i - 1, 0)], 2))
        label = self.label_of(i, j)
        fusion = self.fusions[label]
        needed = set(fusion.chosen)
        # Streams the fusion does not read may be absent (not live); any tensor fills their slot.
        inputs = [nodes[n] if m in needed else nodes[(i, 0)] for m, n in enumerate(self._inputs_of(node))]
        return self.blocks[label](fusion(inputs, size=nodes[(i, 0)].shape[-2:]))
