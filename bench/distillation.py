"""Benchmark: distil the fine-tuned EfficientNet-Lite0 into a student with <= 1/4 of its weights.

On the UCI digits target (hash-split test set, 284 images), every row through the pipeline's
``train`` step:

* the teacher: ``finetune`` of the ImageNet EfficientNet-Lite0 on all target labels (once);
* the student, ``timm:mobilenetv3_small_050`` from random init (0.57 M parameters against the
  teacher's 3.4 M): ``distill`` (the teacher's soft targets on every target training image
  + the labels the budget allows) against ``scratch`` (the same student on the labels alone),
  at k = 10 labels per class and with all labels; 3 seeds (the student's init, shuffles,
  augmentation and the k-shot draw).

Goal: the distilled student reaches >= 95 % of the teacher's test accuracy at >= 3x the
teacher's inference images/s on this CPU (same batch size, fp32, best of 3 passes), and beats
the label-only student on every seed.

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
from runs import bench_params, prepare, run_rows, train_and_score

STUDENT = {"model.backbone": "timm:mobilenetv3_small_050", "model.pretrained": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--student-epochs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None, help="write the raw results as JSON")
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = bench_params(work, args.image_size, {})
        prepare(params, work)
        teacher = train_and_score(params, work, "teacher", {"train.strategy": "finetune"})
        print(json.dumps({"row": "teacher", **teacher}), flush=True)
        student = {**STUDENT, "train.epochs": args.student_epochs}
        rows = {
            f"{kind}, k={k}": {
                **student,
                "train.strategy": kind,
                "train.target_labels": 10 if k == "10" else "all",
                **({"train.distill.teacher": teacher["model"]} if kind == "distill" else {}),
            }
            for k in ("10", "all")
            for kind in ("distill", "scratch")
        }
        results = run_rows(params, work, rows, args.seeds)
    report(teacher, results, args, time.time() - started)
    if args.out:
        args.out.write_text(json.dumps({"teacher": teacher, "rows": results}, indent=2) + "\n")


def report(
    teacher: dict[str, Any], results: list[dict[str, Any]], args: argparse.Namespace, seconds: float
) -> None:
    seeds = sorted({r["seed"] for r in results})
    by = {(r["row"], r["seed"]): r for r in results}
    print(f"\nmachine: {describe()}")
    print(f"{args.image_size} px, seeds {seeds}; {seconds / 60:.1f} min\n")
    print(
        f"teacher (finetune, EfficientNet-Lite0): test accuracy {100 * teacher['accuracy']:.1f}, "
        f"{teacher['params'] / 1e6:.2f} M parameters, {teacher['images_per_s']:.0f} images/s\n"
    )
    print("| student | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | images/s |")
    print("|---" * (len(seeds) + 3) + "|")
    for name in dict.fromkeys(r["row"] for r in results):
        accs = [100 * by[(name, s)]["accuracy"] for s in seeds]
        speed = statistics.median(by[(name, s)]["images_per_s"] for s in seeds)
        print(
            f"| {name} | "
            + " | ".join(f"{a:.1f}" for a in accs)
            + f" | {statistics.mean(accs):.1f} | {speed:.0f} |"
        )
    for k in ("10", "all"):
        distilled = [by[(f"distill, k={k}", s)] for s in seeds]
        alone = [by[(f"scratch, k={k}", s)] for s in seeds]
        share = [d["accuracy"] / teacher["accuracy"] for d in distilled]
        speed = [d["images_per_s"] / teacher["images_per_s"] for d in distilled]
        beats = [d["accuracy"] > a["accuracy"] for d, a in zip(distilled, alone, strict=True)]
        met = min(share) >= 0.95 and min(speed) >= 3 and all(beats)
        print(
            f"\nk = {k}: distilled / teacher accuracy "
            + ", ".join(f"{100 * x:.1f} %" for x in share)
            + "; speed "
            + ", ".join(f"{x:.1f}x" for x in speed)
            + "; beats the label-only student: "
            + ", ".join("yes" if b else "no" for b in beats)
            + f" (goal: {'met' if met else 'missed'})"
        )


if __name__ == "__main__":
    main()
