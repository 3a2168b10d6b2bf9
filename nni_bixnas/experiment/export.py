"""Read a finished (or stopped) experiment folder and export its results.

Sources, inside ``<experiment dir>``:

* ``db/nni.sqlite``: every trial's parameters (the frozen model's ``sample``), status and metrics;
* ``strategy/result.json`` (or in the ``out_dir`` the config gives the strategy): the final summary
  :class:`~nni_bixnas.strategy.BiXNAS` writes;
* ``checkpoint/strategy_state.json``: the strategy's last ``state_dict()`` (saved by the bridge).

Only data is read: JSON with :mod:`json` (the strategy state is never restored with ``nni.load``, which
can unpickle objects, see :func:`~nni_bixnas.experiment.state.read_state_data`), and a reported checkpoint
is copied only if it loads weights-only. Nothing in an experiment folder can run code here.

Trial final metrics are dicts. A plain trial reports ``{'default': iou, 'dice', 'params', 'macs', ...}``;
a Phase 2 stage trial adds ``'stage': t`` and ``'population': [{'sample', 'iou', 'macs'}, ...]`` (and
optionally ``'front'``); a BiXNAS summary may carry ``'gene'`` (text) or ``'sample'`` and a
``'checkpoint'`` path. Missing keys are tolerated everywhere.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from nni_bixnas.utils import PathLike, atomic_write

from .launch import decode_metric
from .state import STATE_FILE, read_state_data

#: Where the bridge puts a strategy's ``out_dir`` when the config names none.
STRATEGY_DIR = "strategy"

_logger = logging.getLogger(__name__)

FINISHED = ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")


@dataclass
class Candidate:
    """One evaluated architecture: a trial, or a member of a stage trial's population."""

    sample: Optional[Dict[str, List[int]]]
    iou: Optional[float]
    macs: Optional[float]
    params: Optional[float] = None
    dice: Optional[float] = None
    stage: Optional[Any] = None
    trial: Optional[str] = None


@dataclass
class TrialRecord:
    trial_id: str
    status: str
    parameter_id: Optional[int]
    sample: Optional[Dict[str, List[int]]]
    final: Any = None
    intermediate: List[Any] = field(default_factory=list)


@dataclass
class ExperimentResults:
    experiment_id: str
    directory: Path
    trials: List[TrialRecord]
    strategy_state: Any
    strategy_result: Optional[Dict[str, Any]] = None
    class_args: Dict[str, Any] = field(default_factory=dict)

    def final_dicts(self) -> List[Tuple[TrialRecord, Dict[str, Any]]]:
        return [(t, t.final) for t in self.trials if isinstance(t.final, dict)]


def find_experiment_dir(experiment_id: str, experiment_dir: Optional[PathLike] = None) -> Path:
    """The folder of ``experiment_id``.

    ``experiment_dir`` may be the experiment folder itself or the ``experimentWorkingDirectory`` that
    holds it; without it, NNI's manifest ``~/nni-experiments/.experiment`` is read, then
    ``~/nni-experiments/<id>`` is tried.
    """
    candidates: List[Path] = []
    if experiment_dir is not None:
        base = Path(experiment_dir).expanduser()
        candidates += [base, base / experiment_id]
    else:
        manifest = Path.home() / "nni-experiments" / ".experiment"
        if manifest.is_file():
            try:
                entry = json.loads(manifest.read_text()).get(experiment_id) or {}
            except ValueError:
                entry = {}
            if entry.get("logDir"):
                candidates.append(Path(entry["logDir"]) / experiment_id)
                candidates.append(Path(entry["logDir"]))
        candidates.append(Path.home() / "nni-experiments" / experiment_id)
    for path in candidates:
        if (path / "db" / "nni.sqlite").is_file():
            return path
    raise FileNotFoundError(
        f"no experiment {experiment_id!r}: none of {', '.join(str(p) for p in candidates)} holds db/nni.sqlite "
        "(pass --experiment-dir, the experiment folder or its experimentWorkingDirectory)"
    )


