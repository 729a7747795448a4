"""Benchmark: autoencoder pretraining on unlabeled images, at k = 10 labels per class.

On the UCI digits target (hash-split test set, 284 images), through the pipeline's ``train``
step, 3 seeds (init, shuffles, augmentation, the k-shot draw):

* ``autoencoder``: the encoder (``timm:mobilenetv3_small_050``) pretrained to reconstruct every
  target training image (1,263, labels unused), then fine-tuned on the 100 labeled ones;
* ``scratch``: the same encoder from random init, fine-tuned on the same 100 images;
* for context, ``finetune`` of the ImageNet EfficientNet-Lite0 on the same 100 images.

Every row trains to convergence: up to ``--epochs`` epochs, early stopping patience
``--patience`` on the target val split. An epoch is 2 optimiser steps on 100 images: the
default patience (3) stops a random-init encoder after 8 steps, at chance, and 60 epochs stop
it while it still improves, either of which would make the baseline a strawman.

Goal: the pretrained encoder >= 20 points better than random init on every seed.

    .venv/bin/python bench/autoencoder.py | tee bench/results/autoencoder.txt
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from machine import describe
from runs import bench_params, prepare, run_rows

ENCODER = {"model.backbone": "timm:mobilenetv3_small_050", "model.pretrained": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=200, help="fine-tuning epochs (100 images)")
    parser.add_argument("--patience", type=int, default=20, help="early stopping, every row")
    parser.add_argument("--out", type=Path, default=None, help="write the raw results as JSON")
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = bench_params(
            work,
            args.image_size,
            {
                "train.target_labels": 10,
                "train.epochs": args.epochs,
                "train.early_stopping.patience": args.patience,
            },
        )
        prepare(params, work)
        rows = {
            "autoencoder (pretrained encoder)": {**ENCODER, "train.strategy": "autoencoder"},
            "scratch (same encoder, random init)": {**ENCODER, "train.strategy": "scratch"},
            "finetune (ImageNet Lite0, context)": {"train.strategy": "finetune"},
        }
        results = run_rows(params, work, rows, args.seeds)
    seeds = sorted({r["seed"] for r in results})
    by = {(r["row"], r["seed"]): r for r in results}
    print(f"\nmachine: {describe()}")
    print(
        f"{args.image_size} px, k = 10, seeds {seeds}, {args.epochs} epochs (patience "
        f"{args.patience}); {(time.time() - started) / 60:.1f} min\n"
    )
    print("| row | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
    print("|---" * (len(seeds) + 2) + "|")
    for name in rows:
        accs = [100 * by[(name, s)]["accuracy"] for s in seeds]
        print(
            f"| {name} | "
            + " | ".join(f"{a:.1f}" for a in accs)
            + f" | {statistics.mean(accs):.1f} |"
        )
    names = list(rows)
    gains = [100 * (by[(names[0], s)]["accuracy"] - by[(names[1], s)]["accuracy"]) for s in seeds]
    print(
        "\npretrained - random init: "
        + ", ".join(f"{g:+.1f}" for g in gains)
        + f" points (goal >= +20 on every seed: {'met' if min(gains) >= 20 else 'missed'})"
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
