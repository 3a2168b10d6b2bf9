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
optionally ``'front'``; a member's ``'latency_ms'`` when the search's objective was latency); a BiXNAS
summary may carry ``'gene'`` (text) or ``'sample'`` and a ``'checkpoint'`` path. Missing keys are tolerated
everywhere.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from nni_bixnas._checks import out_folder
from nni_bixnas.space.gene_header import model_header, with_model_header
from nni_bixnas.utils import PathLike, atomic_write

from .found_net import NetCounter, checkpoint_model_args, searched_model_args
from .launch import decode_metric
from .stage_plot import Panel, cost_axis, panels_png
from .stages import StageView, retrained_runs, stage_title, stage_views, unit_label
from .state import STATE_FILE, read_state_data
from .summary import Report, summary_markdown

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
    unit: Optional[str] = None
    latency_ms: Optional[float] = None


@dataclass
class TrialRecord:
    trial_id: str
    status: str
    parameter_id: Optional[int]
    sample: Optional[Dict[str, List[int]]]
    final: Any = None
    intermediate: List[Any] = field(default_factory=list)
    unit: Dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``'Phase 1'``, ``'stage k'``, ``'retrain seed s'`` or ``'trial'`` (see :func:`.stages.unit_label`)."""
        return unit_label(self.unit, self.final)


@dataclass
class ExperimentResults:
    experiment_id: str
    directory: Path
    trials: List[TrialRecord]
    strategy_state: Any
    strategy_result: Optional[Dict[str, Any]] = None
    class_args: Dict[str, Any] = field(default_factory=dict)
    state_problem: Optional[str] = None  # why the strategy state could not be read, if it could not

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
                record.parameter_id, record.sample, record.unit = _parameters(data)
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
        state_problem = None
    except ValueError as err:  # not JSON: still export the trials
        _logger.warning("cannot read %s: %s", state_file, err)
        state, state_problem = None, f"{state_file} is unreadable"
    return ExperimentResults(experiment_id, directory, list(trials.values()), state, strategy_result,
                             _class_args(profile[0] if profile else None), state_problem)


def _class_args(params_json: Optional[str]) -> Dict[str, Any]:
    try:
        return dict(json.loads(params_json or "{}")["tuner"]["classArgs"])
    except (ValueError, KeyError, TypeError):
        return {}


def complexity_vs_supernet(results: ExperimentResults, gene_text: Optional[str],
                           model_args: Optional[Mapping[str, Any]] = None) -> Optional[Dict[str, int]]:
    """Params/MACs (1 x C x 512 x 512) of the final gene and of the dense BiO-Net++ SuperNet it came from.

    Built with ``model_args`` (default: :func:`~.found_net.searched_model_args` of the experiment's
    ``classArgs``); ``None`` when they are unknown (the experiment did not search
    :class:`~nni_bixnas.space.BiONetPlusPlus`).
    """
    model_args = searched_model_args(results.class_args) if model_args is None else model_args
    if gene_text is None or model_args is None:
        return None
    from nni_bixnas.models import create_model
    from nni_bixnas.profile import count_complexity

    searched = count_complexity(create_model("bixnet", gene=gene_text, **model_args))
    dense = count_complexity(create_model("bionet_pp", **model_args))
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
        # it holds the search's final gene: exporting another one in its place would pass for the result
        raise ValueError(
            f"cannot export: {path} is not valid JSON ({err}); it holds the search's final gene, so no other gene "
            "is exported in its place. Restore the file, or move it away to export the best candidate the "
            "trials report instead"
        ) from None


def _parameters(data: str) -> Tuple[Optional[int], Optional[Dict[str, List[int]]], Dict[str, Any]]:
    """``(parameter id, sample, unit)`` of a trial's parameters; ``unit`` has the unit function's name
    (``function``) and its ``stage`` / ``seed`` arguments, where the parameters give them."""
    try:
        payload = json.loads(data)
    except ValueError:
        return None, None, {}
    if not isinstance(payload, dict):
        return None, None, {}
    parameters = payload.get("parameters")
    sample = parameters.get("sample") if isinstance(parameters, dict) else None
    return (payload.get("parameter_id"), sample if isinstance(sample, dict) else None,
            _unit(parameters) if isinstance(parameters, dict) else {})


def _unit(parameters: Mapping[str, Any]) -> Dict[str, Any]:
    evaluator = parameters.get("evaluator")
    kwargs = evaluator.get("__kwargs__") if isinstance(evaluator, dict) else None
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    unit: Dict[str, Any] = {}
    function = kwargs.get("function")
    name = function.get("__nni_type__") if isinstance(function, dict) else function
    if isinstance(name, str):
        unit["function"] = name.rsplit(".", 1)[-1]
    training = kwargs.get("training") if isinstance(kwargs.get("training"), dict) else {}
    for key in ("stage", "seed"):
        value = kwargs.get(key, training.get(key, parameters.get(key)))
        if isinstance(value, int) and not isinstance(value, bool):
            unit[key] = value
    return unit


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
                        unit=trial.label, latency_ms=_number(member.get("latency_ms")),
                    ))
        elif "default" in final:
            found.append(Candidate(
                sample=trial.sample, iou=_number(final.get("default")), macs=_number(final.get("macs")),
                params=_number(final.get("params")), dice=_number(final.get("dice")), stage=final.get("stage"),
                trial=trial.trial_id, unit=trial.label,
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


def _gene_text(sample: Optional[Mapping], gene_text: Optional[str],
               model_args: Optional[Mapping[str, Any]] = None) -> Tuple[Optional[str], Optional[Dict]]:
    from nni_bixnas.space.gene import Gene, parse_label

    if gene_text:
        gene = Gene.parse(gene_text)
        return gene.to_text(), gene.to_sample()
    if not sample:
        return None, None
    stages_levels = [parse_label(label) for label in sample if label.startswith(("enc_", "dec_"))]
    if not stages_levels:
        return None, dict(sample)
    args = model_args or {}
    iterations = args.get("iterations") or max(stage for stage, _ in stages_levels) // 2 + 1
    levels = args.get("levels") or max(level for _, level in stages_levels) + 1
    return Gene.from_sample(sample, iterations, levels).to_text(), dict(sample)


def export_experiment(experiment_id: str, out_dir: Optional[PathLike] = None,
                      experiment_dir: Optional[PathLike] = None, program: bool = True) -> Dict[str, Path]:
    """Export an experiment's results to ``out_dir`` (default ``<experiment dir>/export``); return the paths.

    Writes ``gene.txt`` (the final gene; first line ``# model: bixnet width=... ...``, the model arguments
    of the search), ``gene.json`` (the NNI sample, the gene text and the model arguments), ``pareto.png``
    (one panel per stage), ``architecture.png``/``.svg`` (the found net's wiring) and ``summary.md``; with a
    retrained checkpoint reported, ``best.ckpt`` and (unless ``program=False``) ``model.pt2``, the
    retrained net as a ``torch.export`` program that loads without nni_bixnas, with ``model.json``.
    """
    results = read_experiment(experiment_id, experiment_dir)
    out = Path(out_dir) if out_dir is not None else results.directory / "export"
    out_folder("out_dir (--out)", out)
    out.mkdir(parents=True, exist_ok=True)
    points = candidates(results)
    sample, gene_text, source = final_choice(results, points)
    if source.startswith("best IoU") and results.state_problem:
        _logger.warning("the final gene is not recorded (no strategy result.json, and %s): exporting the %s "
                        "candidate instead, which need not be the one the search would have chosen",
                        results.state_problem, source)
    checkpoint = _reported_checkpoint(results)
    model_args = searched_model_args(results.class_args) or _checkpoint_model_args(checkpoint)
    text, sample = _gene_text(sample, gene_text, model_args)
    written = _write_gene(out, text, sample, source, model_args)
    complexity = complexity_vs_supernet(results, text, model_args) if model_args else None
    if text is not None:
        written.update(_write_architecture(out, text, experiment_id, complexity))
    if checkpoint is not None:
        written["checkpoint"] = _copy(checkpoint, out / checkpoint.name)
        written.update(_copy_run_record(checkpoint, out))
        if program:
            written.update(_write_program(checkpoint, out))
    counter = NetCounter(model_args)
    views = _stage_views(results, counter)
    runs = _retrained_runs(results)
    plain = [c for c in points if c.stage is None and not (c.unit or "").startswith(("retrain", "result"))]
    panels = _panels(views, runs, plain)
    costs = " and ".join(name for key, name in (("macs", "MACs"), ("latency_ms", "latency"))
                         if any(p.x == key and p.usable() for p in panels)) or "MACs"
    with atomic_write(out / "pareto.png", "wb") as handle:
        panels_png(panels, handle, title=f"{experiment_id}: IoU vs {costs}")
    written["plot"] = out / "pareto.png"
    report = Report(
        experiment_id, results.directory, results.trials, {t.trial_id: t.label for t in results.trials}, views,
        runs, text, source, model_header(model_args) if text and model_args else None, complexity,
        pareto_front(plain), len(plain), dict(written), counter.stage_choices,
    )
    with atomic_write(out / "summary.md") as handle:
        handle.write(summary_markdown(report))
    written["summary"] = out / "summary.md"
    return written


def _write_gene(out: Path, text: Optional[str], sample: Optional[Dict], source: str,
                model_args: Optional[Dict[str, Any]]) -> Dict[str, Path]:
    written: Dict[str, Path] = {}
    if text is not None:
        with atomic_write(out / "gene.txt") as handle:
            handle.write(with_model_header(text, model_args))
        written["gene"] = out / "gene.txt"
    if sample is not None:
        record: Dict[str, Any] = {"sample": sample, "source": source}
        if text is not None:
            record.update(gene=text, model="bixnet")
        if model_args:
            record["model_args"] = model_args
        with atomic_write(out / "gene.json") as handle:
            json.dump(record, handle, indent=2, sort_keys=True)
        written["sample"] = out / "gene.json"
    return written


def _write_architecture(out: Path, text: str, experiment_id: str,
                        complexity: Optional[Mapping[str, int]]) -> Dict[str, Path]:
    from nni_bixnas.space.gene import Gene
    from nni_bixnas.space.wiring_plot import write_architecture

    title = f"{experiment_id}: the found net"
    subtitle = ""
    if complexity is not None:
        subtitle = (f"{complexity['params']:,} params, {complexity['macs'] / 1e9:.3f} GMACs at 512 x 512 "
                    f"(SuperNet {complexity['supernet_params']:,} params, "
                    f"{complexity['supernet_macs'] / 1e9:.3f} GMACs)")
    gene = Gene.parse(text)
    return {"architecture": write_architecture(gene, out / "architecture.png", title, subtitle),
            "architecture_svg": write_architecture(gene, out / "architecture.svg", title, subtitle)}


def _copy(source: Path, target: Path) -> Path:
    with atomic_write(target, "wb") as handle, open(source, "rb") as src:
        shutil.copyfileobj(src, handle)
    return target


def _copy_run_record(checkpoint: Path, out: Path) -> Dict[str, Path]:
    """The checkpoint's ``run.json`` (data, split, held-out images) beside its copy, so that ``bixnas evaluate
    --split val`` scores the held-out images and a score over training images is warned about."""
    from nni_bixnas.training.run_folder import RUN_NAME

    for run in (checkpoint.parent.parent / RUN_NAME, checkpoint.parent / RUN_NAME):
        if run.is_file():
            return {"run": _copy(run, out / RUN_NAME)}
    _logger.warning("checkpoint %s has no %s in its run folder: the exported one has none beside it", checkpoint,
                    RUN_NAME)
    return {}


def _checkpoint_model_args(checkpoint: Optional[Path]) -> Optional[Dict[str, Any]]:
    if checkpoint is None:
        return None
    from nni_bixnas.training.checkpoint import load_checkpoint

    return checkpoint_model_args(load_checkpoint(checkpoint).get("hyper_parameters"))


def _write_program(checkpoint: Path, out: Path) -> Dict[str, Path]:
    """``model.pt2`` + ``model.json`` of the retrained net (nothing, with a warning, if it cannot be built)."""
    from nni_bixnas.training.checkpoint import load_task

    from .deploy import export_program, max_difference, size_multiple, training_input_size

    try:
        task = load_task(checkpoint)
        hparams = dict(task.hparams)
        info = {"checkpoint": checkpoint.name, "model_name": hparams.get("model_name"),
                "model_kwargs": hparams.get("model_kwargs"), "threshold": hparams.get("threshold")}
        export_program(task.model, out / "model.pt2", training_input_size(checkpoint), info)
    except ValueError as err:
        _logger.warning("model.pt2 not written: %s", err)
        return {}
    import torch

    side = 2 * size_multiple(task.model)
    channels = getattr(task.model, "in_channels", 3)
    images = torch.rand(1, channels, side, side, generator=torch.Generator().manual_seed(0))
    difference = max_difference(out / "model.pt2", task.model, images)
    if difference > 1e-4:
        _logger.warning("model.pt2 differs from the PyTorch net by up to %.3g on a test input", difference)
    return {"program": out / "model.pt2", "program_info": out / "model.json"}


def _stage_views(results: ExperimentResults, counter: NetCounter) -> List[StageView]:
    def make(member: Mapping[str, Any], stage: Any, trial: Optional[str]) -> Candidate:
        sample = member.get("sample") if isinstance(member.get("sample"), dict) else None
        params = _number(member.get("params"))
        return Candidate(sample=sample, iou=_number(member.get("iou", member.get("default"))),
                         macs=_number(member.get("macs")),
                         params=params if params is not None or sample is None else counter.params(sample),
                         dice=_number(member.get("dice")), stage=stage, trial=trial, unit=f"stage {stage}",
                         latency_ms=_number(member.get("latency_ms")))

    stage_trials = [(t.trial_id, final) for t, final in results.final_dicts()
                    if isinstance(final.get("population"), list)]
    history = (results.strategy_result or {}).get("phase2_history")
    return stage_views(history, stage_trials, make, counter.identity)


def _retrained_runs(results: ExperimentResults) -> List[Dict[str, Any]]:
    trials = [(t.trial_id, t.unit.get("seed"), final) for t, final in results.final_dicts()
              if t.label.startswith("retrain")]
    runs = retrained_runs(results.strategy_result, trials)
    by_seed = {seed: trial_id for trial_id, seed, _ in trials if seed is not None}
    for run in runs:
        run.setdefault("trial", by_seed.get(run.get("seed")))
    return runs


def _panels(views: Sequence[StageView], runs: Sequence[Mapping[str, Any]], plain: Sequence[Candidate]) -> List[Panel]:
    panels = [Panel(stage_title(v.stage, len(v.members)), v.members, v.front, v.kept or (), x=cost_axis(v.members))
              for v in views]
    retrained = [Candidate(None, _number(r.get("default")), _number(r.get("macs")),
                           unit=f"retrain seed {r.get('seed')}") for r in runs]
    if retrained:
        panels.append(Panel(f"retrained: {len(retrained)} seed{'s' if len(retrained) != 1 else ''}", retrained,
                            y_label="IoU (validation, fixed net)"))
    if plain:
        usable = [c for c in plain if c.iou is not None and c.macs is not None]
        front = {id(c) for c in pareto_front(usable)}
        panels.append(Panel("other trials", plain, [i for i, c in enumerate(plain) if id(c) in front],
                            y_label="IoU"))
    return panels


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
