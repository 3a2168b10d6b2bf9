"""BiX-NAS search strategies, as NNI 3.0 ``Strategy`` subclasses usable on any space of skip choices.

- :class:`SelectionMatrix` (Phase 1): a differentiable search with a learnable N x (N-2) selection
  matrix per skip choice; narrows every choice to candidates.
- :class:`ProgressiveEvolution` (Phase 2): stage by stage from the last, samples skip sets, trains them
  on one shared SuperNet with skip fairness, keeps the Pareto front of IoU vs MACs.
- :class:`BiXNAS`: Phase 1 -> Phase 2 -> retraining of the winner.
"""

from .bixnas import BiXNAS
from .pareto import pareto_front, select_parents
from .progressive_evolution import ProgressiveEvolution
from .selection_matrix import SelectionMatrix, SelectionMatrixFusion
from .units import UnitRunner

__all__ = ["BiXNAS", "ProgressiveEvolution", "SelectionMatrix", "SelectionMatrixFusion", "UnitRunner", "pareto_front", "select_parents"]
