"""BiX-NAS search strategies, as NNI 3.0 ``Strategy`` subclasses usable on any space of skip choices.

- :class:`SelectionMatrix` (Phase 1): a differentiable search with a learnable N x (N-2) selection
  matrix per skip choice; narrows every choice to candidates.
- :class:`ProgressiveEvolution` (Phase 2): stage by stage from the last, samples skip sets, trains them
  on one shared SuperNet with skip fairness, keeps the Pareto front of IoU vs MACs.
- :class:`BiXNAS`: Phase 1 -> Phase 2 -> retraining of the winner.
"""

from .bixnas import BiXNAS
from .fair_step import FAIR_STEPS, StepResult, evaluate_members, fair_step
from .pareto import pareto_front, select_parents
from .progressive_evolution import Phase2Task, ProgressiveEvolution, phase2_stage_unit
from .selection_matrix import SelectionMatrix, SelectionMatrixFusion, selection_matrix_unit
from .units import UnitRunner

__all__ = [
    "BiXNAS", "ProgressiveEvolution", "SelectionMatrix", "SelectionMatrixFusion", "UnitRunner",
    "FAIR_STEPS", "StepResult", "evaluate_members", "fair_step", "Phase2Task", "phase2_stage_unit",
    "selection_matrix_unit", "pareto_front", "select_parents",
]
