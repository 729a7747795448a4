"""KFP's local runner at KFP's own cost: each task's executor in a child of a warm process.

KFP's ``SubprocessRunner`` starts a fresh interpreter per task (``sh -c ... python3 -m
kfp.dsl.executor_main ...``), which imports kfp, torch and mlflow again: seconds per task that
the steps never compute with. :func:`forked_tasks` keeps everything else of the local runner as
it is (the compiled pipeline, its executor input and output, artifacts, caching, the order of the
tasks) and replaces only the one call that starts that interpreter: the task's command runs in a
child forked from this process, which has already imported what the steps need
(:func:`preload`). Each task is still a process of its own, so a crash, a leaked global or an
``os.chdir`` in one task cannot reach the next; its environment variables, working directory,
stdout/stderr (one stream, echoed line by line) and exit code are those the stock runner gives.

This reads two of kfp's private details, so kfp is pinned exactly and :func:`check_kfp` fails
with a clear message when either changes: the module function the subprocess handler calls
(``subprocess_task_handler.run_local_subprocess``) and the layout of a lightweight component's
command (:func:`parse_command`). ``tlops run --runner subprocess`` keeps the stock runner.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KFP_VERSION = "2.17.0"  # the kfp whose private entry points this module was written against
EXECUTOR_MODULE = "kfp.dsl.executor_main"


class EntryPointChanged(RuntimeError):
    """The installed kfp does not run tasks the way this module was written for."""


@dataclass(frozen=True)
class TaskCommand:
    """What KFP's command for a lightweight component's task says to run."""

    source: str  # the component's module source (the ephemeral component file)
    arguments: list[str]  # --executor_input ... --function_to_execute ...


def check_kfp() -> None:
    """Fail clearly unless the installed kfp is the one this runner was written against.

    Raises:
        EntryPointChanged: Another kfp version, or its subprocess handler lost the function
            this runner replaces.
    """
    import kfp
    from kfp.local import subprocess_task_handler

    if kfp.__version__ != KFP_VERSION:
        raise EntryPointChanged(
            f"the warm task runner was written against kfp {KFP_VERSION}, kfp "
            f"{kfp.__version__} is installed: check kfp.local's subprocess handler and the "
            "lightweight component command, then update tlops.runner.warm (or run with "
            "--runner subprocess)"
        )
    if not callable(getattr(subprocess_task_handler, "run_local_subprocess", None)):
        raise EntryPointChanged(
            "kfp.local.subprocess_task_handler.run_local_subprocess is gone: the warm task "
            "runner cannot take the tasks over (run with --runner subprocess)"
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


def preload(modules: tuple[str, ...]) -> None:
    """Import what the steps need, once, in this (the warm) process.

    Importing starts no thread pool and initialises no CUDA device: nothing is computed here.
    """
    for name in modules:
        importlib.import_module(name)


@contextlib.contextmanager
def forked_tasks() -> Iterator[None]:
    """Within: every task KFP's ``SubprocessRunner`` starts runs in a fork of this process.

    Raises:
        EntryPointChanged: See :func:`check_kfp`.
    """
    from kfp.local import subprocess_task_handler

    check_kfp()
    original = subprocess_task_handler.run_local_subprocess
    subprocess_task_handler.run_local_subprocess = run_forked
    try:
        yield
    finally:
        subprocess_task_handler.run_local_subprocess = original


def run_forked(full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
    """Run a task's command in a child of this process; echo its output; its exit code.

    The signature and behaviour of ``kfp.local.subprocess_task_handler.run_local_subprocess``.
    """
    task = parse_command(full_command)
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the task: never returns
        os.close(read_end)
        os._exit(_child(task, env_vars or {}, write_end))
    os.close(write_end)
    with open(read_end, encoding="utf-8", errors="replace") as output:
        for line in output:
            print(line, end="")
    print("\n")  # the stock runner's separator after a task's output
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


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