def read_experiment(experiment_id: str, experiment_dir: Optional[PathLike] = None) -> ExperimentResults:
    """Trials, metrics and the saved strategy state (plain JSON data) of an experiment (read-only)."""
    directory = find_experiment_dir(experiment_id, experiment_dir)
    trials: Dict[str, TrialRecord] = {}
    with sqlite3.connect(f"file:{directory / 'db' / 'nni.sqlite'}?mode=ro", uri=True) as db:
        for trial_id, event, data in db.execute(
            "SELECT trialJobId, event, data FROM TrialJobEvent WHERE trialJobId != '' ORDER BY timestamp"
        ):
            record = trials.setdefault(trial_id, TrialRecord(trial_id, event, None, None))
            if event not in ("ADD_CUSTOMIZED", "ADD_HYPERPARAMETER", "ADD_RESUMED"):
                record.status = event
            if data and record.parameter_id is None:
                record.parameter_id, record.sample = _parameters(data)
        for trial_id, kind, data in db.execute("SELECT trialJobId, type, data FROM MetricData ORDER BY timestamp"):
            record = trials.setdefault(trial_id, TrialRecord(trial_id, "UNKNOWN", None, None))
            value = decode_metric(data)
            if kind == "FINAL":
                record.final = value
            else:
                record.intermediate.append(value)
        profile = db.execute("SELECT params FROM ExperimentProfile ORDER BY revision DESC LIMIT 1").fetchone()
    strategy_result = _strategy_result(profile[0] if profile else None, directory)
    state_file = directory / "checkpoint" / STATE_FILE
    try:
        state = read_state_data(state_file)
    except ValueError as err:  # not JSON: still export the trials
        _logger.warning("cannot read %s: %s", state_file, err)
        state = None
    return ExperimentResults(experiment_id, directory, list(trials.values()), state, strategy_result,
                             _class_args(profile[0] if profile else None))


def _class_args(params_json: Optional[str]) -> Dict[str, Any]:
    try:
        return dict(json.loads(params_json or "{}")["tuner"]["classArgs"])
    except (ValueError, KeyError, TypeError):
        return {}


def complexity_vs_supernet(results: ExperimentResults, gene_text: Optional[str]) -> Optional[Dict[str, int]]:
    """Params/MACs (1 x C x 512 x 512) of the final gene and of the dense BiO-Net++ SuperNet it came from.

    ``None`` unless the experiment searched :class:`~nni_bixnas.space.BiONetPlusPlus`.
    """
    if gene_text is None or results.class_args.get("model_space") != "nni_bixnas.space.BiONetPlusPlus":
        return None
    from nni_bixnas.models import create_model
    from nni_bixnas.profile import count_complexity

    kwargs = {k: v for k, v in (results.class_args.get("model_space_kwargs") or {}).items()
              if k not in ("candidates", "max_k", "gene")}
    searched = count_complexity(create_model("bixnet", gene=gene_text, **kwargs))
    dense = count_complexity(create_model("bionet_pp", **kwargs))
    return {"params": searched.params, "macs": searched.macs,
            "supernet_params": dense.params, "supernet_macs": dense.macs}


def _strategy_result(params_json: Optional[str], directory: Optional[Path] = None) -> Optional[Dict[str, Any]]:
    """``<strategy out_dir>/result.json`` (what :class:`~nni_bixnas.strategy.BiXNAS` writes at the end).

    Without an ``out_dir`` in the config, the bridge gave the strategy ``<experiment dir>/strategy``.
    """
    try:
        params = json.loads(params_json or "{}")
        out_dir = (params["tuner"]["classArgs"].get("strategy_kwargs") or {}).get("out_dir")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if out_dir is None and directory is not None:
        out_dir = str(Path(directory) / STRATEGY_DIR)
    if not isinstance(out_dir, str):
        return None
    path = Path(out_dir) / "result.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        _logger.warning("cannot read %s: %s", path, err)
        return None


def _parameters(data: str) -> Tuple[Optional[int], Optional[Dict[str, List[int]]]]:
    try:
        payload = json.loads(data)
    except ValueError:
        return None, None
    if not isinstance(payload, dict):
        return None, None
    parameters = payload.get("parameters")
    sample = parameters.get("sample") if isinstance(parameters, dict) else None
    return payload.get("parameter_id"), sample if isinstance(sample, dict) else None


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def candidates(results: ExperimentResults) -> List[Candidate]:
    """Every evaluated architecture: stage populations, else the trial itself."""
    found: List[Candidate] = []
    for trial, final in results.final_dicts():
        population = final.get("population")
        if isinstance(population, list) and population:
            for member in population:
                if isinstance(member, dict):
                    found.append(Candidate(
                        sample=member.get("sample"), iou=_number(member.get("iou", member.get("default"))),
                        macs=_number(member.get("macs")), params=_number(member.get("params")),
                        dice=_number(member.get("dice")), stage=final.get("stage"), trial=trial.trial_id,
                    ))
        elif "default" in final:
            found.append(Candidate(
                sample=trial.sample, iou=_number(final.get("default")), macs=_number(final.get("macs")),
                params=_number(final.get("params")), dice=_number(final.get("dice")), stage=final.get("stage"),
                trial=trial.trial_id,
            ))
    return found


