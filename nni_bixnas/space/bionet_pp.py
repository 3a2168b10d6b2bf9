"""BiO-Net++: the recurrent, bi-directional, multi-scale U-Net that BiX-NAS searches.

Faithful to the authors' code (``tiangexiang/BiX-NAS@36490ad``, ``Phase2model.py``; see
``shared/notes/official-code.md`` §1): constant width 48 with a 32-wide stem and head, Conv-BN-ReLU
blocks without conv bias, convolutions shared per level across iterations while every block owns its
BatchNorms, max-pool down, bilinear up, a bridge at the bottom of every iteration, and the stem output
feeding the level-0 encoder of every iteration. ``legacy_shared=True`` wires the convolutions as the
authors' code before ``36490ad`` (Sep 2022) did, the wiring their released checkpoints were trained with.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, FrozenSet, List, Mapping, Optional, Sequence, Set, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.space import current_model

from nni_bixnas._checks import divisible_input

from .gene import Gene, block_label, block_labels, live_blocks, parse_label
from .mutables import SkipChoice, SkipFusion
from .skip_space import SkipSpaceMixin

__all__ = ["BiONetPlusPlus", "StageFeatures"]


def conv_bn_relu(c_in: int, c_out: int, bn_momentum: float) -> List[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out, momentum=bn_momentum),
        nn.ReLU(inplace=True),
    ]


class Block(nn.Module):
    """Fusion of the chosen inputs, then two Conv-BN-ReLU operators whose convolutions are shared.

    The block owns its BatchNorms and its fusion module; the convolutions belong to its level and are
    passed in at call time, so every iteration reuses them.
    """

    def __init__(self, width: int, fusion: nn.Module, bn_momentum: float) -> None:
        super().__init__()
        self.fusion = fusion
        self.bn1 = nn.BatchNorm2d(width, momentum=bn_momentum)
        self.bn2 = nn.BatchNorm2d(width, momentum=bn_momentum)
        self.act = nn.ReLU(inplace=True)

    def forward(self, inputs: Sequence[torch.Tensor], convs: nn.ModuleList,
                size: Optional[Sequence[int]] = None) -> torch.Tensor:
        """``size``: the block's spatial size, needed when ``inputs[0]`` (not read) is ``None``."""
        x = self.fusion(inputs) if size is None else self.fusion(inputs, size)
        x = self.act(self.bn1(convs[0](x)))
        return self.act(self.bn2(convs[1](x)))


@dataclasses.dataclass(frozen=True)
class StageFeatures:
    """Everything the stages from ``stage`` on need: the head's output in a head/tail split.

    Attributes
    ----------
    stage
        The first stage still to run.
    stem
        Stem output (the level-0 encoder input of every iteration).
    previous
        Outputs of the 4 levels of stage ``stage - 1`` (empty for stage 0).
    bridge
        Up-sampled bridge output (the level-0 sequential input of a decoder stage), else ``None``.
    input_size
        Spatial size of the network input (the head's output size).
    """

    stage: int
    stem: torch.Tensor
    previous: Tuple[torch.Tensor, ...]
    bridge: Optional[torch.Tensor]
    input_size: Tuple[int, int]


@dataclasses.dataclass(frozen=True)
class _StagePlan:
    """What one stage computes: the levels whose sequential input is formed (``seq``), those whose block runs
    (``run``), and whether the bridge runs (encoder stages)."""

    seq: FrozenSet[int]
    run: FrozenSet[int]
    bridge: bool


