"""The warm task runner: KFP's own local runner, each task forked from a warm process.

Tiny lightweight components (no torch) run through ``kfp.local`` with the stock
``SubprocessRunner`` and with :func:`tlops.runner.warm.forked_tasks`: the same outputs, each
task isolated from the next, a failure failing as it does in a fresh interpreter, and a clear
message when the kfp entry points this runner relies on change.
"""

# no `from __future__ import annotations`: KFP reads the components' annotations as types
import os
from pathlib import Path
from typing import Any

import pytest
from kfp import dsl, local
from kfp.dsl import Artifact, Input, Output

from tlops.runner import warm


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def leave_marks(out: Output[Artifact]) -> None:
    """Change what a task could leak into the next: the directory, the environment, a global."""
    import os

    import kfp

    os.chdir("/")
    os.environ["TLOPS_LEAK"] = "leaked"
    kfp.TLOPS_LEAK = "leaked"  # type: ignore[attr-defined]
    with open(out.path, "w") as handle:
        handle.write("marked")


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def read_marks(marks: Input[Artifact]) -> str:
    """What the previous task left: nothing but its output."""
    import os

    import kfp

    with open(marks.path) as handle:
        written = handle.read()
    leaked = [os.environ.get("TLOPS_LEAK"), getattr(kfp, "TLOPS_LEAK", None)]
    return f"{written} {os.getcwd()} {leaked}"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fail() -> None:
    """Raise, as a step that refuses its input does."""
    raise ValueError("a task that fails")


@dsl.pipeline
def marks() -> str:
    """Two tasks, the second reading the first's artifact."""
    first = leave_marks()
    return read_marks(marks=first.outputs["out"]).output  # type: ignore[no-any-return]


def _init(tmp_path: Path) -> None:
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "root"),
        raise_on_error=True,
    )


def test_tasks_give_the_same_outputs_forked_as_in_fresh_interpreters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _init(tmp_path / "stock")
    stock = marks().output
    _init(tmp_path / "warm")
    with warm.forked_tasks():
        forked = marks().output
    assert forked == stock == f"marked {tmp_path} [None, None]"  # nothing leaked, cwd kept
    assert os.getcwd() == str(tmp_path) and "TLOPS_LEAK" not in os.environ
    assert "read-marks" in capsys.readouterr().out  # KFP's own log of the task, as before


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def needs_env() -> None:
    """Fail unless the task's environment has TLOPS_TASK_ENV (as a pod's env would give it)."""
    import os

    if os.environ.get("TLOPS_TASK_ENV") != "given":
        raise ValueError("TLOPS_TASK_ENV is not set")


def test_a_task_environment_variable_reaches_the_forked_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kfp.local refuses .set_env_variable(); its handler passes a task's container env as
    # env_vars, so the command KFP built is run with and without them
    command = _recorded_command(tmp_path, monkeypatch, needs_env)
    assert warm.run_forked(command, {"TLOPS_TASK_ENV": "given"}) == 0
    assert warm.run_forked(command) == 1
    assert "TLOPS_TASK_ENV" not in os.environ  # the task's, not this process's


def test_a_failing_task_fails_with_its_traceback_in_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _init(tmp_path)
    with warm.forked_tasks(), pytest.raises(RuntimeError, match=r"finished with status .*FAILURE"):
        fail()
    out = capsys.readouterr().out
    assert "ValueError: a task that fails" in out and "Traceback" in out


def _recorded_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, component: Any = fail
) -> list[str]:
    """The command KFP's stock subprocess runner builds for a task (run once to see it)."""
    from kfp.local import subprocess_task_handler

    seen: list[list[str]] = []
    original = subprocess_task_handler.run_local_subprocess

    def record(full_command: list[str], env_vars: Any = None) -> int:
        seen.append(list(full_command))
        return original(full_command=full_command, env_vars=env_vars)

    monkeypatch.setattr(subprocess_task_handler, "run_local_subprocess", record)
    _init(tmp_path)
    with pytest.raises(RuntimeError):
        component()
    monkeypatch.setattr(subprocess_task_handler, "run_local_subprocess", original)
    return seen[0]


