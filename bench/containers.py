"""Benchmark: the component image built here, and the compiled pipeline run in it.

1. **The build** (``infra.containers.build_image``, what ``make image`` runs): cold (the Debian
   base made again by debootstrap, no layer reused: ``podman build --no-cache``), warm (nothing
   changed: every layer reused), and after a new commit (``GIT_SHA`` changes: the application
   layers only). The image's size as podman reports it.
2. **The pipeline against the production topology on loopback** (``infra.prod_local``:
   PostgreSQL, S3, MLflow server with auth; the demo data, drop 1, pulled from the DVC remote),
   tiny settings (2 epochs at 32 px), in interleaved rounds, each the whole ``tlops run`` command
   as ``make prod-local`` runs it: ``--runner docker`` (KFP's DockerRunner through podman's
   Docker API: every task a container of the image), ``--runner subprocess`` (KFP's stock
   runner: a fresh interpreter per task) and the default warm runner. A run's overhead is its
   wall time minus the seconds its steps' bodies took (``time/step_seconds.*`` in its MLflow
   run), per task.
3. **A task's cold start in its container**: from KFP's ``Executing task`` line (this
   process's clock) to the task's first line in its container (the KFP executor's first log
   line, the container's clock: the same machine), per task of the docker runs.

    .venv/bin/python bench/containers.py | tee bench/results/containers.txt
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from machine import describe
from pipeline_overhead import steps_of

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from infra.containers import api_service, build_image, default_tag  # noqa: E402
from infra.prod_local import PIPELINE_USER, TINY, Topology  # noqa: E402

ROUNDS = 2
RUNNERS = ("docker", "subprocess", "warm")
_EXECUTING = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - INFO - Executing task '([\w-]+)'")
_FIRST = re.compile(r"\[KFP Executor (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) INFO\]")


def builds(tag: str) -> tuple[list[tuple[str, float]], int]:
    """Cold, warm and after-a-commit build times (seconds)."""
    cold = build_image(tag, quiet=True, cold=True)
    warm = build_image(tag, quiet=True)
    commit = build_image(tag, quiet=True, commit="0" * 40)
    build_image(tag, quiet=True)  # back to this checkout's commit (its layers are cached)
    return [
        ("cold (debootstrap base + every layer)", cold.seconds),
        ("warm (nothing changed)", warm.seconds),
        ("after a new commit (application layers)", commit.seconds),
    ], cold.size_bytes


def cold_starts(log: Path) -> dict[str, float]:
    """Per task: seconds from KFP's ``Executing task`` to the container's first line.

    KFP logs this process's local time of day; the container logs UTC with its date (no TZ is
    set in the image): the local times are moved to UTC, across midnight too.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text())
    offset = datetime.now().astimezone().utcoffset() or timedelta(0)
    day = None
    started: dict[str, datetime] = {}
    found: dict[str, float] = {}
    task = None
    for line in text.splitlines():
        executing = _EXECUTING.match(line)
        if executing:
            task = executing.group(2)
            started[task] = datetime.strptime(executing.group(1), "%H:%M:%S.%f")
            continue
        first = _FIRST.search(line)
        if first and task is not None and task not in found:
            at = datetime.strptime(first.group(1), "%Y-%m-%d %H:%M:%S,%f")
            day = day or at.date()
            begun = datetime.combine(day, started[task].time()) - offset
            seconds = (at - begun).total_seconds()
            # a start just before midnight (UTC) and a first line just after, or the reverse
            found[task] = seconds - 86400 * round(seconds / 86400)
    return found


def one_run(topo: Topology, repo: Path, runner: str, host: str) -> dict[str, Any]:
    """The whole ``tlops run`` as ``make prod-local`` runs it: wall, steps, tasks, cold starts."""
    from mlflow import MlflowClient

    started = time.perf_counter()
    if runner == "docker":
        done = topo.run_pipeline(repo, TINY, docker_host=host)
    else:
        done = topo.run_pipeline(repo, TINY, runner=runner)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{runner} run failed:\n{done.stdout}\n{done.stderr}")
    os.environ["MLFLOW_TRACKING_USERNAME"] = PIPELINE_USER
    os.environ["MLFLOW_TRACKING_PASSWORD"] = topo.secrets["pipeline_password"]
    client = MlflowClient(tracking_uri=topo.tracking_uri)
    experiment = client.get_experiment_by_name("tlops").experiment_id
    run = client.search_runs([experiment], order_by=["attributes.start_time DESC"])[0]
    steps = steps_of(run.data.metrics)
    tasks = done.stdout.count("finished with status SUCCESS")
    log = topo.state / "pod" / "run" / "kfp.log"
    starts = cold_starts(log) if runner == "docker" else {}
    return {"wall": wall, "steps": steps, "tasks": tasks, "starts": starts,
            "accuracy": run.data.metrics.get("test/accuracy")}  # fmt: skip


