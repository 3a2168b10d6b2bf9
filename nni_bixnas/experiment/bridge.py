"""Run any NNI 3.0 NAS strategy under plain ``nnictl create``.

``nnictl`` cannot start ``experimentType: nas`` configs (the manager waits for a strategy process
nobody starts). This module's :class:`NasStrategyAdvisor` is named as the ``tuner`` of an HPO-type
config instead: the NNI manager starts it as the dispatcher, and it hosts the model space, strategy
and evaluator named in ``classArgs`` on a :class:`~nni.nas.execution.TrainingServiceExecutionEngine`,
so every model the strategy submits becomes a trial launched with
``python -m nni.nas.execution.training_service trial``.

Example (``examples/evolution_baseline.yml``)::

    searchSpace: {}
    trialCommand: python -m nni.nas.execution.training_service trial
    tuner:
      className: nni_bixnas.experiment.NasStrategyAdvisor
      classArgs:
        model_space: nni_bixnas.space.BiONetPlusPlus
        model_space_kwargs: {width: 4, stem_width: 4}
        strategy: nni.nas.strategy.RegularizedEvolution
        strategy_kwargs: {population_size: 2, sample_size: 1}
        evaluator: nni_bixnas.training.make_evaluator
        evaluator_kwargs: {data: default, max_epochs: 1}
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Dict, Optional

# Keep this module light (no torch, no nni.nas): the NNI manager gives the dispatcher 10 seconds to
# connect, counted from its start, and importing nni.nas takes longer than that on a busy machine.
# The channel is connected first; the engine and everything it imports come after.
from nni.experiment import Experiment
from nni.runtime.msg_dispatcher_base import MsgDispatcherBase
from nni.runtime.tuner_command_channel import TunerCommandChannel
from nni.runtime.tuner_command_channel.command_type import CommandType

from . import _patches

_logger = logging.getLogger(__name__)

_patches.apply()

class ManagerBinding(Experiment):
    """The REST side of a running NNI manager, as :class:`TrainingServiceExecutionEngine` needs it.

    The engine calls ``get_status``, ``get_job_statistics``, ``list_trial_jobs``, ``get_job_metrics``
    and reads ``tuner_command_channel``; all are :class:`nni.experiment.Experiment` REST methods once
    ``port`` and ``url_prefix`` are known, which the channel URL gives.

    Parameters
    ----------
    url : str
        ``ws://localhost:PORT/tuner`` or ``ws://localhost:PORT/PREFIX/tuner``
        (the dispatcher's ``NNI_TUNER_COMMAND_CHANNEL``).
    """

    def __init__(self, url: str) -> None:
        super().__init__(None)
        match = re.match(r"ws://[^:/]+:(\d+)(/.*)?/tuner$", url)
        if match is None:
            raise ValueError(f"unexpected NNI tuner command channel URL {url!r}")
        self.port = int(match.group(1))
        self.url_prefix = (match.group(2) or "").strip("/") or None
        self.tuner_command_channel = url


class _ConnectedChannel(TunerCommandChannel):
    """A tuner command channel connected once, early; the engine's own ``connect()`` is then a no-op."""

    _connected = False

    def connect(self) -> None:
        if not self._connected:
            super().connect()
            self._connected = True


def _make_engine(binding: ManagerBinding, channel: _ConnectedChannel):
    """A ``TrainingServiceExecutionEngine`` on the already connected ``channel``.

    Commands the manager sent meanwhile (``RequestTrialJobs``) wait in the websocket until the
    engine starts listening.
    """
    from nni.nas.execution import training_service

    original = training_service.TunerCommandChannel
    training_service.TunerCommandChannel = lambda url: channel  # the engine builds its channel from the URL
    try:
        return training_service.TrainingServiceExecutionEngine(binding)
    finally:
        training_service.TunerCommandChannel = original


def legacy_search_space(model_space: Any) -> Dict[str, Any]:
    """The web UI's view of a model space: ``as_legacy_dict()`` of every simplified mutable.

    Mutables without a legacy form (e.g. ``CategoricalMultiple``) are shown by their ``repr``.
    """
    legacy = {}
    for label, mutable in model_space.simplify().items():
        try:
            legacy[label] = mutable.as_legacy_dict()
        except NotImplementedError:
            legacy[label] = {"_type": "choice", "_value": [repr(mutable)]}
    return legacy


class NasStrategyAdvisor(MsgDispatcherBase):
    """Host an NNI 3.0 NAS strategy as the dispatcher of an ``nnictl create`` experiment.

    Named as ``tuner: {className: nni_bixnas.experiment.NasStrategyAdvisor, classArgs: {...}}``.
    Everything is checked once the manager has connected; bad input ends the experiment in ERROR
    with the reason in ``dispatcher.log`` and ``nnimanager.log`` (the web UI's log panel).

    On ``nnictl resume`` the strategy gets back the ``state_dict()`` saved in
    ``<experiment dir>/checkpoint/strategy_state.json`` after every change (see :mod:`.state`).

    When the search is done, the log ends with the strategy's ``summary_line()`` if it has one
    (:meth:`~nni_bixnas.strategy.BiXNAS.summary_line`: the found net, its MACs, params and retrained IoU).

    Parameters
    ----------
    model_space : str
        Import path of a :class:`~nni.nas.nn.pytorch.ModelSpace` subclass.
    strategy : str
        Import path of a :class:`~nni.nas.strategy.Strategy` subclass.
    evaluator : str
        Import path of an evaluator class or factory (e.g. ``nni_bixnas.training.make_evaluator``).
    model_space_kwargs, strategy_kwargs, evaluator_kwargs : dict, optional
        Keyword arguments for each; checked against the signature before anything is built.
    """

    def __init__(
        self,
        model_space: Optional[str] = None,
        strategy: Optional[str] = None,
        evaluator: Optional[str] = None,
        model_space_kwargs: Optional[Dict[str, Any]] = None,
        strategy_kwargs: Optional[Dict[str, Any]] = None,
        evaluator_kwargs: Optional[Dict[str, Any]] = None,
        **unknown: Any,
    ) -> None:
        # MsgDispatcherBase.__init__ is deliberately not called: the NAS engine opens its own channel.
        # Unknown keys are reported from run(), where the message reaches the web UI.
        self.stopping = False
        self.class_args = {
            "model_space": model_space, "model_space_kwargs": model_space_kwargs,
            "strategy": strategy, "strategy_kwargs": strategy_kwargs,
            "evaluator": evaluator, "evaluator_kwargs": evaluator_kwargs, **unknown,
        }
        self.terminated = threading.Event()
        self.channel = None
        self.engine = None
        self.strategy = None
        self._search_error: Optional[BaseException] = None

    # ----- MsgDispatcherBase -------------------------------------------------------------------------
    def run(self) -> None:
        """Connect, check ``classArgs``, run the strategy, wait for its trials, report NO_MORE_TRIAL."""
        url = os.environ["NNI_TUNER_COMMAND_CHANNEL"]
        channel = self.channel = _ConnectedChannel(url)
        channel.connect()
        binding = ManagerBinding(url)
        if not self._wait_initialize(channel):
            return
        try:
            # Quick checks first, before the slow imports of the engine, space and strategy.
            self._check_args(binding)
            channel.send_initialized()
            engine = self.engine = _make_engine(binding, channel)
            engine._channel.on_terminate(lambda _command: self._on_terminate())
            strategy = self._prepare(binding, engine)
        except Exception as err:  # bad input: tell the manager, which marks the experiment ERROR
            self._fail(err)
            return

        from .state import StateSaver, state_path

        saver = StateSaver(strategy, state_path(_checkpoint_dir())).start()
        search = threading.Thread(target=self._search, args=(strategy,), name="bixnas-strategy", daemon=True)
        search.start()
        from nni_bixnas.training.trial_runtime.manager_watch import ManagerWatch

        manager = ManagerWatch()
        while search.is_alive() and not self.terminated.is_set():
            search.join(0.5)
            if manager.gone():
                saver.stop()
                _logger.error("The NNI manager (pid %s) is gone; the dispatcher exits. Strategy state saved in %s; "
                              "`nnictl resume` continues the search", manager.pid, saver.path)
                logging.shutdown()
                os._exit(1)  # the engine's threads wait on a channel nobody will close
        saver.stop()
        if self.terminated.is_set():
            _logger.info("Stopped by the NNI manager; strategy state saved in %s", saver.path)
        elif self._search_error is not None:
            self._fail(self._search_error)
        else:
            engine.wait_models()
            # The manager only reaches DONE once maxTrialNumber trials ran (NoMoreTrialJobs alone leaves
            # it "no more trial" forever), so lower the limit to what was submitted.
            submitted = len(binding.list_trial_jobs())
            _logger.info("Strategy %s finished after %d trials; no more trials", type(strategy).__name__, submitted)
            binding.update_max_trial_number(max(submitted, 1))
            channel.send_no_more_trial_jobs()
            _log_summary(strategy)
            # Stay connected, as a tuner does, until `nnictl stop`.
            self.terminated.wait()
        engine.shutdown()

    # ----- steps -------------------------------------------------------------------------------------
    def _wait_initialize(self, channel: _ConnectedChannel) -> bool:
        """Read commands until the manager's ``Initialize``; ``False`` if it terminates first."""
        from nni.runtime.tuner_command_channel.command_type import Initialize, Terminate

        while True:
            command = channel.receive()
            if isinstance(command, Initialize):
                return True
            if isinstance(command, Terminate):
                _logger.info("Terminated before initialization")
                return False
            _logger.debug("Ignoring %r before initialization", command)

    def _check_args(self, binding: ManagerBinding) -> None:
        from .spec import FIELDS, check_gpus

        unknown = sorted(k for k in self.class_args if k not in FIELDS)
        if unknown:
            raise ValueError(
                f"unknown classArgs key(s) {unknown} for NasStrategyAdvisor; expected some of {list(FIELDS)}"
            )
        # The local training service stops the experiment by itself ~20 s after start when it finds no
        # GPU, with a message that does not mention trialGpuNumber; say it first.
        check_gpus(binding.get_experiment_profile().get("params", {}))

    def _prepare(self, binding: ManagerBinding, engine):
        from nni.nas.space import SimplifiedModelSpace

        from .export import STRATEGY_DIR
        from .spec import BridgeSpec, check_shared_out_dir, trials_run_here
        from .state import load_state, state_path

        local = trials_run_here(binding.get_experiment_profile().get("params", {}))
        class_args = {k: v for k, v in self.class_args.items() if v is not None}
        spec = BridgeSpec.from_class_args(class_args, check_paths=local)
        has_out_dir = "out_dir" in inspect.signature(spec.strategy).parameters
        given_out_dir = spec.strategy_kwargs.get("out_dir")
        if has_out_dir and not local:
            check_shared_out_dir(given_out_dir)
        if has_out_dir and given_out_dir is None:
            # One folder per experiment: a fixed path would make a second experiment resume the first.
            spec.strategy_kwargs["out_dir"] = str(_checkpoint_dir().parent / STRATEGY_DIR)
        if has_out_dir and not local:
            _log_shared_out_dir(spec.strategy_kwargs["out_dir"], given=given_out_dir is not None)
        model_space, strategy, evaluator = spec.build()
        executable = SimplifiedModelSpace.from_model(model_space, evaluator)
        binding.update_search_space(legacy_search_space(model_space))
        strategy.initialize(executable, engine)
        resume = os.environ.get("NNI_MODE") == "resume"
        if resume:
            from . import replay

            replay.install(engine, binding)
        saved = load_state(state_path(_checkpoint_dir())) if resume else None
        if saved is not None:
            strategy.load_state_dict(saved)
            _logger.info("Resumed %s from %s", type(strategy).__name__, state_path(_checkpoint_dir()))
        elif resume:
            _logger.warning("Resuming but no saved strategy state in %s; the search starts over", _checkpoint_dir())
        _logger.info("Running %s on %s with %s", type(strategy).__name__, type(model_space).__name__,
                     type(evaluator).__name__)
        self.strategy = strategy
        return strategy

    def _search(self, strategy) -> None:
        try:
            strategy.run()
        except BaseException as err:  # reported from the main thread
            if not self.terminated.is_set():
                _logger.exception("Strategy %s failed", type(strategy).__name__)
            self._search_error = err

    def _on_terminate(self) -> None:
        _logger.info("Terminate command received")
        self.terminated.set()

    def _fail(self, err: BaseException) -> None:
        message = f"{type(err).__name__}: {err}"
        _logger.error("BiX-NAS bridge error: %s", message)
        try:
            self.channel._send(CommandType.Error, message)
        except Exception:
            _logger.exception("Cannot report the error to the NNI manager")

    # Unused MsgDispatcherBase hooks (commands go to the engine's channel).
    def handle_initialize(self, data):  # pragma: no cover
        raise NotImplementedError

    def load_checkpoint(self) -> None:  # pragma: no cover - resume goes through run()
        pass

    def save_checkpoint(self) -> None:  # pragma: no cover
        pass


def _log_summary(strategy: Any) -> None:
    """End the run's log with the strategy's ``summary_line()`` (the found net), if it has one."""
    summary_line = getattr(strategy, "summary_line", None)
    if not callable(summary_line):
        return
    try:
        line = summary_line()
    except Exception:  # a report detail: the experiment is DONE either way
        _logger.exception("Cannot summarise the result of %s", type(strategy).__name__)
        return
    if line:
        _logger.info("%s", line)


def _log_shared_out_dir(out_dir: str, given: bool) -> None:
    """Say that trials on other machines read and write ``out_dir``, which this process reads too."""
    if given:
        _logger.info("Trials run on other machines: strategy_kwargs.out_dir %s must be the same folder on a file "
                     "system shared by this machine and every trial machine (weights handed between units, results)",
                     out_dir)
    else:
        _logger.warning("Trials run on other machines but strategy_kwargs.out_dir is not set: it defaults to %s on "
                        "this machine, which trials elsewhere do not share (each writes its own copy there, and "
                        "inherited weights and `bixnas export` miss them); set it to an absolute path on a shared "
                        "file system", out_dir)


def _checkpoint_dir() -> Path:
    """``<experiment dir>/checkpoint`` (``NNI_CHECKPOINT_DIRECTORY``, set by the manager)."""
    directory = os.environ.get("NNI_CHECKPOINT_DIRECTORY")
    if not directory:
        raise RuntimeError("NNI_CHECKPOINT_DIRECTORY is not set: NasStrategyAdvisor must be started by the NNI manager")
    return Path(directory)
