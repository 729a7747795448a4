"""KFP's local runner at KFP's own cost: each task's executor in a child of a warm process.

KFP's ``SubprocessRunner`` starts a fresh interpreter per task (``sh -c ... python3 -m
kfp.dsl.executor_main ...``), which imports kfp, torch and mlflow again: seconds per task that
the steps never compute with. :func:`forked_tasks` keeps everything else of the local runner as
it is (the compiled pipeline, its executor input and output, artifacts, caching) and replaces
only the one call that starts that interpreter: the task's command runs in a child forked from
this process. Each task is still a process of its own, so a crash, a leaked global or an
``os.chdir`` in one task cannot reach the next; its environment variables, working directory,
stdout/stderr (one stream, echoed line by line, each line prefixed by its task) and exit code
are those the stock runner gives.

What the steps import is loaded into this process by a preloading thread while the first tasks
run (a child forked before a module is loaded imports it itself, as a fresh interpreter
would), so the imports overlap the tasks instead of preceding them. Independent tasks of a
plain DAG run side by side, up to ``side_by_side`` at a time, in KFP's own order.

Threads and ``fork`` meet safely here through two locks. The *gate* is held by the preloading
thread for each import and by a task's thread for its ``fork`` (before the preloader), so a
child is never forked half-way through an import: a fork waits for at most the one import under
way, which the preload's order makes one the task needs. The *dispatch lock* is held by
whichever thread runs KFP's dispatch code, given up while the thread waits for its child. The
threads a fork leaves behind in the parent are at most waiting on a lock, on their child's pipe
or writing its lines to the parent's stdout, none of which the child touches (it writes to a
pipe of its own from its first instruction).

This reads kfp's private details, so kfp is pinned exactly and :func:`check_kfp` fails with a
clear message when one changes: the function the subprocess handler calls
(``subprocess_task_handler.run_local_subprocess``), the DAG orchestrator's ``run_dag`` and the
task executor it calls, KFP's log contexts, and the layout of a lightweight component's command
(:func:`parse_command`). ``tlops run --runner subprocess`` keeps the stock runner.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

KFP_VERSION = "2.17.0"  # the kfp whose private entry points this module was written against
EXECUTOR_MODULE = "kfp.dsl.executor_main"
log = logging.getLogger(__name__)


class EntryPointChanged(RuntimeError):
    """The installed kfp does not run tasks the way this module was written for."""


@dataclass(frozen=True)
class TaskCommand:
    """What KFP's command for a lightweight component's task says to run."""

    source: str  # the component's module source (the ephemeral component file)
    arguments: list[str]  # --executor_input ... --function_to_execute ...

    @property
    def name(self) -> str:
        """The task's name in the run (``train``, ``validate-data-2``), for its output lines."""
        with contextlib.suppress(ValueError, IndexError, KeyError, TypeError):
            given = json.loads(self.arguments[self.arguments.index("--executor_input") + 1])
            return Path(given["outputs"]["outputFile"]).parent.name
        with contextlib.suppress(ValueError, IndexError):
            return self.arguments[self.arguments.index("--function_to_execute") + 1]
        return "task"


# what this module replaces or calls: (module, attribute)
_ENTRY_POINTS = (
    ("kfp.local.subprocess_task_handler", "run_local_subprocess"),
    ("kfp.local.orchestrator.dag_orchestrator", "run_dag"),
    ("kfp.local.orchestrator.task_executor", "execute_single_task"),
    ("kfp.local.orchestrator.orchestrator_utils", "OrchestratorUtils"),
    ("kfp.local.logging_utils", "local_logger_context"),
    ("kfp.local.logging_utils", "indented_print"),
)


def check_kfp() -> None:
    """Fail clearly unless the installed kfp is the one this runner was written against.

    Raises:
        EntryPointChanged: Another kfp version, or one of the functions this runner replaces
            or calls is gone.
    """
    import kfp

    if kfp.__version__ != KFP_VERSION:
        raise EntryPointChanged(
            f"the warm task runner was written against kfp {KFP_VERSION}, kfp "
            f"{kfp.__version__} is installed: check kfp.local's subprocess handler, DAG "
            "orchestrator and the lightweight component command, then update "
            "tlops.runner.warm (or run with --runner subprocess)"
        )
    for module, name in _ENTRY_POINTS:
        if getattr(importlib.import_module(module), name, None) is None:
            raise EntryPointChanged(
                f"{module}.{name} is gone: the warm task runner cannot take the tasks over "
                "(run with --runner subprocess)"
            )