def test_the_entry_points_it_takes_over_are_kfps_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    command = _recorded_command(tmp_path, monkeypatch)
    task = warm.parse_command(command)  # the layout of kfp's own lightweight command
    assert "def fail() -> None" in task.source and "--function_to_execute" in task.arguments
    warm.check_kfp()  # the pinned kfp is the installed one, with its handler's function


def test_a_changed_kfp_is_named_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    import kfp
    from kfp.local import subprocess_task_handler

    with pytest.raises(warm.EntryPointChanged, match="does not have the layout"):
        warm.parse_command(["python3", "-m", "kfp.dsl.executor_main", "--executor_input", "{}"])
    monkeypatch.setattr(kfp, "__version__", "2.99.0")
    with pytest.raises(warm.EntryPointChanged, match=r"written against kfp 2\.17\.0, kfp 2\.99\.0"):
        warm.check_kfp()
    monkeypatch.setattr(kfp, "__version__", warm.KFP_VERSION)
    monkeypatch.delattr(subprocess_task_handler, "run_local_subprocess")
    with pytest.raises(warm.EntryPointChanged, match="run_local_subprocess is gone"):
        warm.check_kfp()


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def meet(here: str, there: str, marks: Output[Artifact]) -> None:
    """Leave a mark at ``here``, then wait for one at ``there``: only tasks side by side meet."""
    import time
    from pathlib import Path

    Path(here).touch()
    deadline = time.monotonic() + 120  # generous: a loaded machine still meets, a chain never
    while not Path(there).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{there} never appeared: the tasks did not run side by side")
        time.sleep(0.05)
    with open(marks.path, "w") as handle:
        handle.write(here)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def join(left: Input[Artifact], right: Input[Artifact]) -> str:
    """What both branches wrote."""
    with open(left.path) as first, open(right.path) as second:
        return f"{first.read()} {second.read()}"


def test_independent_tasks_run_side_by_side_and_join(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")

    @dsl.pipeline
    def branches() -> str:
        left = meet(here=a, there=b)
        right = meet(here=b, there=a)
        return join(  # type: ignore[no-any-return]
            left=left.outputs["marks"], right=right.outputs["marks"]
        ).output

    _init(tmp_path)
    with warm.forked_tasks(side_by_side=2):
        assert branches().output == f"{a} {b}"
    out = capsys.readouterr().out
    # each task's lines are prefixed by its name, so interleaved output stays readable
    assert "    [meet] [KFP Executor" in out and "    [meet-2] [KFP Executor" in out
    assert "    [join] [KFP Executor" in out


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def note(path: str) -> str:
    """Append this task's mark to ``path`` (the order the tasks ran in)."""
    with open(path, "a") as handle:
        handle.write("ran\n")
    return path


def test_after_a_failure_no_task_starts_and_the_running_ones_finish(tmp_path: Path) -> None:
    log = tmp_path / "ran.txt"

    @dsl.pipeline
    def failing() -> None:
        note(path=str(log))  # beside the failure: it finishes
        failed = fail()
        note(path=str(log)).after(failed)  # downstream of the failure: never starts

    _init(tmp_path)
    with warm.forked_tasks(side_by_side=2), pytest.raises(RuntimeError, match="FAILURE"):
        failing()
    assert log.read_text() == "ran\n"


def test_the_parent_loads_what_it_is_told_and_names_what_it_could_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sys

    _init(tmp_path)
    assert "colorsys" not in sys.modules or sys.modules.pop("colorsys")
    preloaded = ("colorsys", "tlops_no_such_module")
    with warm.forked_tasks(preloaded, side_by_side=2, finish_preload=True):
        assert marks().output.startswith("marked ")
    assert "colorsys" in sys.modules  # loaded here, from the first task's fork on
    assert "could not preload tlops_no_such_module: ModuleNotFoundError" in caplog.text
