"""Benchmark: what running the demo pipeline through KFP's local runner costs beyond the steps.

One run of the full demo pipeline (params.yaml defaults, fresh demo data, a fresh MLflow store
and cache) through ``tlops run``'s KFP SubprocessRunner path. Every step records the seconds its
body took (``time/step_seconds.<step>`` in the MLflow run); the overhead is the wall time of the
whole local run minus their sum: process starts, imports, KFP's executor, MLflow run set-up, logging
and artifact handling. MLflow model logging (``mlflow.pyfunc.log_model`` + registration) is
timed inside register_model. Goals: overhead <= 15% of the wall time, model logging < 3 s.

    .venv/bin/python bench/pipeline_overhead.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe

REPO = Path(__file__).resolve().parents[1]


def one_run(params: Any, work: Path, name: str, uri: str) -> dict[str, float]:
    """One `tlops run` through KFP local: wall time and the MLflow run's metrics."""
    import mlflow
    from pipelines.local import run_local

    started = time.perf_counter()
    run_local(params, work / name, echo=lambda line: print(" ", line, flush=True))
    wall = time.perf_counter() - started
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tlops").experiment_id
    run = client.search_runs([experiment], order_by=["attributes.start_time DESC"])[0]
    return {"wall": wall, **run.data.metrics}


def report(label: str, metrics: dict[str, float]) -> None:
    steps = {
        k.removeprefix("time/step_seconds."): v
        for k, v in metrics.items()
        if k.startswith("time/step_seconds.")
    }
    wall = metrics["wall"]
    compute = sum(steps.values())
    overhead = wall - compute
    print(f"\n{label}: {len(steps)} tasks, wall {wall:.1f} s\n")
    print("| step | own compute (s) |")
    print("|---|---|")
    for name, seconds in steps.items():
        print(f"| {name} | {seconds:.1f} |")
    print(f"| **sum of steps** | **{compute:.1f}** |")
    print(
        f"\noverhead: {overhead:.1f} s = {100 * overhead / wall:.1f}% of the wall time "
        f"(goal: <= 15%); per task {overhead / max(len(steps), 1):.1f} s"
    )
    print(
        f"MLflow model logging + registration: {metrics.get('time/model_logging', 0):.2f} s "
        "(goal: < 3 s)"
    )


def main() -> None:
    from tlops.config import load_params
    from tlops.data.demo import write_demo

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        uri = f"sqlite:///{work / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
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
        # the first run also creates the MLflow store and the decoded-image cache; the second
        # is every later `make run`
        first = one_run(params, work, "first", uri)
        second = one_run(params, work, "second", uri)
    print(f"\nmachine: {describe()}")
    print("demo pipeline through KFP local (SubprocessRunner), params.yaml defaults")
    report("first run (new MLflow store, empty caches)", first)
    report("second run (the same store and caches: every later run)", second)


if __name__ == "__main__":
    main()