def parse_command(full_command: list[str]) -> TaskCommand:
    """The component source and executor arguments of a lightweight component's task command.

    KFP 2.17 runs ``sh -ec '<script writing "$0" to ephemeral_component.py and running python3
    -m kfp.dsl.executor_main --component_module_path <it> "$@">' <source> <arguments...>``.

    Raises:
        EntryPointChanged: The command does not have that layout.
    """
    if (
        len(full_command) < 4
        or full_command[0] != "sh"
        or full_command[1] not in ("-c", "-ec")
        or EXECUTOR_MODULE not in full_command[2]
        or "ephemeral_component.py" not in full_command[2]
        or "--function_to_execute" not in full_command[4:]
    ):
        raise EntryPointChanged(
            "a KFP task command does not have the layout of a kfp "
            f"{KFP_VERSION} lightweight component (sh -ec <script> <source> <arguments>): "
            f"{' '.join(full_command[:3])[:200]}... (run with --runner subprocess)"
        )
    return TaskCommand(full_command[3], list(full_command[4:]))


def preload(entry: str) -> None:
    """Import a module, or import it and call one of its functions (``module:function``).

    The function warms a cache the steps would otherwise fill in every task (it computes no
    tensors and starts no thread pool or CUDA device).
    """
    module, _, function = entry.partition(":")
    loaded = importlib.import_module(module)
    if function:
        getattr(loaded, function)()


