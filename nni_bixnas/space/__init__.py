"""The BiO-Net++ search space: custom skip mutables, the model space and the gene format."""

from .bionet_pp import BiONetPlusPlus, StageFeatures
from .gene import Gene, block_label, block_labels, live_blocks, parse_label, published_gene, searching_labels
from .mutables import SkipChoice, SkipFusion, SkipSubset, fuse

__all__ = [
    "BiONetPlusPlus", "StageFeatures", "Gene", "SkipChoice", "SkipFusion", "SkipSubset", "fuse",
    "block_label", "block_labels", "live_blocks", "parse_label", "published_gene", "searching_labels",
]
