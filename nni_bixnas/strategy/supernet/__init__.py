"""The supernet side of the strategies: what a unit trains and measures, apart from the strategies themselves.

``supermodule`` (the Phase 1 supernet), ``fair_step`` and ``phase2_task`` (training a Phase 2 stage on shared
weights), ``spaces`` (the model space behind NNI's wrapper), ``member_macs`` and ``member_latency`` (a
member's cost, once per architecture), ``_plots`` (Phase 1's heatmaps).
"""

from .fair_step import FAIR_STEPS, StepResult, evaluate_members, fair_step
from .phase2_task import Phase2Task
from .supermodule import SelectionMatrixFusion

__all__ = ["FAIR_STEPS", "StepResult", "evaluate_members", "fair_step", "Phase2Task", "SelectionMatrixFusion"]