def cell(values: list[float], digits: int = 1) -> str:
    return (
        f"{statistics.median(values):.{digits}f} ({', '.join(f'{v:.{digits}f}' for v in values)})"
    )


def report(runs: dict[str, list[dict[str, Any]]]) -> None:
    print(f"\n| per run (median of {ROUNDS} rounds; each round in parentheses) | "
          + " | ".join(f"--runner {r}" for r in RUNNERS) + " |")  # fmt: skip
    print("|---" * (len(RUNNERS) + 1) + "|")
    sums = {r: [sum(x["steps"].values()) for x in runs[r]] for r in RUNNERS}
    walls = {r: [x["wall"] for x in runs[r]] for r in RUNNERS}
    over = {r: [w - s for w, s in zip(walls[r], sums[r], strict=True)] for r in RUNNERS}
    tasks = {r: runs[r][0]["tasks"] for r in RUNNERS}
    rows = [
        ("tasks", {r: str(tasks[r]) for r in RUNNERS}),
        ("sum of the steps' bodies (s)", {r: cell(sums[r]) for r in RUNNERS}),
        ("wall (s)", {r: cell(walls[r]) for r in RUNNERS}),
        ("overhead (s)", {r: cell(over[r]) for r in RUNNERS}),
        ("overhead per task (s)", {r: cell([o / tasks[r] for o in over[r]], 2) for r in RUNNERS}),
        ("test accuracy", {r: cell([x["accuracy"] for x in runs[r]], 4) for r in RUNNERS}),
    ]
    for name, cells in rows:
        print(f"| {name} | " + " | ".join(cells[r] for r in RUNNERS) + " |")
    per_task = {r: statistics.median(over[r]) / tasks[r] for r in RUNNERS}
    print(
        f"\ncontainers cost {per_task['docker'] - per_task['subprocess']:+.2f} s per task against "
        f"KFP's stock runner and {per_task['docker'] - per_task['warm']:+.2f} s against the warm "
        "runner"
    )
    starts: dict[str, list[float]] = {}
    for run in runs["docker"]:
        for task, seconds in run["starts"].items():
            starts.setdefault(task, []).append(seconds)
    print("\na task's cold start in its container (KFP's 'Executing task' to its first line, s)\n")
    print("| task | seconds |")
    print("|---|---|")
    for task, values in starts.items():
        print(f"| {task} | {cell(values, 2)} |")
    every = [v for values in starts.values() for v in values]
    print(f"| **all tasks** | **{statistics.median(every):.2f}** (min {min(every):.2f}, "
          f"max {max(every):.2f}) |")  # fmt: skip


def main() -> None:
    tag = default_tag()
    began = time.perf_counter()
    timings, size = builds(tag)
    state = Path(tempfile.mkdtemp(prefix="tlops-bench-containers-"))
    state.chmod(0o755)
    topo = Topology(state)
    runs: dict[str, list[dict[str, Any]]] = {r: [] for r in RUNNERS}
    try:
        topo.up()
        repo = topo.push_demo_data(drops=1, domains=("target",))
        with api_service(state / "podman") as host:
            one_run(topo, repo, "docker", host)  # untimed: the first run creates the experiment
            for _ in range(ROUNDS):
                for runner in RUNNERS:
                    runs[runner].append(one_run(topo, repo, runner, host))
    finally:
        topo.down()
        shutil.rmtree(state, ignore_errors=True)
    print(f"machine: {describe()}; {(time.perf_counter() - began) / 60:.1f} min")
    print(f"\nimage {tag}: {size / 1e9:.2f} GB (podman's size)\n")
    print("| build | seconds |")
    print("|---|---|")
    for name, seconds in timings:
        print(f"| {name} | {seconds:.0f} |")
    report(runs)


if __name__ == "__main__":
    main()