def pareto_front(points: Sequence[Candidate]) -> List[Candidate]:
    """Candidates no other candidate beats on both higher IoU and lower MACs (the strategies' front, exact
    duplicates once), sorted by MACs."""
    from nni_bixnas.strategy.pareto import pareto_front as front_of

    usable = [c for c in points if c.iou is not None and c.macs is not None]
    front = [usable[i] for i in front_of([[1.0 - c.iou, c.macs] for c in usable])]
    return sorted(front, key=lambda c: (c.macs, -c.iou))


def final_choice(results: ExperimentResults, points: Sequence[Candidate]) -> Tuple[Optional[Dict], Optional[str], str]:
    """``(sample, gene_text, source)`` of the final architecture.

    Preference: a trial final dict with ``gene``/``sample`` and no ``population`` (the BiXNAS summary),
    then the strategy's ``result.json``, then the strategy state (:func:`_state_choice`), then the
    best-IoU candidate.
    """
    for trial, final in reversed(results.final_dicts()):
        if "population" in final:
            continue
        if isinstance(final.get("gene"), str) or isinstance(final.get("sample"), dict):
            sample = final.get("sample")
            if isinstance(sample, str):
                sample = json.loads(sample)
            return sample, final.get("gene") if isinstance(final.get("gene"), str) else None, f"trial {trial.trial_id}"
    summary = results.strategy_result or {}
    genes, samples = summary.get("genes"), summary.get("final_samples")
    if isinstance(genes, list) and genes and isinstance(genes[0], str):
        return (samples[0] if isinstance(samples, list) and samples else None), genes[0], "strategy result.json"
    if isinstance(samples, list) and samples and isinstance(samples[0], dict):
        return samples[0], None, "strategy result.json"
    from_state = _state_choice(results.strategy_state)
    if from_state is not None:
        return from_state
    best = max((c for c in points if c.iou is not None and c.sample), key=lambda c: c.iou, default=None)
    if best is not None:
        where = f"stage {best.stage}" if best.stage is not None else f"trial {best.trial}"
        return best.sample, None, f"best IoU ({where})"
    return None, None, "none"


def _state_choice(state: Any) -> Optional[Tuple[Optional[Dict], Optional[str], str]]:
    """The final architecture a strategy state records, if any.

    ``final_samples`` of ProgressiveEvolution (also under BiXNAS's ``phase2``, set once Phase 2 ended),
    else a ``gene`` text or a ``final_sample``/``best_sample``/``sample`` dict.
    """
    if not isinstance(state, dict):
        return None
    for where, holder in (("final_samples", state), ("phase2 final_samples", state.get("phase2"))):
        samples = holder.get("final_samples") if isinstance(holder, dict) else None
        if isinstance(samples, list) and samples and isinstance(samples[0], dict):
            return samples[0], None, f"strategy state ({where})"
    if isinstance(state.get("gene"), str):
        return None, state["gene"], "strategy state"
    for key in ("final_sample", "best_sample", "sample"):
        if isinstance(state.get(key), dict):
            return state[key], None, f"strategy state ({key})"
    return None


def _gene_text(sample: Optional[Mapping], gene_text: Optional[str]) -> Tuple[Optional[str], Optional[Dict]]:
    from nni_bixnas.space.gene import Gene, parse_label

    if gene_text:
        gene = Gene.parse(gene_text)
        return gene.to_text(), gene.to_sample()
    if not sample:
        return None, None
    stages_levels = [parse_label(label) for label in sample if label.startswith(("enc_", "dec_"))]
    if not stages_levels:
        return None, dict(sample)
    iterations = max(stage for stage, _ in stages_levels) // 2 + 1
    levels = max(level for _, level in stages_levels) + 1
    return Gene.from_sample(sample, iterations, levels).to_text(), dict(sample)


def export_experiment(experiment_id: str, out_dir: Optional[PathLike] = None,
                      experiment_dir: Optional[PathLike] = None) -> Dict[str, Path]:
    """Write ``gene.txt``, ``gene.json``, ``pareto.png``, ``summary.md`` (and ``best.ckpt`` if a retrained
    checkpoint is reported) to ``out_dir`` (default ``<experiment dir>/export``); return the paths."""
    from .plot import pareto_png

    results = read_experiment(experiment_id, experiment_dir)
    out = Path(out_dir) if out_dir is not None else results.directory / "export"
    out.mkdir(parents=True, exist_ok=True)
    points = candidates(results)
    front = pareto_front(points)
    sample, gene_text, source = final_choice(results, points)
    text, sample = _gene_text(sample, gene_text)
    written: Dict[str, Path] = {}
    if text is not None:
        with atomic_write(out / "gene.txt") as handle:
            handle.write(text)
        written["gene"] = out / "gene.txt"
    if sample is not None:
        with atomic_write(out / "gene.json") as handle:
            json.dump({"sample": sample, "source": source}, handle, indent=2, sort_keys=True)
        written["sample"] = out / "gene.json"
    checkpoint = _reported_checkpoint(results)
    if checkpoint is not None:
        target = out / checkpoint.name
        with atomic_write(target, "wb") as handle, open(checkpoint, "rb") as src:
            shutil.copyfileobj(src, handle)
        written["checkpoint"] = target
    with atomic_write(out / "pareto.png", "wb") as handle:
        pareto_png(points, front, handle, title=f"{experiment_id}: IoU vs MACs")
    written["plot"] = out / "pareto.png"
    complexity = complexity_vs_supernet(results, text)
    with atomic_write(out / "summary.md") as handle:
        handle.write(summary_markdown(results, points, front, text, source, complexity))
    written["summary"] = out / "summary.md"
    return written


