"""Benchmark: what transfer brings on the target digits, with few and with all labels.

For k = 10, 50 and all labelled images per class, and 3 seeds (each seed draws its own k-shot
subset, shared by every strategy so gains are paired), on the UCI digits target domain:

* ``scratch`` - EfficientNet-Lite0 from random init, everything trained;
* ``linear_probe`` - a linear head on frozen features;
* ``finetune`` - the pipeline's fine-tuning (top stages unfrozen, discriminative LR, warmup +
  cosine, augmentation, early stopping);

with the pretrained start being (a) the ImageNet EfficientNet-Lite0 from the PyPI package and
(b) a model trained here on the MNIST source domain (itself started from ImageNet).
Accuracy is measured on the fixed, hash-split test set; the validation split drives early stopping.

    .venv/bin/python bench/transfer_gain.py [--seeds 3] [--image-size 32] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from machine import describe
from tlops.config import Params, apply_overrides, load_params
from tlops.data.dataset import load_splits
from tlops.data.demo import write_demo
from tlops.data.tensors import SplitTensors
from tlops.models.inference import pooled_features, predict_logits
from tlops.models.init import create_model
from tlops.runner.execute import execute
from tlops.runtime import seed_everything
from tlops.steps import spec_of
from tlops.training.loop import fit
from tlops.training.strategies import TrainData, get_strategy

REPO = Path(__file__).resolve().parents[1]
CLASSES = [str(i) for i in range(10)]
LITE0 = "timm:tf_efficientnet_lite0"
EPOCHS = {10: 25, 50: 10, 0: 5}  # k -> epochs (0 = all labels): roughly equal step budgets


def ingest(params: Params, data: Path, out: Path) -> None:
    """ingest_data of ``data`` into ``out``, as every runner calls it."""
    with_data = apply_overrides(params, {"data.target": str(data)})
    execute(spec_of("ingest_data"), with_data, {}, {"dataset": out}, {"domain": "target"})


def subset(split: SplitTensors, k: int, seed: int) -> SplitTensors:
    """k images per class (all when k = 0), drawn with ``seed``."""
    if k == 0:
        return split
    rng = np.random.default_rng(seed)
    chosen = np.concatenate(
        [
            rng.choice(np.flatnonzero(split.labels == c), size=k, replace=False)
            for c in np.unique(split.labels)
        ]
    )
    chosen.sort()
    return SplitTensors(
        np.ascontiguousarray(split.images[chosen]),
        split.labels[chosen],
        [split.paths[i] for i in chosen],
    )


def accuracy(model: Any, test: SplitTensors) -> float:
    logits = predict_logits(model, test, 256, torch.device("cpu"))
    return float((logits.argmax(1).numpy() == test.labels).mean())


def run_finetune(
    params: Params,
    init: str,
    strategy: str,
    train: SplitTensors,
    val: SplitTensors,
    test: SplitTensors,
    k: int,
    seed: int,
    ckpt: Path,
) -> float:
    cfg = params.train.model_copy(
        update={"strategy": strategy, "epochs": EPOCHS[k], "seed": seed, "batch_size": 32}
    )
    seed_everything(seed)
    model = create_model(
        init, CLASSES, pretrained=strategy != "scratch", dropout=params.model.dropout
    )
    fit(
        get_strategy(cfg),
        model,
        TrainData(CLASSES, train, val),
        cfg,
        ckpt / f"{strategy}-{k}-{seed}-{abs(hash(init))}",
        f"{init}-{strategy}-{k}-{seed}",
        torch.device("cpu"),
    )
    return accuracy(model, test)


def run_probe(
    params: Params,
    init: str,
    features: dict[str, np.ndarray],
    splits: dict[str, SplitTensors],
    train: SplitTensors,
    k: int,
    seed: int,
    ckpt: Path,
) -> float:
    index = {p: i for i, p in enumerate(splits["train"].paths)}
    rows = [index[p] for p in train.paths]
    cfg = params.train.model_copy(update={"seed": seed, "strategy": "linear_probe"})
    model = create_model(init, CLASSES, pretrained=True)
    data = TrainData(
        CLASSES,
        train_features=(features["train"][rows], train.labels),
        val_features=(features["val"], splits["val"].labels),
    )
    key = f"probe-{k}-{seed}-{abs(hash(init))}"
    fit(get_strategy(cfg), model, data, cfg, ckpt / key, key, torch.device("cpu"))
    # score the probe through the full model, as the pipeline would serve it
    return accuracy(model, splits["test"])


def source_model(params: Params, work: Path) -> Path:
    """Fine-tune ImageNet Lite0 on the MNIST source domain (2 epochs, all layers)."""
    ingested = work / "source_ingest"
    ingest(params, work / "source", ingested)
    splits = load_splits(params, ingested, CLASSES, ("train", "val"))
    cfg = params.train.model_copy(update={"epochs": 2, "trainable_stages": None, "batch_size": 64})
    seed_everything(0)
    model = create_model(LITE0, CLASSES, pretrained=True, dropout=params.model.dropout)
    outcome = fit(
        get_strategy(cfg),
        model,
        TrainData(CLASSES, splits["train"], splits["val"]),
        cfg,
        work / "source_ckpt",
        "source",
        torch.device("cpu"),
    )
    path = work / "mnist_source.pt"
    torch.save(model.checkpoint(), path)
    print(
        f"source model: MNIST val accuracy {outcome.best_metric:.4f} ({outcome.seconds:.0f} s)",
        flush=True,
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="write the raw results as JSON")
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = load_params(
            REPO / "params.yaml",
            {
                "model.image_size": args.image_size,
                "extract_features.cache_dir": str(work / "cache"),
            },
        )
        write_demo(work / "source", work / "target")
        ingest(params, work / "target", work / "target_ingest")
        splits = load_splits(params, work / "target_ingest", CLASSES)
        inits = {"imagenet": LITE0, "mnist": str(source_model(params, work))}
        features = {}
        for name, init in inits.items():
            model = create_model(init, CLASSES, pretrained=True)
            cpu = torch.device("cpu")
            features[name] = {
                s: pooled_features(model, splits[s], 256, cpu) for s in ("train", "val")
            }
        results: list[dict[str, Any]] = []
        for k in (10, 50, 0):
            for seed in range(args.seeds):
                train = subset(splits["train"], k, seed)
                row = {"k": k or "all", "seed": seed, "n_train": len(train)}
                row["scratch"] = run_finetune(
                    params,
                    LITE0,
                    "scratch",
                    train,
                    splits["val"],
                    splits["test"],
                    k,
                    seed,
                    work / "ckpt",
                )
                for name, init in inits.items():
                    row[f"linear_probe/{name}"] = run_probe(
                        params, init, features[name], splits, train, k, seed, work / "ckpt"
                    )
                    row[f"finetune/{name}"] = run_finetune(
                        params,
                        init,
                        "finetune",
                        train,
                        splits["val"],
                        splits["test"],
                        k,
                        seed,
                        work / "ckpt",
                    )
                results.append(row)
                print(json.dumps(row), flush=True)
    report(results, args, time.time() - started)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


def report(results: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> None:
    columns = [
        "scratch",
        "linear_probe/imagenet",
        "finetune/imagenet",
        "linear_probe/mnist",
        "finetune/mnist",
    ]
    print(f"\nmachine: {describe()}")
    print(
        f"target: UCI digits at {args.image_size}x{args.image_size}, test split "
        f"{results and 284} images; {args.seeds} seeds; {seconds / 60:.1f} min\n"
    )
    print("| k per class | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for k in dict.fromkeys(r["k"] for r in results):
        rows = [r for r in results if r["k"] == k]
        cells = []
        for column in columns:
            values = [100 * r[column] for r in rows]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1f} ± {spread:.1f}")
        print(f"| {k} | " + " | ".join(cells) + " |")
    print("\npaired gain over scratch, accuracy points per seed:\n")
    print("| k per class | finetune/imagenet - scratch | finetune/mnist - scratch |")
    print("|---|---|---|")
    for k in dict.fromkeys(r["k"] for r in results):
        rows = [r for r in results if r["k"] == k]
        gains = [
            ", ".join(f"{100 * (r[f'finetune/{init}'] - r['scratch']):+.1f}" for r in rows)
            for init in ("imagenet", "mnist")
        ]
        print(f"| {k} | {gains[0]} | {gains[1]} |")


if __name__ == "__main__":
    main()
