"""Benchmark: does bf16 training reach fp32's test accuracy? Side by side, 5 seeds, 2 models.

Each model trained per seed on the demo's target data with ``train.numerics: fp32``,
``bf16`` (autocast everywhere) and ``bf16-frozen`` (bf16 in the frozen stages, fp32 in the
ones that train: :mod:`tlops.models.mixed`), pinned, so they run even where bf16 is emulated
and slow; the same seed, batches and schedule (params.yaml's ``train``, early stopping
included), then both scored in fp32 on the UCI digits test split:

* ``EfficientNet-Lite0``: the demo's fine-tuning (``finetune`` from its ImageNet weights);
* ``ResNet-18``: ``scratch`` (torchvision's ResNet-18 from random init: its ImageNet weights
  are not on this machine), every layer trained.

A control run per seed is fp32 as well, only in the other memory layout (contiguous instead
of channels-last: the same arithmetic summed in another order). Its difference from the fp32
run is what rounding alone does to a 64-image-batch training: the noise floor any precision
comparison on one seed stands on.

Goal (per model and reduced precision): its mean test accuracy within 0.35 points (one test
image of ~284) of
fp32's, and no seed more than 1.0 point below. ``--record`` writes the verdicts to the
accuracy evidence ``train.numerics: auto`` reads (:mod:`tlops.models.evidence`).

    .venv/bin/python bench/numerics_accuracy.py [--models ResNet-18] [--seeds 0 1 2 3 4]
    .venv/bin/python bench/numerics_accuracy.py --show   # the last results, no training
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

from machine import describe
from tlops.config import Params, apply_overrides, load_params
from tlops.data.dataset import load_splits
from tlops.data.demo import write_demo
from tlops.models.evidence import MEAN_POINTS, SEED_POINTS
from tlops.models.inference import predict_logits
from tlops.models.init import create_model
from tlops.models.numerics import Numerics, parse
from tlops.runner.execute import execute
from tlops.runtime import seed_everything
from tlops.steps import spec_of
from tlops.training.loop import fit
from tlops.training.strategies import TrainData, get_strategy

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CLASSES = [str(i) for i in range(10)]
# name -> (model.backbone, strategy): the strategy says whether the weights are pretrained
MODELS = {
    "EfficientNet-Lite0": ("timm:tf_efficientnet_lite0", "finetune"),
    "ResNet-18": ("torchvision:resnet18", "scratch"),
}
# points: bf16's mean at most one test image below fp32's; no seed more than 1.0 below
# what each run computes in; "control" is fp32 too, summed in another order (contiguous
# memory): how far two runs apart only by rounding land, which no precision can beat
RUNS = {
    "fp32": "fp32",
    "bf16": "bf16",
    "bf16-frozen": "bf16-frozen",
    "control": "fp32+contiguous+eager",
}
REDUCED = ("bf16", "bf16-frozen")  # what is judged against fp32 (and recorded)
MEAN_TOLERANCE, SEED_TOLERANCE = MEAN_POINTS, SEED_POINTS


def _data(params: Params, work: Path) -> tuple[TrainData, Any]:
    """The demo's target splits, ingested as the pipeline does."""
    write_demo(work / "source", work / "target")
    with_data = apply_overrides(params, {"data.target": str(work / "target")})
    execute(
        spec_of("ingest_data"), with_data, {}, {"dataset": work / "ingest"}, {"domain": "target"}
    )
    splits = load_splits(params, work / "ingest", CLASSES, ("train", "val", "test"))
    return TrainData(CLASSES, splits["train"], splits["val"]), splits["test"]


def _train(
    params: Params, name: str, seed: int, precision: str, data: TrainData, test: Any, work: Path
) -> dict[str, Any]:
    """One training run, scored in fp32 on the test split."""
    backbone, strategy = MODELS[name]
    cfg = params.train.model_copy(update={"seed": seed, "strategy": strategy})
    cpu = torch.device("cpu")
    seed_everything(seed)
    model = create_model(
        backbone, CLASSES, pretrained=strategy != "scratch", dropout=params.model.dropout
    )
    started = time.perf_counter()
    outcome = fit(
        get_strategy(cfg),
        model,
        data,
        cfg,
        work / f"ckpt-{name}-{seed}-{precision}",
        f"{name}-{seed}-{precision}",
        cpu,
        None,
        parse(RUNS[precision]) or Numerics(),
    )
    logits = predict_logits(model, test, 256, cpu)
    return {
        "accuracy": 100 * float((logits.argmax(1).numpy() == test.labels).mean()),
        "seconds": time.perf_counter() - started,
        "epochs": len(outcome.history),
        "best_epoch": outcome.best_epoch,
        "fallback": outcome.fallback,
    }