class _Gate:
    """A lock that the pipeline's threads get before the preloading thread.

    ``with gate:`` takes it for a task's fork; :meth:`idle` takes it for the preloader only
    while no fork waits for it, so an import delays a fork by at most the one import under
    way.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters = threading.Condition()
        self._waiting = 0

    def acquire(self) -> None:
        """Take the gate, before the preloader (for a fork)."""
        with self._waiters:
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._waiters:
                self._waiting -= 1
                self._waiters.notify_all()

    def release(self) -> None:
        """Give the gate up."""
        self._lock.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @contextlib.contextmanager
    def idle(self) -> Iterator[None]:
        """Within: the gate, taken while no fork waited for it."""
        while True:
            with self._waiters:
                self._waiters.wait_for(lambda: self._waiting == 0)
            self._lock.acquire()
            with self._waiters:
                if self._waiting == 0:
                    break
            self._lock.release()  # a fork came meanwhile: it goes first
        try:
            yield
        finally:
            self._lock.release()


@dataclass
class _Warm:
    """The warm parent while :func:`forked_tasks` is active."""

    side_by_side: int
    gate: _Gate = field(default_factory=_Gate)  # forks against the preloader's imports
    dispatch: threading.Lock = field(default_factory=threading.Lock)  # KFP's dispatch code
    output: threading.Lock = field(default_factory=threading.Lock)  # one line at a time
    stop: threading.Event = field(default_factory=threading.Event)
    forked: threading.Event = field(default_factory=threading.Event)  # the first task's fork
    failed: list[str] = field(default_factory=list)

    def preload(self, entries: tuple[str, ...]) -> None:
        """Load ``entries`` one by one, each under the gate (the preloading thread's body).

        From the first task's fork on: that task needs nothing of them yet, and waits for none.
        """
        self.forked.wait()
        for entry in entries:
            with self.gate.idle():
                if self.stop.is_set():
                    return
                try:
                    preload(entry)
                except Exception as exc:  # the step that needs it will import it and say why
                    self.failed.append(f"{entry}: {type(exc).__name__}: {exc}")

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Within: the dispatch lock is given up (this thread waits for a child or a task)."""
        self.dispatch.release()
        try:
            yield
        finally:
            self.dispatch.acquire()


_warm: _Warm | None = None


@contextlib.contextmanager
def forked_tasks(
    preloaded: tuple[str, ...] = (), side_by_side: int = 1, finish_preload: bool = False
) -> Iterator[None]:
    """Within: every task KFP's ``SubprocessRunner`` starts runs in a fork of this process.

    Args:
        preloaded: Modules (or ``module:function`` cache warmers, see :func:`preload`) to load
            into this process while the tasks run, in the order the tasks need them.
        side_by_side: At most this many independent tasks of a plain DAG run at once (1: one
            at a time, in KFP's order).
        finish_preload: On leaving, load what is left of ``preloaded`` instead of stopping
            after the import under way.

    Raises:
        EntryPointChanged: See :func:`check_kfp`.
    """
    global _warm
    from kfp.local import logging_utils, subprocess_task_handler
    from kfp.local.orchestrator import dag_orchestrator

    from tlops.runner.side_by_side import run_dag_side_by_side

    check_kfp()
    if _warm is not None:
        raise RuntimeError("forked_tasks is already active in this process")
    # MKL's own memory manager is not fork-safe: a child forked from this process once spun
    # forever in it (mkl_serv_allocate -> mm_account_ptr_by_tid, the first sgemm of a train
    # task, seen in CI). Off, MKL takes its buffers from malloc. It is read when MKL starts,
    # so it is set before the preload imports torch; the children inherit it.
    os.environ.setdefault("MKL_DISABLE_FAST_MM", "1")
    state = _Warm(max(1, side_by_side))
    patches = [
        (subprocess_task_handler, "run_local_subprocess", run_forked),
        # the task's lines are written by run_forked with its name; KFP's indentation patches
        # builtins.print, which tasks side by side would undo out of order
        (logging_utils, "indented_print", contextlib.nullcontext),
    ]
    if state.side_by_side > 1:
        original = dag_orchestrator.run_dag
        patches.append((dag_orchestrator, "run_dag", run_dag_side_by_side(original, state)))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    state.dispatch.acquire()  # this thread runs KFP's dispatch code
    preloader = threading.Thread(
        target=state.preload, args=(tuple(preloaded),), name="tlops-preload", daemon=True
    )
    for owner, name, value in patches:
        setattr(owner, name, value)
    _warm = state
    preloader.start()
    try:
        yield
    finally:
        if not finish_preload:
            state.stop.set()
        state.forked.set()
        for owner, name, value in saved:
            setattr(owner, name, value)
        _warm = None
        state.dispatch.release()
        preloader.join()  # it stops after the import under way
        for failure in state.failed:
            log.warning("warm runner: could not preload %s", failure)


def run_forked(full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
    """Run a task's command in a child of this process; echo its output; its exit code.

    The signature and behaviour of ``kfp.local.subprocess_task_handler.run_local_subprocess``;
    each line of the task's output is written prefixed by the task's name.
    """
    task = parse_command(full_command)
    state = _warm
    prefix = f"    [{task.name}] "
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    with state.gate if state is not None else contextlib.nullcontext():
        pid = os.fork()
        if pid == 0:  # the task: never returns
            os.close(read_end)
            os._exit(_child(task, env_vars or {}, write_end))
    if state is not None:
        state.forked.set()
    os.close(write_end)
    waiting = state.released() if state is not None else contextlib.nullcontext()
    with waiting:
        with open(read_end, encoding="utf-8", errors="replace") as output:
            for line in output:
                _write(state, prefix + line)
        _, status = os.waitpid(pid, 0)
    sys.stdout.write("\n")  # the stock runner's separator after a task's output
    return os.waitstatus_to_exitcode(status)


def _write(state: _Warm | None, text: str) -> None:
    """Write a task's line to this process's stdout, one line at a time."""
    with state.output if state is not None else contextlib.nullcontext():
        sys.stdout.write(text)


def _child(task: TaskCommand, env_vars: dict[str, str], write_end: int) -> int:
    """In the forked child: stdout and stderr to the pipe, then KFP's executor main."""
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    stream = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), encoding="utf-8")
    stream.reconfigure(line_buffering=True)
    sys.stdout = sys.stderr = stream
    code = 1
    try:
        code = _execute(task, env_vars)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what the interpreter prints for an uncaught exception, exit 1
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            stream.flush()
    return code


def _execute(task: TaskCommand, env_vars: dict[str, str]) -> int:
    """What ``python3 -m kfp.dsl.executor_main`` does in the stock runner's fresh process."""
    from kfp.dsl import executor_main

    os.environ.update(env_vars)
    os.environ["_KFP_RUNTIME"] = "true"  # what the command's script exports
    _fresh_logging()
    with tempfile.TemporaryDirectory(prefix="tlops-task-") as tmp:
        module = Path(tmp) / "ephemeral_component.py"
        module.write_text(task.source, encoding="utf-8")
        sys.argv = [EXECUTOR_MODULE, "--component_module_path", str(module), *task.arguments]
        executor_main.executor_main()
    return 0


def _fresh_logging() -> None:
    """Logging as a fresh interpreter has it (the parent's handlers write to the parent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for item in list(root.filters):
        root.removeFilter(item)
    root.setLevel(logging.WARNING)
