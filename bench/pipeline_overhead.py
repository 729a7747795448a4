"""Benchmark: what running the demo pipeline through KFP's local runner costs beyond the steps.

In one process, on one machine:

1. KFP's floor: a no-op pipeline of as many tasks as the demo's (five lightweight components
   that pass a string on), through KFP's stock ``SubprocessRunner``: what KFP's local runner
   itself costs per task (an interpreter, kfp's import, the executor).
2. The demo pipeline (params.yaml defaults, fresh demo data, a fresh MLflow store and cache) as
   ``tlops run --runner subprocess`` runs it (KFP's stock runner: a fresh interpreter per task),
   then as ``tlops run`` runs it by default (``--runner warm``: each task forked from this
   process, which imports what the steps need once), in the same store, after the first run.

Every step records the seconds its body took (``time/step_seconds.<step>`` in the MLflow run);
a run's overhead is its wall time minus their sum: process starts, imports, KFP's executor,
MLflow run set-up, logging and artifact handling. MLflow model logging (``mlflow.pyfunc.log_model``
+ registration) is timed inside register_model. Goals (issue 29): overhead per task at most
1.5x the floor's, overhead at most 5 % of the wall time, model logging under 2 s.

    .venv/bin/python bench/pipeline_overhead.py
"""

# no `from __future__ import annotations`: KFP reads the no-op component's annotations as types
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe

REPO = Path(__file__).resolve().parents[1]
TASKS = 5  # the demo pipeline's: ingest, validate, train, evaluate, register


def floor(work: Path) -> float:
    """Seconds per task of a no-op pipeline of ``TASKS`` tasks through KFP's stock runner."""
    from kfp import dsl, local

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def noop(text: str) -> str:
        return text

    @dsl.pipeline
    def chain(text: str = "x") -> str:
        task = noop(text=text)
        for _ in range(TASKS - 1):
            task = noop(text=task.output)
        return task.output  # type: ignore[no-any-return]

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "noop"))
    started = time.perf_counter()
    chain()
    return (time.perf_counter() - started) / TASKS


def one_run(params: Any, work: Path, name: str, uri: str, runner: str) -> dict[str, float]:
    """One `tlops run` through KFP local: wall time and the MLflow run's metrics."""
    import mlflow
    from pipelines.local import run_local

    started = time.perf_counter()
    run_local(params, work / name, echo=lambda line: print(" ", line, flush=True), runner=runner)
    wall = time.perf_counter() - started
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tlops").experiment_id
    run = client.search_runs([experiment], order_by=["attributes.start_time DESC"])[0]
    return {"wall": wall, **run.data.metrics}


def report(label: str, metrics: dict[str, float], per_task_floor: float) -> None:
    """The run's steps, its overhead against the floor, and the goal lines."""
    steps = {
        k.removeprefix("time/step_seconds."): v
        for k, v in metrics.items()
        if k.startswith("time/step_seconds.")
    }
    wall = metrics["wall"]
    compute = sum(steps.values())
    overhead = wall - compute
    per_task = overhead / max(len(steps), 1)
    logging = metrics.get("time/model_logging", 0.0)
    print(f"\n{label}: {len(steps)} tasks, wall {wall:.1f} s\n")
    print("| step | own compute (s) |")
    print("|---|---|")
    for name, seconds in steps.items():
        print(f"| {name} | {seconds:.1f} |")
    print(f"| **sum of steps** | **{compute:.1f}** |")
    print(f"\noverhead: {overhead:.1f} s, {per_task:.1f} s per task")
    print(
        f"- per task {per_task / per_task_floor:.2f}x the floor (goal <= 1.5x): "
        f"{'met' if per_task <= 1.5 * per_task_floor else 'not met'}"
    )
    print(
        f"- {100 * overhead / wall:.1f}% of the wall time (goal <= 5%): "
        f"{'met' if overhead <= 0.05 * wall else 'not met'}"
    )
    print(
        f"- MLflow model logging + registration {logging:.2f} s (goal < 2 s): "
        f"{'met' if logging < 2 else 'not met'}"
    )


def main() -> None:
    from tlops.config import load_params
    from tlops.data.demo import write_demo

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        uri = f"sqlite:///{work / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        per_task_floor = floor(work)
        write_demo(work / "source", work / "target")
        params = load_params(
            REPO / "params.yaml",
            {
                "data.source": str(work / "source"),
                "data.target": str(work / "target"),
                "extract_features.cache_dir": str(work / "cache"),
                "tracking.artifact_location": str(work / "mlartifacts"),
            },
        )
        # the first run also creates the MLflow store and the decoded-image cache; both runs
        # after it find them, as every later `make run` does
        one_run(params, work, "warm-up", uri, "subprocess")
        stock = one_run(params, work, "stock", uri, "subprocess")
        warm = one_run(params, work, "warm", uri, "warm")
    print(f"\nmachine: {describe()}")
    print(f"KFP's floor: a no-op pipeline of {TASKS} tasks, {per_task_floor:.2f} s per task")
    report("demo pipeline, --runner subprocess (KFP's stock runner)", stock, per_task_floor)
    report("demo pipeline, --runner warm (the default)", warm, per_task_floor)


if __name__ == "__main__":
    main()
