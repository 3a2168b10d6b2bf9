"""BiX-NAS search strategies, as NNI 3.0 ``Strategy`` subclasses usable on any space of skip choices.

- :class:`SelectionMatrix` (Phase 1): a differentiable search with a learnable N x (N-2) selection
  matrix per skip choice; narrows every choice to candidates.
- :class:`ProgressiveEvolution` (Phase 2): stage by stage from the last, samples skip sets, trains them
  on one shared SuperNet with skip fairness, keeps the Pareto front of IoU vs MACs (or measured latency).
- :class:`BiXNAS`: Phase 1 -> Phase 2 -> (optionally) the finalist check -> retraining of the winner.

What only the strategies need, one idea a module: ``skip_sampler`` (drawing a stage's population),
``pareto`` (the selection), ``finalists`` (the finalist check), ``records`` (what Phase 2 keeps), ``units``
(the job bodies run as trials; NNI stores their import path in each trial's parameters), ``runner``
(submitting them) and ``settings`` (what strategies read from the evaluator). The supernet side (what a
unit trains and measures) is the ``supernet`` subpackage.
"""

from .bixnas import BiXNAS
from .pareto import pareto_front, select_parents
from .progressive_evolution import ProgressiveEvolution
from .records import Member, StageRecord
from .runner import UnitRunner
from .selection_matrix import SelectionMatrix
from .supernet import FAIR_STEPS, Phase2Task, SelectionMatrixFusion, StepResult, evaluate_members, fair_step
from .units import phase2_stage_unit, retrain_unit, selection_matrix_unit

__all__ = [
    "BiXNAS", "ProgressiveEvolution", "SelectionMatrix", "SelectionMatrixFusion", "UnitRunner",
    "FAIR_STEPS", "StepResult", "evaluate_members", "fair_step", "Phase2Task", "phase2_stage_unit",
    "selection_matrix_unit", "retrain_unit", "pareto_front", "select_parents", "Member", "StageRecord",
]
