"""Fixed models, registered by name: ``create_model(name, **kw)``, ``list_models()``."""

from __future__ import annotations

from typing import Optional, Tuple, Union

from ..space.bionet_pp import BiONetPlusPlus
from ..space.gene import Gene, published_gene
from .authors import load_authors_checkpoint
from .autodeeplab import AutoDeepLab
from .bionet import BiONet
from .nasunet import NasUnet
from .r2unet import R2UNet
from .registry import create_model, list_models, model_entrypoint, paper_figures, register_model
from .unet import UNet

__all__ = [
    "create_model", "list_models", "model_entrypoint", "register_model", "paper_figures", "describe_model",
    "BiONet", "UNet", "BiONetPlusPlus", "load_authors_checkpoint",
]


def describe_model(model) -> Optional[Tuple[str, dict]]:
    """``(name, kwargs)`` such that ``create_model(name, **kwargs)`` rebuilds ``model``, if known.

    A fixed BiO-Net++ (a searched architecture, however NNI built it) is described as ``bixnet`` with its
    gene text, so checkpoints of retrained search results are self-describing.
    """
    if isinstance(model, BiONetPlusPlus) and model.is_fixed:
        kwargs = {k: v for k, v in model.args.items() if k not in ("gene", "candidates", "max_k")}
        kwargs["gene"] = model.gene.to_text()
        return "bixnet", kwargs
    return None


def _gene(gene: Optional[Union[Gene, str]], iterations: Optional[int], levels: Optional[int]) -> Optional[Gene]:
    if gene is None or isinstance(gene, Gene):
        return gene
    return Gene.parse(gene, iterations, levels)


@register_model(paper={"params": 0.43e6, "macs": 34.36e9})
def bionet_pp(in_channels: int = 3, num_classes: int = 1, iterations: int = 3, levels: int = 4,
              **kwargs) -> BiONetPlusPlus:
    """BiO-Net++ SuperNet as a fixed, dense network: every searching block fuses all ``N`` streams."""
    return BiONetPlusPlus(in_channels, num_classes, iterations=iterations, levels=levels,
                          gene=Gene.dense(iterations, levels), **kwargs)


@register_model(paper={"params": 0.38e6, "macs": 28.00e9})
def bixnet(in_channels: int = 3, num_classes: int = 1, gene: Optional[Union[Gene, str]] = None,
           **kwargs) -> BiONetPlusPlus:
    """BiX-Net: BiO-Net++ with the authors' published searched gene, or any ``gene`` (text or :class:`Gene`).

    ``legacy_shared=True`` wires the convolutions as the authors' pre-2022 code did (their released
    checkpoints; :func:`load_authors_checkpoint` loads those)."""
    iterations, levels = kwargs.pop("iterations", None), kwargs.pop("levels", None)
    # a gene text without iterations/levels is read at the shape its lines have
    gene = _gene(gene, iterations, levels) if gene is not None else published_gene("bixnet")
    return BiONetPlusPlus(in_channels, num_classes, iterations=gene.iterations, levels=gene.levels, gene=gene, **kwargs)


@register_model(paper={"params": 14.99e6, "macs": 115.67e9})
def bionet(in_channels: int = 3, num_classes: int = 1, **kwargs) -> BiONet:
    """BiO-Net (MICCAI 2020), T=3 iterations, concatenating skips."""
    return BiONet(in_channels, num_classes, **kwargs)


@register_model(paper={"params": 8.64e6, "macs": 65.83e9})
def unet(in_channels: int = 3, num_classes: int = 1, **kwargs) -> UNet:
    """U-Net, base width 32, 4 levels (the paper's 8.64M-parameter baseline)."""
    return UNet(in_channels, num_classes, **kwargs)


@register_model(paper={"params": 9.78e6, "macs": 197.16e9})
def r2unet(in_channels: int = 3, num_classes: int = 1, **kwargs) -> R2UNet:
    """R2U-Net (Alom et al., 2018), base width 32, t=3 recurrent steps, 4 levels (Table 1: 9.78M, 197.16G)."""
    return R2UNet(in_channels, num_classes, **kwargs)


@register_model(paper={"params": 2.42e6, "macs": 67.31e9})
def nasunet(in_channels: int = 3, num_classes: int = 1, **kwargs) -> NasUnet:
    """NAS-Unet (Weng et al., 2019), the authors' searched genotype, width 72, depth 5 (Table 1: 2.42M, 67.31G)."""
    return NasUnet(in_channels, num_classes, **kwargs)


@register_model(paper={"params": 27.13e6, "macs": 60.33e9})
def autodeeplab(in_channels: int = 3, num_classes: int = 1, **kwargs) -> AutoDeepLab:
    """Auto-DeepLab (Liu et al., 2019), searched cell and path, DeepLabv3+ head, F=36 (Table 1: 27.13M, 60.33G)."""
    return AutoDeepLab(in_channels, num_classes, **kwargs)
