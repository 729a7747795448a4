"""Benchmark: unsupervised domain adaptation, MNIST (source) -> UCI digits (target).

Every row runs the pipeline's ``train`` step (the same code as ``tlops run``) and is scored on
the target's hash-split test set (284 images). Same backbone (EfficientNet-Lite0, ImageNet),
resolution, input alignment and step budget for every row; 3 seeds (``train.seed``: init of
the head, shuffles, augmentation, target draws):

* ``source_only`` without the alignment (the raw frames) and with it (``model.align``:
  crop to the content's box, area-average to 8 px, stretch the contrast; label-free, per image);
* ``dan``, ``coral``, ``dann``, ``mcc`` with ``train.target_labels: 0``: the best epoch is chosen
  on the source validation split, no target label is read before the test;
* ``oracle``: ``finetune`` on all target labels, the same number of optimiser steps.

Goal: the strategy params.yaml's README guide recommends closes >= 50 % of the source_only ->
oracle gap on every seed. Then at k = 10 target labels per class: that strategy (its target
batches now hold the 100 labeled images among the unlabeled ones) against ``finetune`` on the
10 labels alone: >= 5 points on every seed. Cost: a DA epoch <= 1.6x a source_only epoch (the
median ``epoch_seconds`` of the training histories, same process, same machine).

    .venv/bin/python bench/domain_adaptation.py | tee bench/results/domain_adaptation.txt
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from machine import describe
from runs import CLASSES, bench_params, prepare, run_rows

ALIGN = {
    "model.align.content_crop": True,
    "model.align.resolution": 8,
    "model.align.autocontrast": True,
}
NO_ALIGN = {
    "model.align.content_crop": False,
    "model.align.resolution": None,
    "model.align.autocontrast": False,
}
DA = ("dan", "coral", "dann", "mcc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="source epochs per run")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--recommended", default="mcc", help="the strategy the README recommends")
    parser.add_argument("--rows", default="all", help="comma-separated subset of rows")
    parser.add_argument(
        "-S", dest="set", action="append", default=[], help="override a param in every row (k=v)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the raw results as JSON")
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = bench_params(
            work,
            args.image_size,
            {
                "train.epochs": args.epochs,
                **{k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)},
            },
        )
        sizes = prepare(params, work)
        source_train, target_train = sizes["source"], sizes["target"]
        steps = args.epochs * math.ceil(source_train / params.train.batch_size)
        oracle_epochs = math.ceil(steps / math.ceil(target_train / params.train.batch_size))
        few = 10 * len(CLASSES)
        few_epochs = math.ceil(steps / math.ceil(few / params.train.batch_size))
        rows: dict[str, dict[str, Any]] = {
            "source_only (raw frames)": {"train.strategy": "source_only", **NO_ALIGN},
            "source_only (aligned)": {"train.strategy": "source_only", **ALIGN},
            **{s: {"train.strategy": s, **ALIGN} for s in DA},
            "oracle (finetune, all target labels)": {
                "train.strategy": "finetune",
                "train.epochs": oracle_epochs,
                **ALIGN,
            },
            f"{args.recommended}, k=10": {
                "train.strategy": args.recommended,
                "train.target_labels": 10,
                **ALIGN,
            },
            "finetune, k=10": {
                "train.strategy": "finetune",
                "train.target_labels": 10,
                "train.epochs": few_epochs,
                **ALIGN,
            },
        }
        for overrides in rows.values():  # DA rows read no target label unless told
            unsupervised = overrides["train.strategy"] in ("source_only", *DA)
            overrides.setdefault("train.target_labels", 0 if unsupervised else "all")
        if args.rows != "all":
            wanted = args.rows.split(",")
            rows = {k: v for k, v in rows.items() if any(k.startswith(w) for w in wanted)}
        print(
            f"training splits: source {source_train} images, target {target_train}; "
            f"{args.epochs} source epochs = "
            f"{steps} steps; oracle {oracle_epochs} epochs, finetune k=10 {few_epochs} epochs",
            flush=True,
        )
        results = run_rows(params, work, rows, args.seeds)
    report(results, args, time.time() - started)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


def report(results: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> None:
    seeds = sorted({r["seed"] for r in results})
    by = {(r["row"], r["seed"]): r for r in results}
    names = list(dict.fromkeys(r["row"] for r in results))
    print(f"\nmachine: {describe()}")
    print(f"{args.image_size} px, {args.epochs} source epochs, seeds {seeds}; ", end="")
    print(f"{seconds / 60:.1f} min\n")
    print(
        "| row | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | mean | target val (mean) | epoch s (median) |"
    )
    print("|---" * (len(seeds) + 4) + "|")
    for name in names:
        accs = [100 * by[(name, s)]["accuracy"] for s in seeds if (name, s) in by]
        epoch = statistics.median(by[(name, s)]["epoch_seconds"] for s in seeds if (name, s) in by)
        val = statistics.mean(100 * by[(name, s)]["val_accuracy"] for s in seeds if (name, s) in by)
        print(
            f"| {name} | "
            + " | ".join(f"{a:.1f}" for a in accs)
            + f" | {statistics.mean(accs):.1f} | {val:.1f} | {epoch:.1f} |"
        )
    base, oracle = "source_only (aligned)", "oracle (finetune, all target labels)"
    if not all((base, s) in by and (oracle, s) in by for s in seeds):
        return
    print("\nshare of the source_only (aligned) -> oracle gap closed, per seed:\n")
    for name in (n for n in names if n in DA):
        shares = [
            (by[(name, s)]["accuracy"] - by[(base, s)]["accuracy"])
            / (by[(oracle, s)]["accuracy"] - by[(base, s)]["accuracy"])
            for s in seeds
        ]
        cost = statistics.median(by[(name, s)]["epoch_seconds"] for s in seeds) / statistics.median(
            by[(base, s)]["epoch_seconds"] for s in seeds
        )
        verdict = "met" if min(shares) >= 0.5 else "missed"
        print(
            f"- {name}: "
            + ", ".join(f"{100 * x:.0f} %" for x in shares)
            + f" (goal >= 50 % on every seed: {verdict}); epoch cost {cost:.2f}x source_only"
        )
    few, ft = f"{args.recommended}, k=10", "finetune, k=10"
    if all((few, s) in by and (ft, s) in by for s in seeds):
        gains = [100 * (by[(few, s)]["accuracy"] - by[(ft, s)]["accuracy"]) for s in seeds]
        verdict = "met" if min(gains) >= 5 else "missed"
        print(
            f"\nk = 10: {args.recommended} - finetune on the 10 labels: "
            + ", ".join(f"{g:+.1f}" for g in gains)
            + f" points (goal >= +5 on every seed: {verdict})"
        )


if __name__ == "__main__":
    main()