def _verdict(rows: list[dict[str, Any]], precision: str) -> dict[str, Any]:
    diffs = [r[precision]["accuracy"] - r["fp32"]["accuracy"] for r in rows]
    mean = statistics.mean(diffs)
    worst = min(diffs)
    return {
        "mean_points": round(mean, 2),
        "worst_points": round(worst, 2),
        "seeds": [r["seed"] for r in rows],
        "holds": mean >= -MEAN_TOLERANCE and worst >= -SEED_TOLERANCE,
    }


def _print_model(name: str, rows: list[dict[str, Any]], verdicts: dict[str, Any]) -> None:
    print(f"\n### {name}\n")
    runs = list(RUNS)
    print(
        "| seed | fp32 test acc % | "
        + " | ".join(f"{k} (- fp32)" for k in runs[1:])
        + " | epochs "
        + "/".join(runs)
        + " | seconds "
        + "/".join(runs)
        + " |"
    )
    print("|---" * (len(runs) + 3) + "|")
    for r in rows:
        f = r["fp32"]["accuracy"]
        cells = [f"{r[k]['accuracy']:.2f} ({r[k]['accuracy'] - f:+.2f})" for k in runs[1:]]
        epochs = "/".join(str(r[k]["epochs"]) for k in runs)
        seconds = "/".join(f"{r[k]['seconds']:.0f}" for k in runs)
        print(f"| {r['seed']} | {f:.2f} | " + " | ".join(cells) + f" | {epochs} | {seconds} |")
    mean = {k: statistics.mean(r[k]["accuracy"] for r in rows) for k in RUNS}
    print(f"\n{name}: mean test accuracy " + ", ".join(f"{k} {v:.2f} %" for k, v in mean.items()))
    for precision, verdict in verdicts.items():
        fallbacks = sum(1 for r in rows if r[precision]["fallback"])
        print(
            f"{name} {precision}: mean {verdict['mean_points']:+.2f} points from fp32 "
            f"(goal >= -{MEAN_TOLERANCE}), worst seed {verdict['worst_points']:+.2f} "
            f"(goal >= -{SEED_TOLERANCE}): {'met' if verdict['holds'] else 'NOT met'}; "
            f"fallbacks to fp32: {fallbacks}"
        )
    control = [r["control"]["accuracy"] - r["fp32"]["accuracy"] for r in rows]
    print(
        f"{name} control (fp32 in the other layout): mean {statistics.mean(control):+.2f}, "
        f"per seed {min(control):+.2f} to {max(control):+.2f} points from fp32"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--record", action="store_true", help="write the verdicts to tlops' accuracy evidence"
    )
    parser.add_argument(
        "--show",
        action="store_true",
        help="print the tables of the last run (bench/results/numerics_accuracy.json), no training",
    )
    args = parser.parse_args()
    out = RESULTS / "numerics_accuracy.json"
    if args.show:
        last = json.loads(out.read_text())
        print(f"machine: {last['machine']}")
        for name, result in last["results"].items():
            _print_model(name, result["rows"], result["verdicts"])
        return
    started = time.perf_counter()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = load_params(REPO / "params.yaml", {"extract_features.cache_dir": str(work)})
        data, test = _data(params, work)
        for name in args.models:
            rows = []
            for seed in args.seeds:
                row = {"seed": seed}
                for precision in RUNS:
                    row[precision] = _train(params, name, seed, precision, data, test, work)
                rows.append(row)
                print(f"done: {name} seed {seed}: {row}", flush=True)
            verdicts = {p: _verdict(rows, p) for p in REDUCED}
            results[name] = {"rows": rows, "verdicts": verdicts}
    minutes = (time.perf_counter() - started) / 60
    print(f"\nmachine: {describe()}; {minutes:.1f} min")
    print(f"{len(data.train_labels())} training images, {len(test)} test images, 64 px")
    for name, result in results.items():
        _print_model(name, result["rows"], result["verdicts"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": describe(), "results": results}, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(REPO)}")
    if args.record:
        from tlops.models.evidence import record

        for name, result in results.items():
            for precision, found in result["verdicts"].items():
                verdict = {**found, "machine": describe(), "date": str(date.today())}
                path = record(MODELS[name][0], precision, verdict)
        print(f"recorded the verdicts in {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
