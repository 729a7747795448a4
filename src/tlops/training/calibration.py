"""Calibrating ``train.numerics``: time training steps of each candidate on a copy, pick one.

The candidates run on deep copies of the model and the strategy with a throwaway optimiser,
so calibrating changes nothing of the training that follows: an ``auto`` run ends exactly as a
run pinned to the same choice.
"""

from __future__ import annotations

import copy
import itertools
import time
from pathlib import Path
from typing import Any

import torch

from tlops.models.device import synchronized
from tlops.models.model import TransferModel
from tlops.models.numerics import (
    TIMED,
    WARMUP,
    Choice,
    Measurement,
    Numerics,
    Search,
    choose,
    median_seconds,
)
from tlops.training.engine import adamw
from tlops.training.strategies import Need, Strategy, TrainData
from tlops.training.strategies.base import Batch


def _measure(
    strategy: Strategy, model: TransferModel, data: TrainData, device: torch.device
) -> Any:
    def measure(numerics: Numerics) -> Measurement:
        s, m = copy.deepcopy(strategy), copy.deepcopy(model)
        m.to(device).to(memory_format=numerics.memory_format)
        s.numerics = numerics
        extra = s.modules().to(device)
        s.prepare(m, data, device)
        m.freeze(s.trainable_stages(0))
        m.train()
        extra.train()
        groups = s.param_groups(m)
        if len(extra):
            groups.append({"params": list(extra.parameters())})
        plan = s.schedule()
        optimizer = adamw(groups, plan.lr, plan.weight_decay, device)
        scaler = torch.amp.GradScaler(device.type, enabled=numerics.needs_scaler)
        generator = torch.Generator().manual_seed(0)
        first: list[Batch] = list(
            itertools.islice(s.batches(data, generator, device), WARMUP + TIMED)
        )
        batch_iter = itertools.cycle(first)
        setup_start = time.perf_counter()
        if numerics.compile:
            m.compile()
        times: list[float] = []
        for i in range(WARMUP + TIMED):
            batch = next(batch_iter)
            with synchronized(device):
                started = time.perf_counter()
                with numerics.autocast(device):
                    loss = s.loss(m, batch, generator)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
                scaler.step(optimizer)
                scaler.update()
                loss.item()
            if i >= WARMUP:
                times.append(time.perf_counter() - started)
        setup = time.perf_counter() - setup_start - sum(times) - median_seconds(times) * WARMUP
        return Measurement(median_seconds(times), max(0.0, setup))

    return measure


def training_numerics(
    setting: str,
    strategy: Strategy,
    model: TransferModel,
    data: TrainData,
    device: torch.device,
    cache_file: Path | None,
) -> Choice:
    """Resolve ``train.numerics`` for this strategy, model and data on ``device``.

    Args:
        setting: ``auto`` or a pinned form (see :mod:`tlops.models.numerics`).
        strategy: The strategy (its loss, batches and parameter groups are what is timed).
        model: The model to train (copied, never changed here).
        data: What the strategy trains on (its first batches are timed).
        device: Where training runs.
        cache_file: Where choices are cached (None: no cache).

    Returns:
        The choice, with the timings behind it.
    """
    units = strategy.steps_per_epoch(data) * strategy.schedule().epochs
    images = Need.IMAGES in strategy.needs
    return choose(
        setting,
        device,
        units,
        _measure(strategy, model, data, device),
        Search.on(device, images=images),
        cache_file,
        {
            "purpose": "train",
            "strategy": strategy.name,
            "model": model.spec,
            "image_size": model.image_size,
            "batch_size": strategy.cfg.batch_size if images else len(data.train_labels()),
            "trainable_stages": strategy.trainable_stages(0),
            "classes": len(data.classes),
        },
    )
