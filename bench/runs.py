"""What the transfer-method benchmarks share: the demo data through ingest and validation, and
one row = the pipeline's ``train`` step with some params, scored on the target's test split."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from tlops.config import Params, apply_overrides, load_params
from tlops.data.dataset import load_splits
from tlops.data.demo import write_demo
from tlops.evaluate.scoring import score
from tlops.io import read_json
from tlops.models.init import load_model
from tlops.plugins import Need, needs_of
from tlops.runner.execute import execute
from tlops.steps import spec_of
from tlops.training.strategies.distill import images_per_s

CLASSES = [str(i) for i in range(10)]
REPO = Path(__file__).resolve().parents[1]


def bench_params(work: Path, image_size: int, overrides: dict[str, Any]) -> Params:
    """params.yaml with every store and cache in ``work``, at ``image_size``, numerics pinned.

    Pinned numerics: every row computes the same way, so accuracies and epoch times compare.
    Sets ``MLFLOW_TRACKING_URI`` too (the steps' runs go to the same throwaway store).
    """
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    return load_params(
        REPO / "params.yaml",
        {
            "model.image_size": image_size,
            "extract_features.cache_dir": str(work / "cache"),
            "tracking.tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
            "tracking.artifact_location": str(work / "mlartifacts"),
            "train.numerics": "fp32+channels_last+eager",
            "evaluate.numerics": "fp32+channels_last+eager",
            **overrides,
        },
    )


def prepare(params: Params, work: Path) -> dict[str, int]:
    """Write the demo data, ingest and validate both domains; the training split sizes."""
    write_demo(work / "source", work / "target")
    sizes = {}
    for domain in ("source", "target"):
        with_data = apply_overrides(params, {f"data.{domain}": str(work / domain)})
        ingested, report = work / f"{domain}_ingest", work / f"{domain}_report"
        execute(spec_of("ingest_data"), with_data, {}, {"dataset": ingested}, {"domain": domain})
        execute(spec_of("validate_data"), params, {"dataset": ingested}, {"report": report}, {})
        sizes[domain] = len(load_splits(params, ingested, CLASSES, ("train",))["train"])
    return sizes


def train_and_score(
    params: Params, work: Path, name: str, overrides: dict[str, Any]
) -> dict[str, Any]:
    """The train step with ``overrides``; the model's test and val accuracy and timings."""
    p = apply_overrides(params, overrides)
    out = work / "models" / name
    inputs = {"dataset": work / "target_ingest", "report": work / "target_report"}
    if Need.SOURCE in needs_of(p.train):
        inputs |= {
            "source_dataset": work / "source_ingest",
            "source_report": work / "source_report",
        }
    started = time.perf_counter()
    execute(spec_of("train"), p, inputs, {"model": out}, {"checkpoint_root": str(work / "ckpt")})
    seconds = time.perf_counter() - started
    model = load_model(out / "model.pt")
    splits = load_splits(p, work / "target_ingest", CLASSES, ("val", "test"))
    history = read_json(out / "history.json")
    cpu = torch.device("cpu")
    return {
        "accuracy": float(score(model, splits["test"], p)["overall"]["accuracy"]),
        # beside it, the target val split's: what a user without a test set would tune on
        "val_accuracy": float(score(model, splits["val"], p)["overall"]["accuracy"]),
        "best_epoch": read_json(out / "train.json")["best_epoch"],
        "epochs": len(history),
        # the run's times are in its step record, beside the output (not in the output)
        "epoch_seconds": statistics.median(read_json(out / "step.json")["epoch_seconds"]),
        "seconds": seconds,
        "images_per_s": images_per_s(model, splits["test"], p.evaluate.batch_size, cpu),
        "params": sum(x.numel() for x in model.parameters()),
        "model": str(out / "model.pt"),
    }


def run_rows(
    params: Params, work: Path, rows: dict[str, dict[str, Any]], seeds: int
) -> list[dict[str, Any]]:
    """Every row (name -> overrides) at ``train.seed`` 0..seeds-1, seed by seed; printed as JSON
    lines as they finish (a long run shows its progress)."""
    results: list[dict[str, Any]] = []
    for seed in range(seeds):
        for name, overrides in rows.items():
            result = train_and_score(
                params, work, f"{seed}-{len(results)}", {**overrides, "train.seed": seed}
            )
            results.append({"row": name, "seed": seed, **result})
            print(json.dumps(results[-1]), flush=True)
    return results
