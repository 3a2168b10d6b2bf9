"""The job bodies: what runs inside one NNI trial (or in-process job) for the BiX-NAS strategies.

Each is a function ``unit(model, **kwargs)`` that a strategy submits through
:class:`~nni_bixnas.strategy.runner.UnitRunner`; it trains with the one training loop
(:func:`nni_bixnas.training.fit`), writes its run folder and reports a plain dict with
``nni.report_final_result``:

- :func:`selection_matrix_unit`: Phase 1, the selection-matrix supernet, exported to candidate sets;
- :func:`phase2_stage_unit`: one Phase 2 stage, a population on one shared SuperNet;
- :func:`retrain_unit`: a searched architecture retrained from scratch;
- :func:`retrained_result_unit`: no training, the headline of several retraining seeds as one trial.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import nni
import torch
import torch.nn as nn

from nni_bixnas._checks import positive_int
from nni_bixnas.settings import TrainingSettings
from nni_bixnas.strategy.pareto import pareto_front
from nni_bixnas.strategy.records import RETRAINED, RETRAINED_MEAN, SHARED_WEIGHTS, retrained_headline
from nni_bixnas.strategy.settings import require_data
from nni_bixnas.strategy.supernet.member_macs import member_macs as count_member_macs
from nni_bixnas.strategy.supernet.phase2_task import Phase2Task, default_milestones
from nni_bixnas.strategy.supernet.spaces import build_space
from nni_bixnas.strategy.supernet.supermodule import check_tau, check_variant, to_supernet
from nni_bixnas.training.distributed import global_rank
from nni_bixnas.training.trial_runtime.environment import trial_out_dir
from nni_bixnas.utils import atomic_torch_save, atomic_write, seed_everything

_logger = logging.getLogger(__name__)

__all__ = ["selection_matrix_unit", "phase2_stage_unit", "retrain_unit", "retrained_result_unit", "CANDIDATES_FILE",
           "HEATMAP_FILE", "WEIGHTS_FILE"]

CANDIDATES_FILE = "candidates.json"
HEATMAP_FILE = "selection_matrices.png"
#: The trained SuperNet weights a unit leaves in its run folder (Phase 1 without the matrices).
WEIGHTS_FILE = "supernet.pt"


def retrain_unit(model: nn.Module, *, training: Dict[str, Any], max_epochs: int = 10, out_dir: Optional[str] = None,
                 progress: bool = False, earlier_ious: Optional[List[float]] = None,
                 iou_kind: str = RETRAINED) -> Dict[str, Any]:
    """Retrain a searched architecture with ``training`` (:meth:`TrainingSettings.to_dict
    <nni_bixnas.settings.TrainingSettings.to_dict>`, its ``seed`` this retraining's) for ``max_epochs``, as
    :func:`~nni_bixnas.training.evaluator.train_and_score` does, and report the result (one unit).

    The reported result also holds ``iou_kind`` (``'retrained'``, or the finalist check's); with ``earlier_ious``
    (the other seeds' IoUs, known before this one starts) also :func:`retrained_headline` over all seeds, so
    the web UI shows the headline beside this net's ``macs`` and ``params``. :class:`~nni_bixnas.strategy.BiXNAS` passes
    ``earlier_ious=[]`` when it retrains one seed only; several seeds train concurrently, and it computes
    their headline itself (``result.json``, its summary line).
    """
    from nni_bixnas.training.evaluator import train_and_score_settings

    settings = TrainingSettings.from_mapping(training, "training.")
    final = train_and_score_settings(model, settings, max_epochs=max_epochs, out_dir=out_dir, progress=progress)
    headline = {} if earlier_ious is None else retrained_headline([*earlier_ious, final.get("default")])
    final = {**final, "iou_kind": iou_kind, **headline}
    nni.report_final_result(final)
    return final


def retrained_result_unit(model: nn.Module, *, seeds: List[int], ious: List[float],
                          macs: Optional[float] = None, params: Optional[float] = None) -> Dict[str, Any]:
    """Report the search's headline as one trial, after the retraining seeds (no training).

    Its ``default`` (the web UI's metric of the trial) is the retrained IoU mean over ``seeds``, and says so:
    ``default_is: 'retrained_iou_mean'``, ``iou_kind: 'retrained, mean over seeds'``, beside
    ``retrained_iou_mean``, ``retrained_iou_std``, ``retrained_seeds``, every seed's IoU
    (``retrained_ious``, by seed) and the net's ``macs`` and ``params``. ``model`` (the found net) is unused.
    """
    headline = retrained_headline(ious)
    final = {"default": headline["retrained_iou_mean"], "default_is": "retrained_iou_mean",
             "iou_kind": RETRAINED_MEAN, **headline,
             "retrained_ious": {str(seed): iou for seed, iou in zip(seeds, ious)}}
    final.update({key: value for key, value in (("macs", macs), ("params", params)) if value is not None})
    nni.report_final_result(final)
    return final


# ----- Phase 1 ----------------------------------------------------------------------------------------
def selection_matrix_unit(model: nn.Module, *, space: Dict[str, Any], epochs: int,
                          training: Optional[Dict[str, Any]] = None, out_dir: Optional[str] = None, tau: float = 1.0,
                          variant: str = "code", tau_final: Optional[float] = None, progress: bool = False) -> Dict:
    """Train the selection-matrix supernet of ``space`` and report the candidate sets (one engine job).

    The model space is rebuilt from ``space`` (:func:`~nni_bixnas.strategy.supernet.spaces.space_reference`),
    turned into a supernet by :func:`to_supernet` and trained by :func:`nni_bixnas.training.fit`: one Adam
    over the weights and the matrices, inverse-time decay per epoch, the best-validation-IoU checkpoint
    kept. Every epoch's validation IoU goes to NNI as an intermediate result. The best checkpoint is then
    loaded and exported into ``out_dir``: ``candidates.json`` and ``selection_matrices.png`` (one panel of
    softmax probabilities per choice), and the final result is reported with ``nni.report_final_result``.

    Parameters
    ----------
    model
        The frozen model the engine passes in (the space's default sample); unused.
    space
        ``{'symbol': class, 'kwargs': dict}`` of the model space.
    epochs
        Training epochs.
    training
        :meth:`TrainingSettings.to_dict <nni_bixnas.settings.TrainingSettings.to_dict>` of the training (a
        missing ``data`` is an error); its ``seed`` also seeds the supernet's initialisation (weights and
        matrices).
    out_dir
        Run folder; default ``$NNI_OUTPUT_DIR/phase1`` in a trial, else a new temporary folder. A
        folder holding an interrupted run of the same configuration is resumed.
    tau, variant, tau_final
        See :class:`SelectionMatrixFusion`; ``tau_final`` anneals ``tau`` (:func:`.tau_schedule.annealed_tau`).
    progress
        Show Lightning's progress bar.

    Returns
    -------
    dict
        The reported final result: ``{'default': best validation IoU, 'iou_kind': 'shared weights', 'dice',
        'best_epoch', 'candidates': {label: [indices]}, 'probabilities': {label: N x k rows}, 'phase': 1,
        'out_dir', 'heatmap', 'weights'}``; ``weights`` is ``supernet.pt``, the best checkpoint's weights
        without the selection matrices (a state dict Phase 2 can start from).
    """
    from nni_bixnas.strategy.supernet._plots import format_matrix, write_heatmaps
    from nni_bixnas.strategy.supernet.tau_schedule import tau_callbacks
    from nni_bixnas.training import NNIReporter, fit, nni_tensorboard_dir
    from nni_bixnas.training.checkpoint import read_checkpoint

    positive_int("epochs", epochs)
    check_tau(tau)
    check_variant(variant)
    require_data(training or {}, "selection_matrix_unit")
    settings = TrainingSettings.from_mapping(training, "training.")
    seed = settings.seed
    run_dir = trial_out_dir(out_dir, "phase1")

    seed_everything(seed)  # the supernet's initial weights and matrices
    supernet, fusions = to_supernet(build_space(space), tau=tau, variant=variant)
    callbacks = [NNIReporter(), *tau_callbacks(fusions.values(), epochs, tau, tau_final)]
    _logger.info("Phase 1 supernet: %d selection matrices (%s), %d epochs, out_dir %s", len(fusions), variant, epochs,
                 run_dir)
    result = fit(supernet, settings=settings, max_epochs=epochs, out_dir=run_dir, callbacks=callbacks,
                 progress=progress, tensorboard_dir=nni_tensorboard_dir())
    checkpoint = read_checkpoint(result.best_checkpoint if result.best_checkpoint.is_file() else result.last_checkpoint)
    state = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    supernet.load_state_dict(state)
    weights = run_dir / WEIGHTS_FILE  # the trained weights without the matrices: Phase 2 may start from them
    atomic_torch_save({k: v for k, v in supernet.state_dict().items() if not k.endswith(".matrix")}, weights)

    candidates = {label: fusion.export() for label, fusion in fusions.items()}
    probabilities = {label: fusion.probabilities().tolist() for label, fusion in fusions.items()}
    for label in fusions:
        _logger.info("Selection matrix %s -> candidates %s; softmax over inputs (rows) per selection (columns):\n%s",
                     label, candidates[label], format_matrix(probabilities[label]))
    best_iou = float("nan") if result.best_iou is None else float(result.best_iou)
    heatmap = run_dir / HEATMAP_FILE
    write_heatmaps(heatmap, {f"{label} {candidates[label]}": rows for label, rows in probabilities.items()},
                   title=f"Phase 1 selection matrices ({variant}, epoch {result.best_epoch}, val IoU {best_iou:.4f})")
    final = {
        "default": best_iou,
        "iou_kind": SHARED_WEIGHTS,
        "dice": None if result.best_dice is None else float(result.best_dice),
        "best_epoch": int(result.best_epoch),
        "candidates": candidates,
        "probabilities": probabilities,
        "phase": 1,
        "out_dir": str(run_dir),
        "heatmap": str(heatmap),
        "weights": str(weights),
    }
    with atomic_write(run_dir / CANDIDATES_FILE) as handle:
        json.dump({**final, "variant": variant, "tau": tau, "tau_final": tau_final, "seed": seed, "epochs": epochs},
                  handle, indent=2)
    nni.report_final_result(final)
    return final


# ----- Phase 2 ----------------------------------------------------------------------------------------
def _stage_dir(out_dir: Optional[str], stage: int, identity: Mapping[str, Any]) -> Path:
    """``out_dir/stage_<t>-<digest of the unit's settings>``: a re-run resumes only the very same unit."""
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return trial_out_dir(out_dir, "phase2") / f"stage_{stage}-{digest}"


def phase2_stage_unit(
    model: Optional[nn.Module] = None,
    *,
    space: Dict[str, Any],
    stage: int,
    members: List[Dict[str, List[int]]],
    candidates: Optional[Dict[str, List[int]]] = None,
    epochs: int = 40,
    milestones: Optional[List[int]] = None,
    gamma: float = 0.1,
    step: str = "low_memory",
    mode: str = "fair",
    member_bn: str = "recalibrate",
    recalibration_batches: int = 8,
    macs_input_size: Sequence[int] = (512, 512),
    member_macs: Optional[List[int]] = None,
    member_latency: Optional[List[float]] = None,
    init_weights: Optional[str] = None,
    out_dir: Optional[str] = None,
    training: Optional[Dict[str, Any]] = None,
    progress: bool = False,
) -> Dict[str, Any]:
    """Train one Phase 2 stage, score its population and report the result to NNI.

    Builds a fresh SuperNet (``build_space(space, candidates=candidates)``, seeded from ``(seed, stage)``;
    ``init_weights`` loads a previous stage's weights), trains it with :class:`Phase2Task` through
    :func:`~nni_bixnas.training.fit` (per-epoch ``nni.report_intermediate_result`` via ``NNIReporter``),
    counts every member's MACs and reports ``{'default': best IoU, 'iou_kind', 'stage', 'population': [{'sample',
    'iou', 'macs', 'best_epoch', 'image_iou'[, 'latency_ms']}, ...], 'front': [indices], 'phase': 2, 'weights': path,
    'seconds'}`` with ``nni.report_final_result``.

    Parameters
    ----------
    model
        The job's frozen model (a parent's architecture), passed by NNI; unused, the unit trains its
        own SuperNet.
    space
        :func:`~nni_bixnas.strategy.supernet.spaces.space_reference` of the model space.
    stage, members
        The stage being searched and the population (full samples).
    candidates
        Phase 1's narrowed candidate sets, passed to the space's constructor.
    epochs, milestones, gamma, step, mode
        Training of the stage (``milestones`` default: :func:`default_milestones`; the learning rate is
        ``training['lr']``).
    macs_input_size
        ``(H, W)`` at which MACs are counted (the paper: 512 x 512).
    member_macs
        Every member's MACs, counted by the strategy (:class:`ProgressiveEvolution` does, once per net);
        ``None`` counts them here, after training.
    member_latency
        Every member's latency in ms, timed by the strategy (``objective='latency'``): reported as each
        member's ``latency_ms``, and the front is then that of ``(1 - IoU, latency)`` instead of MACs.
    init_weights
        A ``.pt`` state dict to start from (``inherit_weights=True``); default: fresh weights.
    out_dir
        Parent folder of the stage's run folder (default ``$NNI_OUTPUT_DIR/phase2`` or a temporary one).
    recalibration_batches
        Training batches per member for ``member_bn='recalibrate'``.
    training
        :meth:`TrainingSettings.to_dict <nni_bixnas.settings.TrainingSettings.to_dict>` of the stage's
        training (``data`` is required). Several ``devices`` train the stage data-parallel (Lightning's DDP;
        see :class:`Phase2Task`): ``batch_size`` is per device, every rank runs this whole unit, and rank 0
        alone writes the weights and reports to NNI. ``devices='auto'`` is one device here (data-parallel only
        when asked for).
    progress
        Show Lightning's progress bar.

    Returns
    -------
    dict
        The reported final result.
    """
    import numpy as np

    from nni_bixnas.data import SegDataModule
    from nni_bixnas.training import NNIReporter, fit, nni_tensorboard_dir

    started = time.perf_counter()
    require_data(training or {}, "phase2_stage_unit")
    settings = TrainingSettings.from_mapping(training, "training.")
    if settings.devices == "auto":
        settings = settings.replace(devices=1)  # concurrent stages must not each claim every GPU
    seed, lr = settings.seed, settings.lr
    for name, values in (("member_macs", member_macs), ("member_latency", member_latency)):
        if values is not None and len(values) != len(members):
            raise ValueError(f"{name} has {len(values)} values for {len(members)} members")
    identity = dict(space=space, stage=stage, members=members, candidates=candidates, epochs=epochs,
                    milestones=milestones, gamma=gamma, lr=lr, step=step, mode=mode, member_bn=member_bn,
                    recalibration_batches=recalibration_batches, init_weights=init_weights, data=settings.data,
                    **settings.data_options(), **({} if settings.loss == "ce" else {"loss": settings.loss}))
    run_dir = _stage_dir(out_dir, stage, identity)
    init_seed = int(np.random.SeedSequence([int(seed), int(stage)]).generate_state(1)[0])
    torch.manual_seed(init_seed)
    supernet = build_space(space, **({"candidates": candidates} if candidates is not None else {}))
    if init_weights is not None:
        state = torch.load(init_weights, map_location="cpu", weights_only=True)  # a plain state dict of tensors
        own = supernet.state_dict()
        supernet.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)

    datamodule = SegDataModule.from_settings(settings)
    datamodule.setup("fit")
    info = datamodule.info
    for name in ("in_channels", "num_classes"):
        declared, found = getattr(supernet, name, None), getattr(info, name, None)
        if declared is not None and found is not None and declared != found:
            raise ValueError(f"the search space has {name}={declared} but the data {settings.data!r} has {found}")
    task = Phase2Task(
        supernet, stage, members, step=step, mode=mode, member_bn=member_bn,
        recalibration_batches=recalibration_batches,
        num_classes=int(getattr(info, "num_classes", 1)), lr=lr, loss=settings.loss,
        milestones=default_milestones(epochs) if milestones is None else milestones, gamma=gamma,
    )
    _logger.info("Phase 2 stage %d: %d members, %d epochs, lr %.3g, step %s, mode %s -> %s",
                 stage, len(members), epochs, lr, step, mode, run_dir)
    fit(task, datamodule, max_epochs=epochs, out_dir=run_dir, seed=seed, precision=settings.precision,
        accelerator=settings.accelerator, channels_last=settings.channels_last, devices=settings.devices,
        callbacks=[NNIReporter()], progress=progress, tensorboard_dir=nni_tensorboard_dir(),
        num_threads=settings.num_threads)

    weights = run_dir / WEIGHTS_FILE
    rank = global_rank()  # data-parallel: every rank holds the same weights and scores
    if rank == 0:
        atomic_torch_save(supernet.state_dict(), weights)
    macs = member_macs or [count_member_macs(supernet.cpu(), space, m, macs_input_size) for m in members]
    population = []
    for i, member in enumerate(members):
        population.append({
            "sample": member,
            "iou": float(task.best_member_iou[i]),
            "best_epoch": int(task.best_member_epoch[i]),
            "macs": int(macs[i]),
            "image_iou": [round(v, 6) for v in task.best_member_image_iou[i]],
            **({} if member_latency is None else {"latency_ms": float(member_latency[i])}),
        })
    cost = "macs" if member_latency is None else "latency_ms"
    front = pareto_front([[1.0 - p["iou"], p[cost]] for p in population])
    final = {
        "default": max(p["iou"] for p in population),
        "iou_kind": SHARED_WEIGHTS,
        "stage": int(stage),
        "population": population,
        "front": front,
        "phase": 2,
        "weights": str(weights),
        "seconds": time.perf_counter() - started,
    }
    if rank == 0:
        nni.report_final_result(final)
    return final


# The ``unit`` label of each unit's trial (runner.unit_summary), formatted with the unit's keyword arguments.
selection_matrix_unit.trial_label = "phase1"
phase2_stage_unit.trial_label = "stage {stage}"
retrain_unit.trial_label = "retrain"
retrained_result_unit.trial_label = "result"
