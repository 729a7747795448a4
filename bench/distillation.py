"""Benchmark: distil the fine-tuned EfficientNet-Lite0 into a student with <= 1/4 of its weights.

On the UCI digits target (hash-split test set, 284 images), every row through the pipeline's
``train`` step, per seed (the student's init, shuffles, augmentation and the k-shot draw), at
k = 10 labels per class and with all labels:

* the teacher: ``finetune`` of the ImageNet EfficientNet-Lite0 on the labels of that budget:
  with all labels once (seed 0), at k = 10 per seed, on the same 10 per class the students
  get (a teacher trained on every label would hand the student the labels its budget
  withholds);
* the student, ``timm:mobilenetv3_small_050`` from random init (0.58 M parameters against the
  teacher's 3.38 M): ``distill`` (the teacher's soft targets on every target training image
  + the labels the budget allows) against ``scratch`` (the same student on the labels alone).

Every row, teachers included, trains to convergence: up to ``--epochs`` epochs, early stopping
patience ``--patience`` on the target val split. At k = 10 an epoch of the label-only student is
2 optimiser steps: the default patience (3) stops it after 8 steps, at chance, and 40 epochs
stop it while it still improves, either of which would make it a strawman; with all labels,
the default 8 epochs leave the teacher below the label-only student.

Inference speed: each student and its teacher are timed side by side at the end, alternating,
best of 5 passes over the test split each (same batch size, fp32, same process), so the ratio
is not a comparison of two moments of a shared machine.

Goal: the distilled student reaches >= 95 % of the teacher's test accuracy at >= 3x the
teacher's inference images/s on this CPU, and beats the label-only student on every seed.

    .venv/bin/python bench/distillation.py | tee bench/results/distillation.txt
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe
from runs import CLASSES, bench_params, prepare, train_and_score
from tlops.data.dataset import load_splits
from tlops.models.init import load_model
from tlops.training.strategies.distill import images_per_s

STUDENT = {"model.backbone": "timm:mobilenetv3_small_050", "model.pretrained": False}
BUDGETS = {"10": 10, "all": "all"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=200, help="epochs of every row")
    parser.add_argument("--patience", type=int, default=20, help="early stopping, every row")
    parser.add_argument("--out", type=Path, default=None, help="write the raw results as JSON")
    args = parser.parse_args()
    started = time.time()
    schedule = {"train.epochs": args.epochs, "train.early_stopping.patience": args.patience}
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = bench_params(work, args.image_size, {})
        prepare(params, work)
        # the all-label teacher is trained once (seed 0) and teaches every seed's students; a
        # k = 10 teacher is trained per seed, on that seed's draw of 10 labels per class
        teacher_all = _row(
            params,
            work,
            "teacher, k=all",
            0,
            {"train.strategy": "finetune", **schedule, "train.seed": 0},
            results,
        )
        for seed in range(args.seeds):
            for k, budget in BUDGETS.items():
                base = {"train.seed": seed, "train.target_labels": budget}
                if k == "all":
                    teacher = teacher_all
                else:
                    teacher_rows = {"train.strategy": "finetune", **schedule, **base}
                    teacher = _row(params, work, f"teacher, k={k}", seed, teacher_rows, results)
                for kind in ("distill", "scratch"):
                    overrides = {**STUDENT, **schedule, **base, "train.strategy": kind}
                    if kind == "distill":
                        overrides["train.distill.teacher"] = teacher["model"]
                    _row(params, work, f"{kind}, k={k}", seed, overrides, results)
        test = load_splits(params, work / "target_ingest", CLASSES, ("test",))["test"]
        speeds = side_by_side(results, test, params.evaluate.batch_size)
    report(results, speeds, args, time.time() - started)
    if args.out:
        args.out.write_text(json.dumps({"rows": results, "speeds": speeds}, indent=2) + "\n")


def _row(
    params: Any,
    work: Path,
    name: str,
    seed: int,
    overrides: dict[str, Any],
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    result = {"row": name, "seed": seed}
    result |= train_and_score(params, work, f"{seed}-{len(results)}", overrides)
    results.append(result)
    print(json.dumps(result), flush=True)
    return result


def side_by_side(
    results: list[dict[str, Any]], test: Any, batch_size: int, rounds: int = 5
) -> dict[str, dict[str, float]]:
    """Images/s of every (teacher, distilled student) pair, timed in alternation.

    Each model is loaded at its own resolution by the checkpoint; the test split is the
    bench's resolution for both, as in training.
    """
    import torch

    cpu = torch.device("cpu")
    speeds: dict[str, dict[str, float]] = {}
    for r in results:
        if not r["row"].startswith("distill"):
            continue
        k = r["row"].split("k=")[1]
        teacher = next(
            t
            for t in results
            if t["row"] == f"teacher, k={k}" and t["seed"] == (r["seed"] if k != "all" else 0)
        )
        models = {
            "teacher": load_model(Path(teacher["model"])),
            "student": load_model(Path(r["model"])),
        }
        best = {name: 0.0 for name in models}
        for _ in range(rounds):
            for name, model in models.items():
                best[name] = max(best[name], images_per_s(model, test, batch_size, cpu))
        speeds[f"{r['seed']}, k={k}"] = best
    return speeds


def report(
    results: list[dict[str, Any]],
    speeds: dict[str, dict[str, float]],
    args: argparse.Namespace,
    seconds: float,
) -> None:
    seeds = sorted({r["seed"] for r in results})
    by = {(r["row"], r["seed"]): r for r in results}
    print(f"\nmachine: {describe()}")
    print(
        f"{args.image_size} px, seeds {seeds}, every row {args.epochs} epochs "
        f"(patience {args.patience}); {seconds / 60:.1f} min\n"
    )
    print("| row | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | parameters |")
    print("|---" * (len(seeds) + 3) + "|")
    for name in dict.fromkeys(r["row"] for r in results):
        accs = [100 * by[(name, s)]["accuracy"] for s in seeds if (name, s) in by]
        size = by[(name, seeds[0])]["params"] / 1e6
        print(
            f"| {name} | "
            + " | ".join(f"{a:.1f}" for a in accs)
            + " | -" * (len(seeds) - len(accs))  # the all-label teacher: seed 0 only
            + f" | {statistics.mean(accs):.1f} | {size:.2f} M |"
        )
    print("\ninference images/s, side by side (teacher / distilled student):\n")
    for key, pair in speeds.items():
        print(
            f"- seed {key}: {pair['teacher']:.0f} / {pair['student']:.0f} "
            f"({pair['student'] / pair['teacher']:.1f}x)"
        )
    for k in BUDGETS:
        teachers = [by[(f"teacher, k={k}", s if k != "all" else 0)] for s in seeds]
        distilled = [by[(f"distill, k={k}", s)] for s in seeds]
        alone = [by[(f"scratch, k={k}", s)] for s in seeds]
        share = [d["accuracy"] / t["accuracy"] for d, t in zip(distilled, teachers, strict=True)]
        ratio = [speeds[f"{s}, k={k}"]["student"] / speeds[f"{s}, k={k}"]["teacher"] for s in seeds]
        beats = [d["accuracy"] > a["accuracy"] for d, a in zip(distilled, alone, strict=True)]
        met = min(share) >= 0.95 and min(ratio) >= 3 and all(beats)
        print(
            f"\nk = {k}: distilled / teacher accuracy "
            + ", ".join(f"{100 * x:.1f} %" for x in share)
            + "; speed "
            + ", ".join(f"{x:.1f}x" for x in ratio)
            + "; beats the label-only student: "
            + ", ".join("yes" if b else "no" for b in beats)
            + f" (goal: {'met' if met else 'missed'})"
        )


if __name__ == "__main__":
    main()
