"""Training: the fine-tuning loop (finetune and scratch) and the linear probe on features.

Determinism: everything random in an epoch (shuffle order, augmentation, dropout) is seeded
from (seed, epoch) at the start of that epoch, so a run resumed from the checkpoint of epoch k
continues exactly as the uninterrupted run would have, and the same data + params + seed give
the same metrics on CPU.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn

from tlops.config import TrainConfig
from tlops.data.tensors import Augment, SplitTensors, augment_batch, batches, normalize
from tlops.models.backbones import TransferModel

CHECKPOINT = "last.pt"
EpochCallback = Callable[[dict[str, float]], None]


def resolve_device(name: str = "auto") -> torch.device:
    """The device to train on: ``TLOPS_DEVICE`` wins, then ``name``; ``auto`` prefers CUDA."""
    chosen = os.environ.get("TLOPS_DEVICE") or name
    if chosen == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(chosen)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {chosen!r} requested (TLOPS_DEVICE/train.device) but CUDA is "
            "not available on this machine"
        )
    return device


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python, and ask for deterministic kernels."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    # cuBLAS needs this for deterministic matmuls on CUDA
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@dataclass
class TrainOutcome:
    """What a training run produced, beside the model weights."""

    history: list[dict[str, float]]
    best_epoch: int
    best_metric: float
    stopped_early: bool
    resumed_from_epoch: int | None
    seconds: float
    train_images_per_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def predict_logits(
    model: TransferModel, split: SplitTensors, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Logits (N, C) of a split, in manifest order, in float32 on the CPU."""
    model.eval().to(device).to(memory_format=torch.channels_last)
    outputs = []
    for images, _ in batches(split, batch_size, False, None, device):
        x = normalize(images, model.mean, model.std).contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            outputs.append(model(x).float().cpu())
    if not outputs:
        return torch.zeros(0, len(model.classes))
    return torch.cat(outputs)


def _val_metrics(logits: torch.Tensor, labels: np.ndarray, n_classes: int) -> dict[str, float]:
    if len(labels) == 0:
        return {
            "val_loss": float("nan"),
            "val_accuracy": float("nan"),
            "val_macro_f1": float("nan"),
        }
    target = torch.tensor(labels, dtype=torch.long)
    loss = nn.functional.cross_entropy(logits, target).item()
    predicted = logits.argmax(1).numpy()
    return {
        "val_loss": loss,
        "val_accuracy": float((predicted == labels).mean()),
        "val_macro_f1": float(
            f1_score(
                labels, predicted, average="macro", labels=list(range(n_classes)), zero_division=0
            )
        ),
    }


