"""Running NNI 3.0 NAS strategies under ``nnictl`` (the bridge) and exporting the results."""

from .bridge import ManagerBinding, NasStrategyAdvisor, legacy_search_space

__all__ = ["ManagerBinding", "NasStrategyAdvisor", "legacy_search_space"]
