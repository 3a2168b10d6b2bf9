"""BiX-NAS search strategies, as NNI 3.0 ``Strategy`` subclasses usable on any space of skip choices.

- :class:`SelectionMatrix` (Phase 1): a differentiable search with a learnable N x (N-2) selection
  matrix per skip choice; narrows every choice to candidates.
- :class:`ProgressiveEvolution` (Phase 2): stage by stage from the last, samples skip sets, trains them
  on one shared SuperNet with skip fairness, keeps the Pareto front of IoU vs MACs (or measured latency).
- :class:`BiXNAS`: Phase 1 -> Phase 2 -> retraining of the winner.

The rest of the package, one idea a module: ``supermodule`` (the Phase 1 supernet), ``fair_step`` and
``phase2_task`` (training a Phase 2 stage), ``skip_sampler`` (drawing a stage's population), ``pareto``
(the selection), ``records`` (what Phase 2 keeps), ``units`` (the job bodies run as trials), ``runner``
(submitting them), ``spaces`` and ``settings`` (what strategies read from the model space and evaluator).
"""

from .bixnas import BiXNAS
from .fair_step import FAIR_STEPS, StepResult, evaluate_members, fair_step
from .pareto import pareto_front, select_parents
from .phase2_task import Phase2Task
from .progressive_evolution import ProgressiveEvolution
from .records import Member, StageRecord
from .runner import UnitRunner
from .selection_matrix import SelectionMatrix
from .supermodule import SelectionMatrixFusion
from .units import phase2_stage_unit, retrain_unit, selection_matrix_unit

__all__ = [
    "BiXNAS", "ProgressiveEvolution", "SelectionMatrix", "SelectionMatrixFusion", "UnitRunner",
    "FAIR_STEPS", "StepResult", "evaluate_members", "fair_step", "Phase2Task", "phase2_stage_unit",
    "selection_matrix_unit", "retrain_unit", "pareto_front", "select_parents", "Member", "StageRecord",
]