def class_weights(labels: np.ndarray, n_classes: int, mode: str) -> torch.Tensor | None:
    """``balanced`` weights (n / (k * count)) or None."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = len(labels) / (n_classes * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)


def _trainable_at(cfg: TrainConfig, epoch: int, strategy: str) -> int | None:
    if strategy == "scratch":
        return None
    trainable = cfg.trainable_stages
    for milestone in sorted(cfg.unfreeze_milestones):
        if epoch >= milestone:
            trainable = cfg.unfreeze_milestones[milestone]
    return trainable


def _is_better(metric: str, value: float, best: float) -> bool:
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value < best if metric.endswith("loss") else value > best


def _save_atomic(payload: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def finetune(
    model: TransferModel,
    train: SplitTensors,
    val: SplitTensors,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    fingerprint: str,
    device: torch.device,
    on_epoch: EpochCallback | None = None,
    stop_after_epoch: int | None = None,
) -> TrainOutcome:
    """Fine-tune (or train from scratch) with checkpoints every epoch and exact resume.

    Args:
        model: The model; its freezing is set here from the strategy and milestones.
        train: Training split (uint8 tensors).
        val: Validation split, for early stopping and the best epoch.
        cfg: The ``train`` params.
        checkpoint_dir: Where ``last.pt`` is written each epoch and read to resume.
        fingerprint: Identity of this run (data version, params, init); a checkpoint with
            another fingerprint is ignored, never resumed.
        device: Where to train.
        on_epoch: Called with the metrics of each epoch (for MLflow).
        stop_after_epoch: Return right after this epoch's checkpoint (to simulate a kill).

    Returns:
        The history and best epoch; ``model`` holds the best epoch's weights.
    """
    started = time.perf_counter()
    strategy = cfg.strategy
    n_classes = len(model.classes)
    # channels-last on CPU too: oneDNN's convolutions (depthwise ones above all) run 2-3x
    # faster on NHWC than on NCHW here (bench/throughput.py)
    model.to(device).to(memory_format=torch.channels_last)
    head_params = list(model.head.parameters())
    backbone_params = list(model.backbone.parameters())
    backbone_lr = cfg.lr * (1.0 if strategy == "scratch" else cfg.backbone_lr_mult)
    optimizer = torch.optim.AdamW(
        [
            {"params": head_params, "lr": cfg.lr},
            {"params": backbone_params, "lr": backbone_lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = max(1, math.ceil(len(train) / cfg.batch_size))
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    weights = class_weights(train.labels, n_classes, cfg.class_weights)
    loss_fn = nn.CrossEntropyLoss(
        weight=None if weights is None else weights.to(device),
        label_smoothing=cfg.label_smoothing,
    )
    aug = Augment(
        cfg.augment.rotation_deg, cfg.augment.scale, cfg.augment.translate, cfg.augment.hflip
    )
    history: list[dict[str, float]] = []
    metric = cfg.early_stopping.metric
    best_metric, best_epoch, bad_epochs = float("nan"), -1, 0
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch, resumed = 0, None
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    last = checkpoint_dir / CHECKPOINT
    if last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=True)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history = state["history"]
            best_metric, best_epoch, bad_epochs = (
                state["best_metric"],
                state["best_epoch"],
                state["bad_epochs"],
            )
            best_state = state["best_state"]
            start_epoch = resumed = state["epoch"] + 1
    scaler_needed = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=scaler_needed)
    trained_images, train_seconds = 0, 0.0
    stopped_early = bad_epochs >= cfg.early_stopping.patience
    for epoch in range(start_epoch, cfg.epochs):
        if stopped_early:
            break
        model.freeze(_trainable_at(cfg, epoch, strategy))
        torch.manual_seed(cfg.seed * 1009 + epoch)  # dropout
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        model.train()
        epoch_start = time.perf_counter()
        running, seen = 0.0, 0
        for images, labels in batches(train, cfg.batch_size, True, generator, device):
            x = augment_batch(normalize(images, model.mean, model.std), aug, generator)
            x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device):
                loss = loss_fn(model(x), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            running += loss.item() * len(labels)
            seen += len(labels)
        epoch_seconds = time.perf_counter() - epoch_start
        trained_images += seen
        train_seconds += epoch_seconds
        logits = predict_logits(model, val, 256, device)
        row = {
            "epoch": float(epoch),
            "train_loss": running / max(seen, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": epoch_seconds,
            **_val_metrics(logits, val.labels, n_classes),
        }
        history.append(row)
        if _is_better(metric, row[metric], best_metric):
            best_metric, best_epoch, bad_epochs = row[metric], epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        stopped_early = bad_epochs >= cfg.early_stopping.patience
        if on_epoch is not None:
            on_epoch(row)
        _save_atomic(
            {
                "fingerprint": fingerprint,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": history,
                "best_metric": best_metric,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
                "best_state": best_state,
            },
            last,
        )
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            return TrainOutcome(
                history,
                best_epoch,
                best_metric,
                False,
                resumed,
                time.perf_counter() - started,
                0.0,
                {"interrupted": True},
            )
    if best_state is not None:
        model.load_state_dict(best_state)
    model.freeze(None)
    model.eval()
    return TrainOutcome(
        history=history,
        best_epoch=best_epoch,
        best_metric=best_metric,
        stopped_early=stopped_early,
        resumed_from_epoch=resumed,
        seconds=time.perf_counter() - started,
        train_images_per_s=trained_images / train_seconds if train_seconds else 0.0,
    )


def linear_probe(
    model: TransferModel,
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    cfg: TrainConfig,
    on_epoch: EpochCallback | None = None,
) -> TrainOutcome:
    """Train only the head on cached backbone features (full batch AdamW, best val epoch kept).

    Args:
        model: The model whose head is trained; its backbone is untouched.
        train_features: (N, D) features of the training split.
        train_labels: (N,) label indices.
        val_features: (M, D) features of the validation split.
        val_labels: (M,) label indices.
        cfg: The ``train`` params (``linear_probe`` section, seed, label smoothing, weights).
        on_epoch: Called every 10 epochs with the metrics.

    Returns:
        History and best epoch; the model's head holds the best weights.
    """
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    probe = cfg.linear_probe
    n_classes = len(model.classes)
    head = nn.Linear(train_features.shape[1], n_classes)
    x_train = torch.from_numpy(train_features).float()
    y_train = torch.tensor(train_labels, dtype=torch.long)
    x_val = torch.from_numpy(val_features).float()
    weights = class_weights(train_labels, n_classes, cfg.class_weights)
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)
    optimizer = torch.optim.AdamW(head.parameters(), lr=probe.lr, weight_decay=probe.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, probe.epochs)
    metric = cfg.early_stopping.metric
    history: list[dict[str, float]] = []
    best_metric, best_epoch = float("nan"), -1
    best_state = {k: v.clone() for k, v in head.state_dict().items()}
    for epoch in range(probe.epochs):
        head.train()
        loss = loss_fn(head(x_train), y_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            row = {
                "epoch": float(epoch),
                "train_loss": float(loss.item()),
                "lr": optimizer.param_groups[0]["lr"],
                **_val_metrics(head(x_val), val_labels, n_classes),
            }
        history.append(row)
        if _is_better(metric, row[metric], best_metric):
            best_metric, best_epoch = row[metric], epoch
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        if on_epoch is not None and (epoch % 10 == 9 or epoch == probe.epochs - 1):
            on_epoch(row)
    model.head.load_state_dict(best_state)
    model.eval()
    seconds = time.perf_counter() - started
    return TrainOutcome(
        history,
        best_epoch,
        best_metric,
        False,
        None,
        seconds,
        len(train_labels) * probe.epochs / seconds if seconds else 0.0,
    )