class BiONetPlusPlus(SkipSpaceMixin, ModelSpace):
    """The BiO-Net++ model space; with ``gene`` given, a fixed network (e.g. BiX-Net).

    Every block of iterations >= 1, and every decoder of iteration 0, picks a non-empty subset of its
    ``N = levels + 1`` incoming streams (a :class:`SkipChoice` labelled ``enc_{it}_{lvl}`` /
    ``dec_{it}_{lvl}``); the iteration-0 encoders read their sequential input only.

    Parameters
    ----------
    in_channels
        Image channels (3 for RGB, 1 for grayscale).
    num_classes
        Output channels: 1 (binary, sigmoid) or C (softmax). The network returns logits.
    width
        Channels of every block and of the bridge (48 in the paper).
    stem_width
        Channels of the stem's first convolutions and of the head (32 in the paper).
    levels
        Number of levels ``L`` (4 in the paper). Inputs must be divisible by ``2 ** (L + 1)``.
    iterations
        Number of iterations ``T`` (3 in the paper), i.e. ``2T`` extraction stages.
    max_k
        Largest number of streams a block may fuse in the search space (default ``N - 2``).
    candidates
        ``{label: indices}`` narrowing some choices (Phase 1's output); labels are unchanged.
    gene
        A :class:`~nni_bixnas.space.gene.Gene` (or its text): build that fixed network. Blocks the gene
        never reaches are neither built nor computed. Inside NNI's ``model_context(sample)`` the sample
        is used as the gene.
    bn_momentum
        BatchNorm momentum (PyTorch convention). The authors' 0.99 is a literal port of Keras'
        ``momentum=0.01`` and makes the running statistics those of the last batch; we default to 0.1.
    legacy_shared
        The authors' pre-2022 convolution sharing (``tiangexiang/BiX-NAS@52f19c1``, ``Phase2model.py``): the
        blocks of iteration 0 use their level's convolutions, every block of iterations >= 1 those of the last
        iteration-0 decoder level (a loop variable left over in their code). Their released ``bixnet_monuseg.pt``
        was trained so; :func:`nni_bixnas.models.authors.load_authors_checkpoint` loads it. Default ``False``:
        convolutions shared per level across iterations (the paper's, and their code since ``36490ad``).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        width: int = 48,
        stem_width: int = 32,
        levels: int = 4,
        iterations: int = 3,
        max_k: Optional[int] = None,
        candidates: Optional[Mapping[str, Sequence[int]]] = None,
        gene: Optional[Gene | str] = None,
        bn_momentum: float = 0.1,
        legacy_shared: bool = False,
    ) -> None:
        super().__init__()
        for name, value in [("in_channels", in_channels), ("num_classes", num_classes), ("width", width),
                            ("stem_width", stem_width), ("levels", levels), ("iterations", iterations)]:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(legacy_shared, bool):
            raise ValueError(f"legacy_shared must be True or False, got {legacy_shared!r}")
        self.legacy_shared = legacy_shared
        self.in_channels, self.num_classes = in_channels, num_classes
        self.width, self.stem_width = width, stem_width
        self.levels, self.iterations = levels, iterations
        self.n_stages = 2 * iterations
        self.n_inputs = levels + 1

        if gene is None and current_model() is not None:
            gene = Gene.from_sample(current_model(), iterations, levels)  # NNI re-instantiation of a sample
        if isinstance(gene, str):
            gene = Gene.parse(gene, iterations, levels)
        if gene is not None and (gene.iterations, gene.levels) != (iterations, levels):
            raise ValueError(
                f"gene is for iterations={gene.iterations}, levels={gene.levels}; "
                f"the network has {iterations}, {levels}"
            )
        if candidates is not None:
            unknown = sorted(set(candidates) - set(block_labels(iterations, levels)[levels:]))
            if unknown:
                raise ValueError(f"candidates name unknown searching block(s) {', '.join(unknown)}")
        self.gene = gene
        live = gene.live_blocks() if gene is not None else set(block_labels(iterations, levels))

        self.stem = nn.Sequential(
            *conv_bn_relu(in_channels, stem_width, bn_momentum),
            *conv_bn_relu(stem_width, stem_width, bn_momentum),
            *conv_bn_relu(stem_width, width, bn_momentum),
            nn.MaxPool2d(2),
        )
        self.convs = nn.ModuleDict()
        for kind in ("enc", "dec"):
            for level in range(levels):
                if any(label in live for label in self._conv_users(kind, level)):
                    self.convs[f"{kind}_{level}"] = nn.ModuleList(
                        [nn.Conv2d(width, width, 3, padding=1, bias=False) for _ in range(2)]
                    )
        self.blocks = nn.ModuleDict()
        for label in block_labels(iterations, levels):
            if label not in live:
                continue
            stage, level = parse_label(label)
            if stage == 0:
                fusion: nn.Module = SkipFusion([0])
            elif gene is not None:
                fusion = SkipFusion(gene.choices[label])
            else:
                fusion = SkipChoice(
                    self.n_inputs, max_k, candidates=None if candidates is None else candidates.get(label),
                    stage=stage, level=level, label=label,
                )
            self.blocks[label] = Block(width, fusion, bn_momentum)
        self.bridge = nn.Sequential(*conv_bn_relu(width, width, bn_momentum), *conv_bn_relu(width, width, bn_momentum))
        self.head = nn.Sequential(
            *conv_bn_relu(width, stem_width, bn_momentum),
            *conv_bn_relu(stem_width, stem_width, bn_momentum),
            nn.Conv2d(stem_width, num_classes, 1, bias=False),
        )
        self._fixed_plans: Dict[tuple, List[_StagePlan]] = {}  # a gene's plans never change

    def _labels_at(self, kind: str, level: int) -> List[str]:
        return [f"{kind}_{it}_{level}" for it in range(self.iterations)]

    def _conv_users(self, kind: str, level: int) -> List[str]:
        """The blocks that run the convolutions of ``{kind}_{level}``."""
        if not self.legacy_shared:
            return self._labels_at(kind, level)
        users = [f"{kind}_0_{level}"]
        if kind == "dec" and level == self.levels - 1:
            users += [f"{k}_{it}_{lvl}" for k in ("enc", "dec") for it in range(1, self.iterations)
                      for lvl in range(self.levels)]
        return users

    def level_convs(self, kind: str, iteration: int, level: int) -> nn.ModuleList:
        """The two convolutions block ``{kind}_{iteration}_{level}`` runs (see ``legacy_shared``)."""
        if self.legacy_shared and iteration > 0:
            return self.convs[f"dec_{self.levels - 1}"]
        return self.convs[f"{kind}_{level}"]

    # ----- structure ----------------------------------------------------------------------------------
    @property
    def is_fixed(self) -> bool:
        """True if built from a gene (no mutables)."""
        return self.gene is not None

    def fusion_modules(self) -> Dict[str, Optional[nn.Module]]:
        """Every block's fusion module by label (``None`` for a block a gene never reaches)."""
        return {
            label: self.blocks[label].fusion if label in self.blocks else None
            for label in block_labels(self.iterations, self.levels)
        }

    def fallback_choice(self, label: str) -> List[int]:
        """A block that is not built is reported as reading all its ``N`` inputs."""
        return list(range(self.n_inputs))

    def effective_sample(self, sample: Mapping[str, Sequence[int]]) -> Dict[str, List[int]]:
        """The part of ``sample`` that the network computes: the choices of the blocks that reach the
        output head. Two samples with the same effective sample are the same network (Phase 2 never
        trains such a pair twice)."""
        choices = {label: (0,) for label in block_labels(self.iterations, self.levels)}
        choices.update({label: tuple(int(i) for i in v) for label, v in sample.items() if label in choices})
        live = live_blocks(choices, self.iterations, self.levels)
        return {label: sorted(int(i) for i in v) for label, v in sample.items() if label in live}

    def freeze(self, sample: Mapping[str, Sequence[int]]) -> "BiONetPlusPlus":
        """The fixed network of ``sample``, with this space's weights copied where they exist."""
        self.validate(sample)
        frozen = self._rebuild(gene=Gene.from_sample(sample, self.iterations, self.levels))
        own = self.state_dict()
        frozen.load_state_dict({k: v for k, v in own.items() if k in frozen.state_dict()}, strict=False)
        return frozen

    def _rebuild(self, **overrides) -> "BiONetPlusPlus":
        kwargs = dict(self.args)  # constructor arguments, as saved by NNI's tracing
        kwargs.update(overrides)
        return type(self)(**kwargs)

    # ----- forward ------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for an input this network cannot take."""
        if x.dim() != 4:
            raise ValueError(f"expected a (batch, channels, height, width) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channel(s), got {x.shape[1]} (shape {tuple(x.shape)})")
        divisible_input(x.shape, 2 ** (self.levels + 1), f"2 ** (levels + 1) with levels={self.levels}")

    def size_rule(self):
        """Sides divisible by ``2 ** (levels + 1)`` (``forward`` refuses other sizes), a
        :class:`~nni_bixnas.models.size_rule.SizeRule`."""
        from nni_bixnas.models.size_rule import SizeRule  # here: nni_bixnas.models imports this module

        return SizeRule(2 ** (self.levels + 1), f"2 ** (levels + 1) with levels={self.levels}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_head(x, 0))

    def forward_head(self, x: torch.Tensor, stage: int) -> StageFeatures:
        """Run the stem and stages ``0 .. stage - 1``; the result feeds :meth:`forward_tail`."""
        self.check_input(x)
        if not 0 <= stage <= self.n_stages:
            raise ValueError(f"stage must be in 0..{self.n_stages}, got {stage}")
        features = StageFeatures(0, self.stem(x), (), None, (x.shape[-2], x.shape[-1]))
        for plan in self._plan(0, stage, complete=True):
            features = self._run_plan(features, plan)
        return features

    def forward_tail(self, features: StageFeatures, skipped: Optional[Set[str]] = None) -> torch.Tensor:
        """Run stages ``features.stage .. 2T - 1`` and the head. ``features`` is never modified.

        With ``skipped`` given, those blocks pass their sequential input through and everything else is
        computed; by default only what reaches the output is (the blocks of the current choices).
        """
        if skipped is None:
            for plan in self._plan(features.stage, self.n_stages, complete=False):
                features = self._run_plan(features, plan)
        else:
            while features.stage < self.n_stages:
                features = self._run_stage(features, skipped)
        out = F.interpolate(features.previous[-1], size=features.input_size, mode="bilinear", align_corners=True)
        return self.head(out)

    def forward_tails(self, features: StageFeatures,
                      members: Sequence[Mapping[str, Sequence[int]]]) -> List[torch.Tensor]:
        """Every member's :meth:`forward_tail` logits from one batched forward (Phase 2 ``step='batched'``);
        see :mod:`nni_bixnas.space.batched_tails`."""
        from .batched_tails import forward_tails

        return forward_tails(self, features, members)

    def _skipped(self) -> Set[str]:
        choices = self.current_choices()
        return set(block_labels(self.iterations, self.levels)) - live_blocks(choices, self.iterations, self.levels)

    def _plan(self, start: int, stop: int, complete: bool) -> List[_StagePlan]:
        """Plans of stages ``start .. stop - 1`` that compute only what their result needs.

        The result is every output and the bridge of stage ``stop - 1`` if ``complete`` (a head's features),
        else the output head's input. Blocks not live under the current choices pass their sequential input
        through. While a BatchNorm of the bridge is in training mode the bridge runs in every encoder stage
        even where nothing reads it: each run updates its statistics (shared by the stages), which must not
        depend on the pruning.
        """
        if stop <= start:
            return []
        updates_bridge = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in self.bridge)
        key = (start, stop, complete, updates_bridge)
        if self.is_fixed and key in self._fixed_plans:
            return self._fixed_plans[key]
        choices = self.current_choices()
        live = live_blocks(choices, self.iterations, self.levels) & set(self.blocks)
        last_level = self.levels - 1
        need_out: Dict[int, Set[int]] = {s: set() for s in range(start, stop)}
        need_bridge = {s: False for s in range(start, stop)}
        need_out[stop - 1] = set(range(self.levels)) if complete else {last_level}
        need_bridge[stop - 1] = complete
        if updates_bridge:
            need_bridge.update({s: True for s in range(start, stop)})
        plans = []
        for s in reversed(range(start, stop)):
            is_encoder = s % 2 == 0
            needed = need_out[s] | ({last_level} if need_bridge[s] and is_encoder else set())
            seq, run = set(), set()
            for level in reversed(range(self.levels)):
                if level not in needed:
                    continue
                label = block_label(s, level)
                if label in live:
                    run.add(level)
                for index in choices[label] if label in live else [0]:
                    if index > 0:
                        if s > start:
                            need_out[s - 1].add(index - 1)
                        continue
                    seq.add(level)
                    if level > 0:
                        needed.add(level - 1)
                    elif not is_encoder and s > start:
                        need_bridge[s - 1] = True
            plans.append(_StagePlan(frozenset(seq), frozenset(run), need_bridge[s] and is_encoder))
        plans.reverse()
        if self.is_fixed:
            self._fixed_plans[key] = plans
        return plans

    def _run_stage(self, features: StageFeatures, skipped: Set[str]) -> StageFeatures:
        """The stage computed in full: every block but ``skipped``, every sequential input, the bridge."""
        labels = [block_label(features.stage, level) for level in range(self.levels)]
        run = {level for level, label in enumerate(labels) if label not in skipped and label in self.blocks}
        return self._run_plan(features, _StagePlan(frozenset(range(self.levels)), frozenset(run), True))

    def _run_plan(self, features: StageFeatures, plan: _StagePlan) -> StageFeatures:
        stage = features.stage
        it, is_decoder = divmod(stage, 2)
        kind = "dec" if is_decoder else "enc"
        outputs: List[Optional[torch.Tensor]] = []  # None: not needed
        x = features.bridge if is_decoder else features.stem
        for level in range(self.levels):
            if level > 0:
                x = self._to_next_level(outputs[-1], is_decoder) if level in plan.seq else None
            if level in plan.run:
                size = None if x is not None else self._level_size(features.stem, is_decoder, level)
                block, convs = self.blocks[f"{kind}_{it}_{level}"], self.level_convs(kind, it, level)
                x = block([x, *features.previous], convs, size)
            outputs.append(x)  # a skipped block passes its sequential input through, as in the authors' code
        bridge = None
        if plan.bridge and not is_decoder:
            bridge = self.bridge(F.max_pool2d(outputs[-1], 2))
            bridge = F.interpolate(bridge, size=outputs[-1].shape[-2:], mode="bilinear", align_corners=True)
        return StageFeatures(stage + 1, features.stem, tuple(outputs), bridge, features.input_size)

    def _level_size(self, stem: torch.Tensor, is_decoder: bool, level: int) -> Tuple[int, int]:
        depth = self.levels - 1 - level if is_decoder else level  # decoders run from the deepest level up
        return stem.shape[-2] >> depth, stem.shape[-1] >> depth

    @staticmethod
    def _to_next_level(x: torch.Tensor, is_decoder: bool) -> torch.Tensor:
        if is_decoder:
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return F.max_pool2d(x, 2)
