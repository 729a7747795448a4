"""Benchmark: does bf16 fine-tuning reach fp32's test accuracy? Side by side, several seeds.

The demo's default fine-tuning (EfficientNet-Lite0 with its ImageNet weights, 64 px, the
params.yaml schedule) trained twice per seed, once with ``train.numerics: fp32`` and once with
``bf16`` (autocast; pinned, so it runs even where bf16 is emulated and slow), then both scored
in fp32 on the UCI digits test split. The tolerance: the two agree within 1.0 point of test
accuracy on every seed (the test split has ~280 images: one image is ~0.35 points).

    .venv/bin/python bench/numerics_accuracy.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from machine import describe
from tlops.config import apply_overrides, load_params
from tlops.data.dataset import load_splits
from tlops.data.demo import write_demo
from tlops.models.device import bf16_units
from tlops.models.inference import predict_logits
from tlops.models.init import create_model
from tlops.models.numerics import Numerics
from tlops.runner.execute import execute
from tlops.runtime import seed_everything
from tlops.steps import spec_of
from tlops.training.loop import fit
from tlops.training.strategies import TrainData, get_strategy

REPO = Path(__file__).resolve().parents[1]
CLASSES = [str(i) for i in range(10)]
TOLERANCE = 1.0  # points of test accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    cpu = torch.device("cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = load_params(REPO / "params.yaml", {"extract_features.cache_dir": str(work)})
        write_demo(work / "source", work / "target")
        with_data = apply_overrides(params, {"data.target": str(work / "target")})
        execute(
            spec_of("ingest_data"),
            with_data,
            {},
            {"dataset": work / "ingest"},
            {"domain": "target"},
        )
        splits = load_splits(params, work / "ingest", CLASSES, ("train", "val", "test"))
        data = TrainData(CLASSES, splits["train"], splits["val"])
        test = splits["test"]
        for seed in args.seeds:
            cfg = params.train.model_copy(update={"seed": seed})
            row: dict[str, float | str] = {"seed": seed}
            for precision in ("fp32", "bf16"):
                seed_everything(seed)
                model = create_model(params.model.backbone, CLASSES, dropout=params.model.dropout)
                started = time.perf_counter()
                outcome = fit(
                    get_strategy(cfg),
                    model,
                    data,
                    cfg,
                    work / f"ckpt-{seed}-{precision}",
                    f"{seed}-{precision}",
                    cpu,
                    None,
                    Numerics(precision),
                )
                logits = predict_logits(model, test, 256, cpu)
                accuracy = float((logits.argmax(1).numpy() == test.labels).mean())
                row[precision] = 100 * accuracy
                row[f"{precision}_s"] = time.perf_counter() - started
                row[f"{precision}_epochs"] = len(outcome.history)
                row[f"{precision}_fallback"] = outcome.fallback or "-"
            rows.append(row)
            print(f"done: seed {seed}: {row}", flush=True)
    print(f"\nmachine: {describe()}; bf16 units: {bf16_units(cpu)}")
    print(f"{len(data.train_labels())} training images, {len(test)} test images, 64 px\n")
    print("| seed | fp32 test acc % | bf16 test acc % | bf16 - fp32 (points) | fp32 s | bf16 s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        diff = float(r["bf16"]) - float(r["fp32"])
        print(
            f"| {r['seed']} | {float(r['fp32']):.2f} | {float(r['bf16']):.2f} | {diff:+.2f} "
            f"| {float(r['fp32_s']):.0f} | {float(r['bf16_s']):.0f} |"
        )
    worst = max(abs(float(r["bf16"]) - float(r["fp32"])) for r in rows)
    fallbacks = [r["bf16_fallback"] for r in rows if r["bf16_fallback"] != "-"]
    print(
        f"\nlargest |bf16 - fp32|: {worst:.2f} points (tolerance {TOLERANCE:.1f}): "
        f"{'within' if worst <= TOLERANCE else 'OUTSIDE'}; bf16 fallbacks to fp32: "
        f"{len(fallbacks)}"
    )


if __name__ == "__main__":
    main()
