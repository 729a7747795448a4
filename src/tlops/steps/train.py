"""Step ``train``: fit a model with the strategy chosen in params.yaml.

* ``linear_probe`` - a linear head on the cached features of ``extract_features`` (seconds);
* ``finetune`` - the pretrained backbone with its top ``train.trainable_stages`` stages
  unfrozen (gradual unfreezing by ``train.unfreeze_milestones``), discriminative learning rate,
  warmup + cosine, label smoothing, augmentation, early stopping, optional class weights;
* ``scratch`` - the same architecture from random init, everything trained: the baseline that
  shows what the transfer brings.

Outputs (in ``out_dir``): ``model.pt`` (a weights-only tlops checkpoint), ``history.csv`` and
``history.json`` (one row per epoch, DVC plots), ``training_curves.png``, ``train.json``.
Fine-tuning writes a checkpoint every epoch to the checkpoint directory; a killed run started
again with the same data, params and init resumes from it and ends with the same metrics.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlops.config import Params
from tlops.evaluate.plots import training_curves_png
from tlops.io import atomic_dir, read_json, write_json
from tlops.models.backbones import TransferModel, create_model, resolve_init
from tlops.steps.common import class_list, fingerprint, ingest_info, load_splits
from tlops.steps.extract_features import META_FILE
from tlops.tracking.runs import log_artifacts, log_metrics, set_tags
from tlops.train.loop import TrainOutcome, finetune, linear_probe, resolve_device, seed_everything

MODEL_FILE = "model.pt"
TRAIN_FILE = "train.json"


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` returns."""

    strategy: str
    best_epoch: int
    best_metric: float
    epochs_run: int
    resumed_from_epoch: int | None
    seconds: float
    train_images_per_s: float
    out_dir: Path


def _features(features_dir: Path, split: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    meta = read_json(features_dir / META_FILE)
    if list(meta["classes"]) != classes:
        raise ValueError(
            f"{features_dir}: features were extracted for classes {meta['classes']}, not {classes}"
        )
    features = np.load(features_dir / f"{split}.npy")
    with (features_dir / f"{split}_index.csv").open(encoding="utf-8") as handle:
        labels = [row["label"] for row in csv.DictReader(handle)]
    index = {name: i for i, name in enumerate(classes)}
    return features, np.array([index[label] for label in labels], dtype=np.int64)


def _build(params: Params, classes: list[str]) -> TransferModel:
    spec, strategy = params.model.backbone, params.train.strategy
    if strategy == "scratch":
        # the same architecture as the start model, randomly initialised
        return create_model(
            resolve_init(spec, False).spec, classes, pretrained=False, dropout=params.model.dropout
        )
    return create_model(
        spec, classes, pretrained=params.model.pretrained, dropout=params.model.dropout
    )


def run(
    params: Params,
    ingest_dir: Path,
    features_dir: Path | None,
    out_dir: Path,
    run_id: str | None = None,
    checkpoint_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
    stop_after_epoch: int | None = None,
) -> TrainResult:
    """Train with ``train.strategy`` and write the model.

    Args:
        params: Resolved params (reads ``model``, ``train``, ``image``, ``extract_features``).
        ingest_dir: An ``ingest_data`` output (images for finetune/scratch).
        features_dir: An ``extract_features`` output (needed by linear_probe).
        out_dir: Output directory (replaced on success).
        run_id: MLflow run to log into.
        checkpoint_dir: Where per-epoch checkpoints live (default: under the cache dir, keyed
            by data version, params and init, so only the same run resumes from them).
        progress: Called with 1 per decoded image.
        stop_after_epoch: Stop after this epoch's checkpoint, writing no output (tests use it
            to simulate a killed run).

    Returns:
        Summary of the training.
    """
    cfg = params.train
    seed_everything(cfg.seed)
    ingest = ingest_info(ingest_dir)
    classes = class_list(params, ingest)
    model = _build(params, classes)
    model.image_size = params.model.image_size
    run_key = fingerprint(
        ingest["data_version"],
        classes,
        params.model.model_dump(mode="json"),
        cfg.model_dump(mode="json"),
        params.image.model_dump(mode="json"),
    )
    tracking = params.tracking

    def on_epoch(row: dict[str, float]) -> None:
        log_metrics(
            tracking, run_id, {k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"])
        )

    outcome: TrainOutcome
    finished_checkpoints: Path | None = None
    if cfg.strategy == "linear_probe":
        if features_dir is None:
            raise ValueError("train.strategy linear_probe needs the extract_features output")
        train_x, train_y = _features(features_dir, "train", classes)
        val_x, val_y = _features(features_dir, "val", classes)
        outcome = linear_probe(model, train_x, train_y, val_x, val_y, cfg, on_epoch)
    else:
        splits = load_splits(params, ingest_dir, classes, ("train", "val"), progress)
        device = resolve_device(cfg.device)
        ckpt = checkpoint_dir or params.extract_features.cache_dir / "checkpoints" / run_key
        outcome = finetune(
            model,
            splits["train"],
            splits["val"],
            cfg,
            ckpt,
            run_key,
            device,
            on_epoch,
            stop_after_epoch,
        )
        if outcome.extra.get("interrupted"):
            return _result(cfg.strategy, outcome, out_dir)
        model.cpu()
        finished_checkpoints = ckpt
    summary: dict[str, Any] = {
        "strategy": cfg.strategy,
        "backbone": params.model.backbone,
        "init": model.weights,
        "classes": classes,
        "data_version": ingest["data_version"],
        "run_key": run_key,
        **{k: v for k, v in asdict(outcome).items() if k != "history"},
    }
    with atomic_dir(out_dir) as staging:
        torch.save(model.checkpoint(), staging / MODEL_FILE)
        write_json(staging / "history.json", outcome.history)
        with (staging / "history.csv").open("w", newline="", encoding="utf-8") as handle:
            if outcome.history:
                writer = csv.DictWriter(handle, fieldnames=list(outcome.history[0]))
                writer.writeheader()
                writer.writerows(outcome.history)
        if outcome.history:
            training_curves_png(
                outcome.history,
                staging / "training_curves.png",
                f"{cfg.strategy} · {params.model.backbone}",
            )
        write_json(staging / TRAIN_FILE, summary)
    if finished_checkpoints is not None:
        # Checkpoints exist to resume an interrupted run; a finished one must not be "resumed"
        # by the next identical run, which should train (and reproduce) for real.
        shutil.rmtree(finished_checkpoints, ignore_errors=True)
    set_tags(
        tracking,
        run_id,
        {"strategy": cfg.strategy, "backbone": params.model.backbone, "init": model.weights},
    )
    log_metrics(
        tracking,
        run_id,
        {
            "best_epoch": outcome.best_epoch,
            "train_seconds": outcome.seconds,
            "train_images_per_s": outcome.train_images_per_s,
        },
    )
    log_artifacts(
        tracking, run_id, [out_dir / "training_curves.png", out_dir / "history.csv"], "train"
    )
    return _result(cfg.strategy, outcome, out_dir)


def _result(strategy: str, outcome: TrainOutcome, out_dir: Path) -> TrainResult:
    return TrainResult(
        strategy,
        outcome.best_epoch,
        outcome.best_metric,
        len(outcome.history),
        outcome.resumed_from_epoch,
        outcome.seconds,
        outcome.train_images_per_s,
        out_dir,
    )
