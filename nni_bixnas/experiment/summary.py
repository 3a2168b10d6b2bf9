"""``summary.md``: what an experiment found, every row labelled by the unit that produced it.

Sections: the headline result (retrained IoU mean ± std, the found net's size against the SuperNet), the
trials (``Phase 1``, ``stage k``, ``retrain seed s``), every Phase 2 stage's distinct members with IoU, MACs
and params (and latency, for a stage searched with ``objective='latency'``; front and kept parents marked),
the retraining runs, the final gene with the model arguments it was searched with, the complexity table and
the files written.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .stage_plot import cost_axis
from .stages import StageView, mean_std, stage_title

__all__ = ["Report", "summary_markdown"]

_DASH = "–"


@dataclasses.dataclass
class Report:
    """Everything ``summary.md`` shows (see :func:`nni_bixnas.experiment.export.export_experiment`)."""

    experiment_id: str
    directory: Any
    trials: Sequence[Any]
    labels: Mapping[str, str]
    stages: Sequence[StageView]
    runs: Sequence[Mapping[str, Any]]
    gene_text: Optional[str]
    source: str
    model_header: Optional[str] = None
    complexity: Optional[Mapping[str, int]] = None
    plain_front: Sequence[Any] = ()
    n_candidates: int = 0
    files: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    stage_choices: Any = None  #: ``stage_choices(stage, sample)`` -> the text of the choices column


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _fmt(value: Any, scale: float = 1.0, digits: int = 4) -> str:
    value = _number(value)
    return _DASH if value is None else f"{value / scale:.{digits}f}"


def _count(value: Any) -> str:
    value = _number(value)
    return _DASH if value is None else f"{int(value):,}"


def _change(value: float, reference: float) -> str:
    return f"{100 * (value / reference - 1):+.1f}%" if reference else _DASH


def summary_markdown(report: Report) -> str:
    """The ``summary.md`` text of ``report``."""
    lines = [f"# Experiment {report.experiment_id}", "", f"Folder: `{report.directory}`", ""]
    counts: Dict[str, int] = {}
    for trial in report.trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    by_status = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
    lines += [f"Trials: {len(report.trials)} ({by_status})", ""]
    for section in (_result, _trials, _stages, _plain_front, _retraining, _gene, _complexity, _files):
        lines += section(report)
    return "\n".join(lines).rstrip() + "\n"


def retrained_stats(runs: Sequence[Mapping[str, Any]], key: str = "default") -> Optional[Dict[str, float]]:
    """Mean ± std of ``key`` over the retraining runs that report it."""
    return mean_std([v for v in (_number(r.get(key)) for r in runs) if v is not None])


def _result(report: Report) -> List[str]:
    lines = ["## Result", ""]
    if report.gene_text:
        lines.append(f"- Found net: `gene.txt` (from {report.source})"
                     + (f"; `{report.model_header.lstrip('# ')}`" if report.model_header else ""))
    else:
        lines.append("- No architecture found.")
    iou = retrained_stats(report.runs)
    if iou is not None:
        seeds = ", ".join(str(r.get("seed", "?")) for r in report.runs if _number(r.get("default")) is not None)
        lines.append(f"- Retrained IoU (best validation epoch): **{iou['mean']:.4f} ± {iou['std']:.4f}** "
                     f"(mean ± sample std over {iou['n']} seed{'s' if iou['n'] != 1 else ''}: {seeds})")
    cx = report.complexity
    if cx is not None:
        lines.append(f"- Size at 1 x C x 512 x 512: {cx['params']:,} params "
                     f"({_change(cx['params'], cx['supernet_params'])} vs the SuperNet's {cx['supernet_params']:,}), "
                     f"{cx['macs'] / 1e9:.3f} GMACs ({_change(cx['macs'], cx['supernet_macs'])} vs "
                     f"{cx['supernet_macs'] / 1e9:.3f})")
    return lines + [""]


def _trials(report: Report) -> List[str]:
    lines = ["## Trials", "",
             "IoU is the best validation IoU the unit reported: Phase 1 and stage IoUs are measured with shared "
             "SuperNet weights (comparable within one unit only), retraining IoUs on the fixed net.", "",
             "| trial | unit | status | IoU | Dice | GMACs | params |", "|---|---|---|---:|---:|---:|---:|"]
    for trial in report.trials:
        final = trial.final if isinstance(trial.final, dict) else {"default": trial.final}
        lines.append(f"| {trial.trial_id} | {report.labels.get(trial.trial_id, 'trial')} | {trial.status} "
                     f"| {_fmt(final.get('default'))} | {_fmt(final.get('dice'))} "
                     f"| {_fmt(final.get('macs'), 1e9, 3)} | {_count(final.get('params'))} |")
    return lines + [""]


def _stages(report: Report) -> List[str]:
    if not report.stages:
        return []
    lines = ["## Phase 2 stages", "",
             "Each stage trains its members on one shared SuperNet: compare IoUs within a stage, not across "
             "stages. GMACs as the stage counted them; params of the fixed net; latency as the search timed it. "
             "Front: on the stage's Pareto front of (IoU, MACs), or of (IoU, latency) where the members were timed; "
             "kept: a parent of the next stage (#1 is the best). Members with the same choices "
             "here differ in the blocks of the stages searched before (they come from different parents).", ""]
    for view in report.stages:
        lines += _stage(view, report.stage_choices)
    return lines


def _stage(view: StageView, stage_choices) -> List[str]:
    title = stage_title(view.stage, len(view.members))
    where = f", trial {view.trial}" if view.trial else ""
    kept = view.kept or []
    kept_text = f"{len(kept)} kept" if view.kept is not None else "kept parents not recorded (no result.json)"
    timed = cost_axis(view.members) == "latency_ms"  # the front is that of (IoU, latency)
    front = f"{len(view.front)} on the front" + (" (IoU vs latency)" if timed else "")
    lines = [f"### {title[0].upper()}{title[1:]} (distinct){where}; {front}, {kept_text}", "",
             f"| member | IoU | GMACs | {'latency (ms) | ' if timed else ''}params | front | kept "
             "| choices of the stage's blocks |",
             f"|---:|---:|---:|{'---:|' if timed else ''}---:|:---:|:---:|---|"]
    order = sorted(range(len(view.members)), key=lambda i: -(view.members[i].iou or 0.0))
    for i in order:
        member = view.members[i]
        rank = f"#{kept.index(i) + 1}" if i in kept else ""
        choices = stage_choices(view.stage, member.sample) if stage_choices else _DASH
        latency = f"{_fmt(member.latency_ms, digits=2)} | " if timed else ""
        lines.append(f"| {i} | {_fmt(member.iou)} | {_fmt(member.macs, 1e9, 3)} | {latency}{_count(member.params)} "
                     f"| {'yes' if i in view.front else ''} | {rank} | {choices} |")
    return lines + [""]


def _plain_front(report: Report) -> List[str]:
    if not report.plain_front:
        return []
    lines = [f"## Pareto front of the other trials (IoU vs MACs, {report.n_candidates} candidates)", "",
             "| unit | trial | IoU | GMACs |", "|---|---|---:|---:|"]
    lines += [f"| {c.unit or 'trial'} | {c.trial} | {_fmt(c.iou)} | {_fmt(c.macs, 1e9, 3)} |"
              for c in report.plain_front]
    return lines + [""]


def _retraining(report: Report) -> List[str]:
    if not report.runs:
        return []
    lines = ["## Retraining of the found net", "",
             "| run | trial | IoU | Dice | GMACs | params | best epoch |", "|---|---|---:|---:|---:|---:|---:|"]
    for run in report.runs:
        lines.append(f"| retrain seed {run.get('seed', '?')} | {run.get('trial') or _DASH} "
                     f"| {_fmt(run.get('default'))} "
                     f"| {_fmt(run.get('dice'))} | {_fmt(run.get('macs'), 1e9, 3)} | {_count(run.get('params'))} "
                     f"| {run.get('best_epoch', _DASH)} |")
    iou, dice = retrained_stats(report.runs), retrained_stats(report.runs, "dice")
    if iou is not None:
        dice_text = f"{dice['mean']:.4f} ± {dice['std']:.4f}" if dice else _DASH
        seeds = f"{iou['n']} seed{'s' if iou['n'] != 1 else ''}"
        lines.append(f"| **mean ± std** ({seeds}) | | **{iou['mean']:.4f} ± {iou['std']:.4f}** | {dice_text} | | | |")
    return lines + [""]


def _gene(report: Report) -> List[str]:
    lines = [f"## Final gene ({report.source})", ""]
    if not report.gene_text:
        return lines + ["No architecture found.", ""]
    body = ([report.model_header] if report.model_header else []) + [report.gene_text.rstrip()]
    return lines + ["```"] + body + ["```", ""]


def _complexity(report: Report) -> List[str]:
    cx = report.complexity
    if cx is None:
        return []
    return ["## Complexity", "", "At 1 x C x 512 x 512 (the paper's convention):", "",
            "| network | params | GMACs |", "|---|---:|---:|",
            f"| final gene | {cx['params']:,} | {cx['macs'] / 1e9:.3f} |",
            f"| BiO-Net++ SuperNet (dense) | {cx['supernet_params']:,} | {cx['supernet_macs'] / 1e9:.3f} |",
            f"| change vs the SuperNet | {_change(cx['params'], cx['supernet_params'])} "
            f"| {_change(cx['macs'], cx['supernet_macs'])} |",
            "", f"MACs of the final gene: {_change(cx['macs'], cx['supernet_macs'])} vs the SuperNet.", ""]


_FILES = {
    "gene": "the found gene (authors' text format; the model arguments, when known, on a `# model:` first line)",
    "sample": "the gene as an NNI sample, with the model arguments to rebuild it",
    "plot": "IoU vs MACs (or latency, for a stage searched on it), one panel per stage",
    "architecture": "the wiring of the found net",
    "architecture_svg": "the same, as SVG",
    "checkpoint": "the best retrained checkpoint (load with nni_bixnas)",
    "run": "the checkpoint's run record (data, split, held-out images: `bixnas evaluate --split val` reads it)",
    "program": "the retrained net as a torch.export program (loads with torch alone)",
    "program_info": "the program's input and output contract",
}


def _files(report: Report) -> List[str]:
    if not report.files:
        return []
    lines = ["## Files", ""]
    lines += [f"- `{path.name}`: {_FILES.get(kind, kind)}" for kind, path in report.files.items()]
    return lines + ["- `summary.md`: this report", ""]
