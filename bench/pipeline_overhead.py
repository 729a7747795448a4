"""Benchmark: what running a pipeline locally costs beyond its steps, per task runner.

Every run is the whole ``tlops run`` command in a fresh process, as a user types it, on the demo
data with params.yaml's defaults, in one MLflow store (a first, untimed run creates the store,
the decoded-image cache and the calibration cache, as the first ``make run`` does):

1. **KFP's floor**: a fresh process that imports kfp, builds a no-op pipeline of as many
   lightweight tasks (each passes a string on) and runs it through KFP's stock
   ``SubprocessRunner``. Its wall time per task is what KFP's local runner itself costs.
2. **The demo pipeline** (finetune: ingest_data, validate_data, train, evaluate,
   register_model; a chain), in interleaved rounds: ``tlops run --runner subprocess`` (KFP's
   stock runner: a fresh interpreter per task) and ``tlops run`` (the default warm runner: each
   task forked from the command's process, which loads what the steps import while the first
   tasks run).
3. **A domain-adaptation run** (``-S train.strategy=dan -S train.epochs=1``: the source
   domain's ingest_data and validate_data are independent of the target's; one epoch, since
   what differs is before train), in interleaved rounds: ``tlops run --parallel 1`` (warm, one
   task at a time) and ``tlops run`` (warm, independent tasks side by side on this machine's
   cores).

Every step records the seconds its body took (``time/step_seconds.<step>`` in the MLflow run).
A run's overhead is its wall time minus their sum: process starts, imports that no step body
made, KFP's executor, MLflow run set-up and records, artifact handling, and the command's own
start (params, data versions, compiling the pipeline). With tasks side by side the steps' sum
can exceed the wall time; their overlap is reported, not an overhead. MLflow model logging
(``mlflow.pyfunc.log_model`` + registration) is timed inside register_model. Goals (issue 29):
overhead per task at most 1.5x the floor's, overhead at most 5 % of the wall time, model
logging under 2 s in an existing store.

    .venv/bin/python bench/pipeline_overhead.py | tee bench/results/pipeline_overhead.txt
"""

# no `from __future__ import annotations`: KFP reads the no-op component's annotations as types
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

REPO = Path(__file__).resolve().parents[1]
TLOPS = str(Path(sys.executable).parent / "tlops")
TASKS = 5  # the demo pipeline's: ingest, validate, train, evaluate, register
ROUNDS = 2
DAN = ("-S", "train.strategy=dan", "-S", "train.epochs=1")


def noop_pipeline(root: Path) -> None:
    """KFP's floor, in this (fresh) process: a no-op chain of ``TASKS`` tasks, stock runner."""
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

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    chain()


