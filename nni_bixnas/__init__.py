"""nni-bixnas: BiX-NAS (MICCAI 2021) for Microsoft NNI 3.0.

Flow: ``space`` (BiO-Net++ and its skip mutables) -> ``strategy`` (Phase 1 selection matrix, Phase 2
progressive evolution) -> ``training`` (the one training loop, the NNI evaluator) -> ``experiment``
(``nnictl`` bridge). Fixed models come from :func:`create_model`.
"""

import warnings as _warnings

# NNI 3.0 wraps every torch.nn class at import and warns about the few newer ones it does not know.
_warnings.filterwarnings("ignore", message=r".*is found to be not a nn\.Module.*", category=RuntimeWarning)
_warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated.*", category=UserWarning)

from .models import create_model, list_models  # noqa: E402
from .space import BiONetPlusPlus, Gene  # noqa: E402

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "BiONetPlusPlus", "Gene", "__version__"]
