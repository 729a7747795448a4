"""Benchmark: what a scheduled retraining check costs, next to the training run it can save.

On the demo data (drops 1 and 2, params.yaml defaults, a fresh MLflow store and caches):

1. a full training run (``tlops run``: the training pipeline through KFP local) makes the
   champion;
2. side by side, in interleaved rounds: ``tlops step detect_change`` as a fresh process (as a
   pod task runs it) with **nothing new** (the data is the champion's), the same check on data
   with **drop 3 added** and a warm feature cache (the case of a check that finds new images a
   second time), and the full training run again. The first check on drop 3 (cold cache: its
   new images embedded in the champion's feature space) is reported on its own.
   Goals: the check with nothing new <= 15 s and <= 10 % of the training run.
3. the drift test alone as the reference set grows 1x -> 10x (200 -> 2,000 reference images
   against 200 new, 1,280-wide features like EfficientNet-Lite0's, 1,000 permutations): the
   exact test on every point, and with the default cap of 1,000 points a side.

    .venv/bin/python bench/retraining.py | tee bench/results/retraining.txt
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 3


def check(work: Path, params_file: Path, dataset: Path, report: Path, name: str) -> dict[str, Any]:
    """``tlops step detect_change`` in a fresh process: wall time and the step's own record."""
    out = work / "checks" / name
    started = time.perf_counter()
    subprocess.run(
        [
            str(Path(sys.executable).parent / "tlops"),
            "step",
            "detect_change",
            "--dataset",
            str(dataset),
            "--report",
            str(report),
            "--change",
            str(out),
            "--params",
            str(params_file),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    change = json.loads((out / "change.json").read_text())
    return {"wall": wall, "step": change["seconds"], "change": change}


def training_run(params: Any, work: Path, name: str) -> float:
    from pipelines.local import run_local

    started = time.perf_counter()
    run_local(params, work / name, echo=lambda line: None)
    return time.perf_counter() - started


def drift_scaling() -> list[tuple[int, float, float]]:
    import numpy as np

    from tlops.evaluate.drift import mmd_test

    rng = np.random.default_rng(0)
    new = rng.standard_normal((200, 1280)).astype(np.float32)
    rows = []
    for n in (200, 500, 1000, 2000):
        ref = rng.standard_normal((n, 1280)).astype(np.float32)
        exact = min(_timed(mmd_test, ref, new, 1000, 0, None) for _ in range(3))
        capped = min(_timed(mmd_test, ref, new, 1000, 0, 1000) for _ in range(3))
        rows.append((n, exact, capped))
    return rows


def _timed(action: Any, *args: Any) -> float:
    started = time.perf_counter()
    action(*args)
    return time.perf_counter() - started


def main() -> None:
    import yaml

    from tlops.config import load_params
    from tlops.data.demo import write_demo
    from tlops.runner.execute import execute
    from tlops.steps import spec_of

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        write_demo(work / "source", work / "target", drops=2)
        write_demo(work / "source", work / "target3", drops=3)
        overrides = {
            "data": {"source": str(work / "source"), "target": str(work / "target")},
            "extract_features": {"cache_dir": str(work / "cache")},
            "tracking": {"artifact_location": str(work / "mlartifacts")},
        }
        raw = yaml.safe_load((REPO / "params.yaml").read_text())
        for section, values in overrides.items():
            raw[section].update(values)
        params_file = work / "params.yaml"
        params_file.write_text(yaml.safe_dump(raw))
        params = load_params(params_file)
        first_training = training_run(params, work, "train-0")
        print(f"first training run (makes the champion): {first_training:.1f} s", flush=True)
        runs = sorted((work / "train-0" / "kfp").glob("*/"))
        dataset = next(runs[-1].glob("ingest-data/dataset"))
        report = next(runs[-1].glob("validate-data/report"))
        # drop 3 added: ingested and validated once, as the retraining pipeline would
        with3 = load_params(params_file, {"data.target": str(work / "target3")})
        execute(spec_of("ingest_data"), with3, {}, {"dataset": work / "d3"}, {"domain": "target"})
        execute(spec_of("validate_data"), with3, {"dataset": work / "d3"}, {"report": work / "r3"})
        cold = check(work, params_file, work / "d3", work / "r3", "cold")
        print(f"first check on drop 3 (cold cache): {cold['wall']:.1f} s", flush=True)
        same: list[dict[str, Any]] = []
        warm: list[dict[str, Any]] = []
        trainings: list[float] = []
        for index in range(ROUNDS):
            same.append(check(work, params_file, dataset, report, f"same-{index}"))
            warm.append(check(work, params_file, work / "d3", work / "r3", f"warm-{index}"))
            trainings.append(training_run(params, work, f"train-{index + 1}"))
            print(
                f"round {index + 1}: check (nothing new) {same[-1]['wall']:.1f} s, check "
                f"(drop 3, warm) {warm[-1]['wall']:.1f} s, training run {trainings[-1]:.1f} s",
                flush=True,
            )
        scaling = drift_scaling()

    def cell(values: list[float]) -> str:
        return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"

    train_median = statistics.median(trainings)
    print(f"\nmachine: {describe()}")
    print(f"demo drops 1-2 (champion's data), params.yaml defaults, {ROUNDS} interleaved rounds\n")
    print(
        "| what | wall s (min / median / max) | step's own s (median) | share of a training run |"
    )
    print("|---|---|---|---|")
    for label, rows in (
        ("check, nothing new", same),
        ("check, drop 3 added, warm feature cache", warm),
    ):
        walls = [r["wall"] for r in rows]
        print(
            f"| {label} | {cell(walls)} | {statistics.median(r['step'] for r in rows):.2f} | "
            f"{100 * statistics.median(walls) / train_median:.1f} % |"
        )
    print(
        f"| check, drop 3 added, cold cache (once) | {cold['wall']:.1f} | "
        f"{cold['step']:.2f} | {100 * cold['wall'] / train_median:.1f} % |"
    )
    print(f"| full training run (`tlops run`) | {cell(trainings)} | - | 100 % |")
    decision = warm[-1]["change"]
    drift = decision["drift"]
    print(
        f"\ndrop 3 check: retrain={decision['retrain']}, {decision['reasons'][0]}; drift "
        f"p={drift['p_value']:.4f} on {drift['n_new']} new vs {drift['n_reference']} reference"
    )
    info = cold["change"]["drift_info"]
    print(
        f"cold check embedded {info.get('embedded')} images in "
        f"{info.get('embed_seconds', 0):.1f} s; the MMD test took "
        f"{info.get('test_seconds', 0):.2f} s"
    )
    goal = statistics.median(r["wall"] for r in same)
    print(
        f"goal: check with nothing new <= 15 s and <= 10 % of a training run: {goal:.1f} s, "
        f"{100 * goal / train_median:.1f} %"
    )
    print("\ndrift test alone, 200 new images, 1,280-wide features, 1,000 permutations:\n")
    print("| reference images | scale | exact test s | capped at 1,000 a side s |")
    print("|---|---|---|---|")
    for n, exact, capped in scaling:
        print(f"| {n} | {n / 200:.1f}x | {exact:.2f} | {capped:.2f} |")


if __name__ == "__main__":
    main()
