"""Search spaces: the skip mutables, the BiO-Net++ model space and its gene format, and the Phase 2 protocol
and the skip-choice mixin that any space of skip choices can use."""

from .bionet_pp import BiONetPlusPlus, StageFeatures
from .gene import Gene, block_label, block_labels, live_blocks, parse_label, published_gene, searching_labels
from .mutables import SkipChoice, SkipFusion, SkipSubset, fuse
from .protocol import Phase2Supernet
from .skip_space import SkipSpaceMixin

__all__ = [
    "BiONetPlusPlus", "StageFeatures", "Gene", "SkipChoice", "SkipFusion", "SkipSubset", "fuse",
    "Phase2Supernet", "SkipSpaceMixin",
    "block_label", "block_labels", "live_blocks", "parse_label", "published_gene", "searching_labels",
]
