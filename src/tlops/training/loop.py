"""Training: a strategy's model trained with checkpoints, exact resume and early stopping.

:func:`fit` prepares the model and the strategy, then runs the loop
(:class:`tlops.training.engine.Loop`: epochs and optimiser steps) with its callbacks
(:mod:`tlops.training.callbacks`: the fp32 fallback, early stopping, the per-epoch report, the
checkpoints). Determinism: see :mod:`tlops.training.engine`. The loop knows no strategy by name
(see :mod:`tlops.training.strategies`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tlops.config import TrainConfig
from tlops.models.inference import FP32
from tlops.models.mixed import fp32_where_training
from tlops.models.model import TransferModel
from tlops.models.numerics import Numerics
from tlops.training.callbacks import (
    CHECKPOINT,
    AccuracyGuard,
    Checkpoint,
    EarlyStopping,
    EpochCallback,
    EpochLog,
    NonFiniteLoss,
    NumericsFallback,
)
from tlops.training.distributed import Group, sync_batchnorm
from tlops.training.engine import Callback, Loop, adamw, val_metrics, warmup_cosine
from tlops.training.strategies import Strategy, TrainData

# what callers import from here (the loop's pieces moved to engine and callbacks)
__all__ = [
    "CHECKPOINT",
    "EpochCallback",
    "NonFiniteLoss",
    "TrainOutcome",
    "adamw",
    "fit",
    "val_metrics",
    "warmup_cosine",
]


def counted_from_one(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """History rows as the model output keeps them.

    Epochs counted from 1 (as the console and MLflow count), without the wall-clock time (a
    fact of the run, kept beside the output in step.json).
    """
    return [
        {**{k: v for k, v in row.items() if k != "epoch_seconds"}, "epoch": int(row["epoch"]) + 1}
        for row in rows
    ]


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
    numerics: str  # the spec of what trained (fp32 after a fallback)
    fallback: str | None = None  # why reduced precision was abandoned, if it was
    metric: str = "val_accuracy"  # the row key that picked the best epoch

    def stop_reason(self, cfg: TrainConfig) -> str | None:
        """Why training ended before ``train.epochs`` (None: it ran them all)."""
        if not self.stopped_early:
            return None
        stopping, ran = cfg.early_stopping, len(self.history)
        return (
            f"stopped early after epoch {ran} of {cfg.epochs}: {self.metric} did not "
            f"improve on epoch {self.best_epoch + 1}'s {self.best_metric:.4f} for "
            f"{ran - self.best_epoch - 1} epochs (train.early_stopping.patience "
            f"{stopping.patience})"
        )


def fit(
    strategy: Strategy,
    model: TransferModel,
    data: TrainData,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    fingerprint: str,
    device: torch.device,
    on_epoch: EpochCallback | None = None,
    numerics: Numerics = FP32,
    group: Group | None = None,
    batchnorm: str = "batch",
    probe: dict[str, float] | None = None,
) -> TrainOutcome:
    """Train ``model`` with ``strategy``; checkpoint every epoch and resume exactly.

    A loss that turns non-finite under bf16/fp16 autocast, or a first epoch whose validation
    falls behind the fp32 ``probe``'s, restarts the training from its initial state in fp32
    (same layout), which then ends exactly as a run pinned to fp32 would;
    ``TrainOutcome.fallback`` says why. A non-finite loss in fp32 is an error.

    Args:
        strategy: What to train on and how (its loss, parameter groups, freezing).
        model: The model; its freezing is set here from the strategy.
        data: What the strategy declared it needs.
        cfg: The ``train`` params (seed, early stopping).
        checkpoint_dir: Where ``last.pt`` is written each epoch and read to resume.
        fingerprint: Identity of this run (data version, params, init); a checkpoint with
            another fingerprint is ignored, never resumed.
        device: Where to train.
        on_epoch: Called with the metrics of every ``strategy.log_every``-th epoch and the last.
        numerics: Precision, memory layout and compilation (see :mod:`tlops.models.numerics`).
        group: The data-parallel group under torchrun (None: one process); rank 0 alone
            writes the checkpoints and calls ``on_epoch`` (:mod:`tlops.training.distributed`).
        batchnorm: ``batch``, ``sync`` or ``frozen``
            (:func:`tlops.training.distributed.batchnorm_mode`).
        probe: The fp32 probe's first validation row (:func:`tlops.training.calibration.
            probe_fp32`): a reduced-precision first epoch must keep up with it.

    Returns:
        The history and best epoch (``strategy.selection_metric()``); ``model`` has its weights.

    Raises:
        NonFiniteLoss: The loss is NaN or infinite in fp32.
    """
    started = time.perf_counter()
    model.to(device).to(memory_format=numerics.memory_format)
    strategy.numerics = numerics
    fp32_where_training(model, numerics.precision == "bf16-frozen")
    strategy.modules().to(device)
    strategy.work_dir = checkpoint_dir
    strategy.shard = group.shard() if group is not None else None
    if batchnorm == "sync" and group is not None:
        sync_batchnorm(model)
    strategy.prepare(model, data, device)
    fallback = NumericsFallback(strategy.state(model))  # the state before any compilation
    if numerics.compile:
        model.compile()  # in place: the state dict keeps its keys
    # in this order: an epoch's report reads the early stop it decided, and is made before the
    # epoch's checkpoint is written (see tlops.training.callbacks)
    metric = strategy.selection_metric()  # or a label-free criterion (train.selection)
    early = EarlyStopping(metric, cfg.early_stopping.patience)
    checkpoint = Checkpoint(checkpoint_dir, fingerprint)
    report = [EpochLog(on_epoch, strategy.log_every)] if on_epoch is not None else []
    guard = [AccuracyGuard(probe, cfg.early_stopping.metric)] if probe is not None else []
    callbacks: list[Callback] = [fallback, *guard, early, *report, checkpoint]
    loop = Loop(strategy, model, data, cfg.seed, device, callbacks, group, batchnorm)
    loop.run()
    return TrainOutcome(
        history=loop.history,
        best_epoch=early.best_epoch,
        best_metric=early.best_metric,
        stopped_early=early.stopped,
        resumed_from_epoch=checkpoint.resumed,
        seconds=time.perf_counter() - started,  # the preparation included
        train_images_per_s=loop.trained / loop.train_seconds if loop.train_seconds else 0.0,
        numerics=loop.numerics.spec,  # fp32 after a fallback
        fallback=fallback.reason,
        metric=metric,
    )
