"""nni-bixnas: BiX-NAS (MICCAI 2021) for Microsoft NNI 3.0.

Flow: ``space`` (BiO-Net++ and its skip mutables) -> ``strategy`` (Phase 1 selection matrix, Phase 2
progressive evolution) -> ``training`` (the one training loop, the NNI evaluator) -> ``experiment``
(``nnictl`` bridge). Fixed models come from :func:`create_model`.
"""

import warnings as _warnings

# NNI 3.0 wraps every torch.nn class at import and warns about the few newer ones it does not know.
_warnings.filterwarnings("ignore", message=r".*is found to be not a nn\.Module.*", category=RuntimeWarning)
_warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated.*", category=UserWarning)

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "BiONetPlusPlus", "Gene", "TrainingSettings", "__version__"]

# Imported on first use (PEP 562): the nnictl bridge (nni_bixnas.experiment) runs as NNI's dispatcher,
# which must connect to the NNI manager within 10 seconds of starting, before torch and nni.nas load.
_LAZY = {"create_model": ".models", "list_models": ".models", "BiONetPlusPlus": ".space", "Gene": ".space",
         "TrainingSettings": ".settings"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