def floor(work: Path) -> float:
    """Seconds per task of the no-op pipeline, run as a fresh process."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--noop", str(work / "noop")],
        check=True,
        capture_output=True,
    )
    return (time.perf_counter() - started) / TASKS


def tlops_run(work: Path, name: str, *args: str) -> dict[str, float]:
    """``tlops run <args>`` as a fresh process: its wall time and its MLflow run's metrics."""
    import mlflow

    started = time.perf_counter()
    done = subprocess.run(
        [TLOPS, "run", "--out", str(work / name), *args, *overrides(work)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"tlops run {name} failed:\n{done.stdout}\n{done.stderr}")
    client = mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("tlops").experiment_id
    run = client.search_runs([experiment], order_by=["attributes.start_time DESC"])[0]
    return {"wall": wall, **run.data.metrics}


def overrides(work: Path) -> list[str]:
    """The demo data and caches of this benchmark's work directory (``-S`` options)."""
    settings = {
        "data.source": work / "source",
        "data.target": work / "target",
        "extract_features.cache_dir": work / "cache",
        "tracking.artifact_location": work / "mlartifacts",
    }
    return [arg for key, value in settings.items() for arg in ("-S", f"{key}={value}")]


def steps_of(metrics: dict[str, float]) -> dict[str, float]:
    """The steps' own seconds, by task (``ingest_data.target``, ``train``, ...)."""
    return {
        key.removeprefix("time/step_seconds."): value
        for key, value in metrics.items()
        if key.startswith("time/step_seconds.")
    }


def table(title: str, runs: dict[str, list[dict[str, float]]], per_task_floor: float) -> None:
    """Medians over the rounds per runner: the steps, wall, overhead, goal lines."""
    print(f"\n{title} (median of {ROUNDS} rounds; each round's figure in parentheses)\n")
    labels = list(runs)
    print("| | " + " | ".join(labels) + " |")
    print("|---" * (len(labels) + 1) + "|")
    names = list(steps_of(runs[labels[0]][0]))

    def cell(values: list[float], digits: int = 1, bold: bool = False) -> str:
        text = f"{statistics.median(values):.{digits}f}"
        text = f"**{text}**" if bold else text
        return f"{text} ({', '.join(f'{v:.{digits}f}' for v in values)})"

    for name in names:
        cells = [cell([steps_of(r)[name] for r in runs[k]]) for k in labels]
        print(f"| {name} | " + " | ".join(cells) + " |")
    sums = {k: [sum(steps_of(r).values()) for r in runs[k]] for k in labels}
    walls = {k: [r["wall"] for r in runs[k]] for k in labels}
    over = {k: [w - s for w, s in zip(walls[k], sums[k], strict=True)] for k in labels}
    tasks = len(names)
    print("| **sum of steps (s)** | " + " | ".join(cell(sums[k], bold=True) for k in labels) + " |")
    print("| **wall (s)** | " + " | ".join(cell(walls[k], bold=True) for k in labels) + " |")
    print("| overhead (s) | " + " | ".join(cell(over[k]) for k in labels) + " |")
    print(
        "| overhead per task (s) | "
        + " | ".join(cell([o / tasks for o in over[k]], 2) for k in labels)
        + " |"
    )
    print(
        "| overhead / wall (%) | "
        + " | ".join(
            cell([100 * o / w for o, w in zip(over[k], walls[k], strict=True)]) for k in labels
        )
        + " |"
    )
    print(
        "| MLflow model logging + registration (s) | "
        + " | ".join(cell([r.get("time/model_logging", 0.0) for r in runs[k]], 2) for k in labels)
        + " |"
    )
    for k in labels:
        per_task = statistics.median(over[k]) / tasks
        share = statistics.median([o / w for o, w in zip(over[k], walls[k], strict=True)])
        logging = statistics.median([r.get("time/model_logging", 0.0) for r in runs[k]])
        print(
            f"- {k}: overhead per task {per_task:.2f} s = {per_task / per_task_floor:.1f}x the "
            f"floor (goal <= 1.5x): {'met' if per_task <= 1.5 * per_task_floor else 'not met'}; "
            f"{100 * share:.1f} % of the wall time (goal <= 5 %): "
            f"{'met' if share <= 0.05 else 'not met'}; model logging {logging:.2f} s (goal < 2 s): "
            f"{'met' if logging < 2 else 'not met'}"
        )


def main() -> None:
    from tlops.data.demo import write_demo

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        write_demo(work / "source", work / "target")
        floors = [floor(work) for _ in range(3)]
        per_task_floor = statistics.median(floors)
        tlops_run(work, "first", "--runner", "subprocess")  # store and caches, as a first run
        tlops_run(work, "first-dan", *DAN)
        Runs = dict[str, list[dict[str, float]]]
        demo: Runs = {"--runner subprocess (stock)": [], "warm": []}
        dan: Runs = {"warm --parallel 1": [], "warm (side by side)": []}
        for index in range(ROUNDS):
            demo["--runner subprocess (stock)"].append(
                tlops_run(work, f"stock-{index}", "--runner", "subprocess")
            )
            demo["warm"].append(tlops_run(work, f"warm-{index}"))
            dan["warm --parallel 1"].append(
                tlops_run(work, f"dan-one-{index}", "--parallel", "1", *DAN)
            )
            dan["warm (side by side)"].append(tlops_run(work, f"dan-side-{index}", *DAN))
    print(f"machine: {describe()}; {(time.perf_counter() - started) / 60:.1f} min")
    print(
        f"KFP's floor: a fresh process running a no-op pipeline of {TASKS} tasks, "
        f"{per_task_floor:.2f} s per task (median of {', '.join(f'{f:.2f}' for f in floors)})"
    )
    table("demo pipeline (finetune)", demo, per_task_floor)
    table("domain adaptation (" + " ".join(DAN) + ")", dan, per_task_floor)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--noop"]:
        noop_pipeline(Path(sys.argv[2]))
    else:
        main()
