"""Benchmark: the tune step on the domain adaptation benchmark, with no target label read.

The split, seeds, resolution, alignment and final training budget of
``bench/domain_adaptation.py`` (MNIST -> UCI digits, EfficientNet-Lite0 ImageNet, 32 px, pinned
``fp32+channels_last+eager``, 10 source epochs, scored on the target's hash-split test set).
Per seed: the aligned ``source_only`` baseline and the oracle (``finetune`` on every target
label, the same step budget), both with their params.yaml values (the baseline's best epoch on
the source's validation split, as in the domain adaptation benchmark); then for each searched
row, the search (``--trials`` trials of ``--trial-share`` x the row's epochs each, the tune
step's study: TPE seeded by the seed, median pruning) and the train step with the best trial's
params, and with ``--defaults`` the row with its params.yaml values beside it. A domain
adaptation row reads no target label: its trials and epochs are judged by the label-free
``--criterion``, computed from the unlabeled target training images and the source's validation
split. ``finetune-k10`` (``finetune`` on 10 target labels per class, the DA benchmark's step
budget) is judged by the target validation split, as train is with labels. Only the benchmark
scores each complete trial's model on the target's test split, to know what the best choice
would have been (the oracle choice), and what each of the four label-free criteria would have
picked (each trial at the epoch the configured one chose).

Goals: the tuned ``mcc`` closes >= 70 % of the source_only -> oracle gap on every seed; tuned
``dan``, ``coral``, ``dann`` each beat the aligned source_only on every seed; the criterion's
pick is within 2 points (test accuracy) of the oracle choice on every seed. A row's budget is
stated: the search's epochs plus the final run's.

    .venv/bin/python bench/tuning.py | tee bench/results/tuning.txt

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

import torch

from domain_adaptation import ALIGN
from machine import describe
from runs import CLASSES, bench_params, prepare, train_and_score
from tlops.config import Params, apply_overrides
from tlops.data.dataset import load_splits
from tlops.evaluate.scoring import score
from tlops.training.search import Budget, Trial, run_study

CRITERIA = ("entropy", "snd", "iwv", "dev")
HIGHER = {"entropy": False, "snd": True, "iwv": False, "dev": False}
BASE, ORACLE = "source_only (aligned)", "oracle (finetune, all target labels)"


def search(params: Params, work: Path, overrides: dict[str, Any], budget: Budget) -> dict[str, Any]:
    """The tune step's study for one row; each complete trial's test accuracy beside it."""
    from tlops.training.prepare import prepare as prepare_run

    p = apply_overrides(params, overrides)
    inputs = {
        "dataset": work / "target_ingest",
        "report": work / "target_report",
        "source_dataset": work / "source_ingest",
        "source_report": work / "source_report",
    }
    cpu = torch.device("cpu")
    setup = prepare_run(p, inputs, str(work / "ckpt"), None, cpu)
    test = load_splits(p, work / "target_ingest", CLASSES, ("test",))["test"]
    accuracy: dict[int, float] = {}

    def on_model(trial: Trial, model: Any) -> None:
        accuracy[trial.number] = float(score(model, test, p)["overall"]["accuracy"])

    started = time.perf_counter()
    study = run_study(p, setup, cpu, budget, on_model=on_model)
    trials = []
    for t in study.trials:
        at_best = t.history[t.best_epoch - 1] if t.best_epoch else {}
        trials.append(
            {
                "number": t.number,
                "state": t.state,
                "params": t.params,
                "epochs": t.epochs,
                "value": t.value,
                "test_accuracy": accuracy.get(t.number),
                **{f"select_{c}": at_best.get(f"select_{c}") for c in CRITERIA},
            }
        )
    best = study.best
    return {
        "best": best.params if best else {},
        "best_trial": best.number if best else None,
        "trials": trials,
        "search_epochs": sum(t.epochs for t in study.trials),
        "search_seconds": time.perf_counter() - started,
    }


def picks(trials: list[dict[str, Any]]) -> dict[str, float]:
    """Test accuracy of the trial each criterion picks, and of the oracle choice."""
    done = [t for t in trials if t["state"] == "complete" and t["test_accuracy"] is not None]
    if not done:
        return {}
    chosen = {"oracle": max(t["test_accuracy"] for t in done)}
    for c in CRITERIA:
        scored = [t for t in done if t[f"select_{c}"] is not None]
        if scored:
            sign = 1 if HIGHER[c] else -1
            pick = max(scored, key=lambda t: (sign * t[f"select_{c}"], -t["number"]))
            chosen[c] = pick["test_accuracy"]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="source epochs of a final run")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument(
        "--rows", default="mcc,dan,coral,dann", help="rows to tune: DA strategies, finetune-k10"
    )
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument(
        "--trial-share", type=float, default=0.5, help="a trial's epochs / the final run's"
    )
    parser.add_argument("--defaults", action="store_true", help="also each row untuned")
    parser.add_argument("--criterion", default="entropy", choices=CRITERIA)
    parser.add_argument("--out", type=Path, default=None, help="write the raw results as JSON")
    args = parser.parse_args()
    started = time.time()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = bench_params(
            work,
            args.image_size,
            {"train.epochs": args.epochs},
        )
        sizes = prepare(params, work)
        batches = {d: math.ceil(n / params.train.batch_size) for d, n in sizes.items()}
        steps = args.epochs * batches["source"]
        searched = {
            s: {"train.strategy": s, "train.target_labels": 0, "train.epochs": args.epochs}
            for s in args.rows.split(",")
            if s != "finetune-k10"
        }
        for overrides in searched.values():
            overrides["train.selection.criterion"] = args.criterion
        if "finetune-k10" in args.rows.split(","):
            few = math.ceil(10 * len(CLASSES) / params.train.batch_size)
            searched["finetune-k10"] = {
                "train.strategy": "finetune",
                "train.target_labels": 10,
                "train.epochs": math.ceil(steps / few),
            }
        for seed in range(args.seeds):
            baselines = {
                BASE: {"train.strategy": "source_only", "train.target_labels": 0},
                ORACLE: {
                    "train.strategy": "finetune",
                    "train.epochs": -(-steps // batches["target"]),
                },
            }
            for name, overrides in baselines.items():
                row = {**ALIGN, **overrides, "train.seed": seed}
                result = train_and_score(params, work, f"{seed}-{name[:6]}", row)
                results.append({"row": name, "seed": seed, **result})
                print(json.dumps(results[-1]), flush=True)
            for name, overrides in searched.items():
                row = {**ALIGN, **overrides, "train.seed": seed}
                if args.defaults:
                    result = train_and_score(params, work, f"{seed}-{name}", row)
                    results.append({"row": f"{name} (defaults)", "seed": seed, **result})
                    print(json.dumps(results[-1]), flush=True)
                epochs = max(1, math.ceil(args.trial_share * row["train.epochs"]))
                budget = Budget(args.trials, None, epochs, seed, True, 3)
                found = search(params, work, row, budget)
                tuned = {**row, **{f"train.{k}": v for k, v in found["best"].items()}}
                result = train_and_score(params, work, f"{seed}-{name}-tuned", tuned)
                results.append({"row": f"{name} (tuned)", "seed": seed, **result, **found})
                print(json.dumps(results[-1]), flush=True)
    report(results, args, time.time() - started)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


def report(results: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> None:
    seeds = sorted({r["seed"] for r in results})
    by = {(r["row"], r["seed"]): r for r in results}
    names = list(dict.fromkeys(r["row"] for r in results))
    print(f"\nmachine: {describe()}")
    print(
        f"{args.image_size} px, {args.epochs} source epochs per final DA run; search "
        f"{args.trials} trials x {args.trial_share:g} of a final run's epochs, DA criterion "
        f"{args.criterion}; seeds {seeds}; {seconds / 60:.1f} min\n"
    )
    print(
        "| row | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | epochs (search + final) |"
    )
    print("|---" * (len(seeds) + 3) + "|")
    for name in names:
        rows = [by[(name, s)] for s in seeds if (name, s) in by]
        accs = [100 * r["accuracy"] for r in rows]
        budget = statistics.mean(r.get("search_epochs", 0) + r["epochs"] for r in rows)
        print(
            f"| {name} | " + " | ".join(f"{a:.1f}" for a in accs)
            + f" | {statistics.mean(accs):.1f} | {budget:.0f} |"
        )  # fmt: skip
    if not all((BASE, s) in by and (ORACLE, s) in by for s in seeds):
        return
    print()
    for name in (n for n in names if n.endswith("(tuned)")):
        base = [by[(BASE, s)]["accuracy"] for s in seeds]
        ours = [by[(name, s)]["accuracy"] for s in seeds]
        gap = [
            (o - b) / (by[(ORACLE, s)]["accuracy"] - b)
            for o, b, s in zip(ours, base, seeds, strict=True)
        ]
        if name.startswith("finetune-k10"):
            default = "finetune-k10 (defaults)"
            if all((default, s) in by for s in seeds):
                gains = [
                    100 * (by[(name, s)]["accuracy"] - by[(default, s)]["accuracy"]) for s in seeds
                ]
                print(
                    f"- {name}: "
                    + ", ".join(f"{g:+.1f}" for g in gains)
                    + " points over its defaults"
                )
            continue
        if name.startswith("mcc"):
            verdict = "met" if min(gap) >= 0.7 else "missed"
            goal = f"goal >= 70 % on every seed: {verdict}"
        else:
            verdict = "met" if all(o > b for o, b in zip(ours, base, strict=True)) else "missed"
            goal = f"goal: above source_only (aligned) on every seed: {verdict}"
        print(f"- {name}: gap closed " + ", ".join(f"{100 * g:.0f} %" for g in gap) + f" ({goal})")
        chosen = [picks(by[(name, s)]["trials"]) for s in seeds]
        for c in (args.criterion, *(c for c in CRITERIA if c != args.criterion)):
            if not all(c in p for p in chosen):
                continue
            behind = [100 * (p["oracle"] - p[c]) for p in chosen]
            mark = " (the search's)" if c == args.criterion else ""
            verdict = "met" if max(behind) <= 2 else "missed"
            print(
                f"  - {c}{mark} picks a trial "
                + ", ".join(f"{b:.1f}" for b in behind)
                + f" points below the oracle choice (goal <= 2: {verdict})"
            )


if __name__ == "__main__":
    main()
