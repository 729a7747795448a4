"""Benchmark: what running the demo pipeline through KFP's local runner costs beyond the steps.

One run of the full demo pipeline (params.yaml defaults, fresh demo data, a fresh MLflow store
and cache) through ``tlops run``'s KFP SubprocessRunner path. Each component logs the seconds
its step body took (``step_seconds.<step>`` in the MLflow run); the overhead is the wall time of
the whole local run minus their sum: process starts, imports, KFP's executor, logging and
artifact handling. MLflow model logging (``mlflow.pytorch.log_model`` + registration) is timed
inside register_model.

    .venv/bin/python bench/pipeline_overhead.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from machine import describe

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import mlflow
    from pipelines.local import run_local

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
        started = time.perf_counter()
        local = run_local(params, work / "run", echo=lambda line: print(" ", line, flush=True))
        wall = time.perf_counter() - started
        client = mlflow.MlflowClient(tracking_uri=uri)
        run = client.search_runs([client.get_experiment_by_name("tlops").experiment_id])[0]
        metrics = run.data.metrics
    steps = {
        k.removeprefix("step_seconds."): v
        for k, v in metrics.items()
        if k.startswith("step_seconds.")
    }
    compute = sum(steps.values())
    overhead = wall - compute
    print(f"\nmachine: {describe()}")
    print(
        f"demo pipeline through KFP local (SubprocessRunner), {len(steps)} tasks, "
        f"wall {wall:.1f} s (run_local reported {local.seconds:.1f} s)\n"
    )
    print("| step | own compute (s) |")
    print("|---|---|")
    for name, seconds in steps.items():
        print(f"| {name} | {seconds:.1f} |")
    print(f"| **sum of steps** | **{compute:.1f}** |")
    print(
        f"\noverhead: {overhead:.1f} s = {100 * overhead / wall:.1f}% of the total "
        f"(target: < 25% and < 30 s); per task {overhead / max(len(steps), 1):.1f} s"
    )
    print(
        f"MLflow model logging + registration: {metrics.get('model_logging_seconds', 0):.2f} s "
        "(target: < 3 s)"
    )


if __name__ == "__main__":
    main()