def _reported_checkpoint(results: ExperimentResults) -> Optional[Path]:
    """The best retrained checkpoint: from the strategy's ``result.json`` ``retrained`` list (highest
    ``default``), else the last trial final dict with a ``checkpoint`` path; only one that loads weights-only
    (see :func:`~nni_bixnas.training.checkpoint.load_checkpoint`)."""
    reported: List[Tuple[str, str]] = []
    retrained = (results.strategy_result or {}).get("retrained")
    if isinstance(retrained, list):
        ranked = sorted((r for r in retrained if isinstance(r, dict) and isinstance(r.get("checkpoint"), str)),
                        key=lambda r: -(_number(r.get("default")) or 0.0))
        reported += [(record["checkpoint"], "the strategy result") for record in ranked]
    for trial, final in reversed(results.final_dicts()):
        if isinstance(final.get("checkpoint"), str):
            reported.append((final["checkpoint"], f"trial {trial.trial_id}"))
    for path, source in reported:
        if _loads_weights_only(Path(path), source):
            return Path(path)
    return None


def _loads_weights_only(path: Path, source: str) -> bool:
    from nni_bixnas.training.checkpoint import load_checkpoint

    if not path.is_file():
        _logger.warning("%s reports checkpoint %s, which does not exist", source, path)
        return False
    try:
        load_checkpoint(path)
    except ValueError as err:
        _logger.warning("%s reports checkpoint %s, which is not exported: %s", source, path, err)
        return False
    return True


def _fmt(value: Optional[float], scale: float = 1.0, digits: int = 4) -> str:
    return "–" if value is None else f"{value / scale:.{digits}f}"


def summary_markdown(results: ExperimentResults, points: Sequence[Candidate], front: Sequence[Candidate],
                     gene_text: Optional[str], source: str, complexity: Optional[Dict[str, int]] = None) -> str:
    """The ``summary.md`` report: trials, Pareto front and the final gene."""
    lines = [f"# Experiment {results.experiment_id}", "", f"Folder: `{results.directory}`", ""]
    counts: Dict[str, int] = {}
    for trial in results.trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    by_status = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
    lines += [f"Trials: {len(results.trials)} ({by_status})", ""]
    lines += ["## Trials", "",
              "| trial | status | stage | IoU | Dice | GMACs | params |", "|---|---|---:|---:|---:|---:|---:|"]
    for trial in results.trials:
        final = trial.final if isinstance(trial.final, dict) else {"default": trial.final}
        lines.append(
            f"| {trial.trial_id} | {trial.status} | {final.get('stage', '–')} | {_fmt(_number(final.get('default')))} "
            f"| {_fmt(_number(final.get('dice')))} | {_fmt(_number(final.get('macs')), 1e9, 3)} "
            f"| {_fmt(_number(final.get('params')), 1, 0)} |"
        )
    lines += ["", f"## Pareto front (IoU vs MACs, {len(points)} candidates)", "",
              "| stage | trial | IoU | GMACs |", "|---:|---|---:|---:|"]
    lines += [f"| {c.stage if c.stage is not None else '–'} | {c.trial} | {_fmt(c.iou)} | {_fmt(c.macs, 1e9, 3)} |"
              for c in front]
    lines += ["", f"## Final gene ({source})", ""]
    lines += ["```", gene_text.rstrip(), "```"] if gene_text else ["No architecture found."]
    if complexity is not None:
        lines += ["", "At 1 x C x 512 x 512 (the paper's convention):", "",
                  "| network | params | GMACs |", "|---|---:|---:|",
                  f"| final gene | {complexity['params']:,} | {complexity['macs'] / 1e9:.3f} |",
                  f"| BiO-Net++ SuperNet (dense) | {complexity['supernet_params']:,} "
                  f"| {complexity['supernet_macs'] / 1e9:.3f} |",
                  "", f"MACs of the final gene: {100 * (complexity['macs'] / complexity['supernet_macs'] - 1):+.1f}% "
                  "vs the SuperNet."]
    return "\n".join(lines) + "\n"
