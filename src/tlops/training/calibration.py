"""Calibrating ``train.numerics``: time training steps of each candidate on a copy, pick one.

The candidates run on deep copies of the model and the strategy with a throwaway optimiser,
so calibrating changes nothing of the training that follows: an ``auto`` run ends exactly as a
run pinned to the same choice.

Speed is not the whole choice: a precision other than fp32 that the timings favour is kept
only where it is known to hold the model family's accuracy (:mod:`tlops.models.evidence`,
recorded by bench/numerics_accuracy.py), or, for a family without a verdict, after a probe:
the run's first epoch trained in fp32 on a copy (``1 / train.epochs`` of the run's epochs,
offered only when that is at most :data:`PROBE_SHARE`), which the run's own first epoch must
keep up with (:class:`tlops.training.callbacks.AccuracyGuard`).
"""

from __future__ import annotations

import copy
import itertools
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from tlops.models.device import synchronized
from tlops.models.evidence import lookup
from tlops.models.mixed import fp32_where_training
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
    parse,
)
from tlops.training.engine import Callback, Loop, adamw
from tlops.training.strategies import Need, Strategy, TrainData
from tlops.training.strategies.base import Batch

PROBE_SHARE = 0.25  # the most of a run's epochs an fp32 probe epoch may cost (4+ epochs)


def _measure(
    strategy: Strategy, model: TransferModel, data: TrainData, device: torch.device
) -> Any:
    def measure(numerics: Numerics) -> Measurement:
        s, m = copy.deepcopy(strategy), copy.deepcopy(model)
        m.to(device).to(memory_format=numerics.memory_format)
        s.numerics = numerics
        fp32_where_training(m, numerics.precision == "bf16-frozen")
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
    seed: int = 0,
) -> Choice:
    """Resolve ``train.numerics`` for this strategy, model and data on ``device``.

    Args:
        setting: ``auto`` or a pinned form (see :mod:`tlops.models.numerics`).
        strategy: The strategy (its loss, batches and parameter groups are what is timed).
        model: The model to train (copied, never changed here).
        data: What the strategy trains on (its first batches are timed).
        device: Where training runs.
        cache_file: Where choices are cached (None: no cache).
        seed: ``train.seed`` (an fp32 probe epoch sees what the run's first epoch will).

    Returns:
        The choice, with the timings and the accuracy evidence behind it; ``probe`` holds the
        fp32 probe's validation row when the run must keep up with it.
    """
    units = strategy.steps_per_epoch(data) * strategy.schedule().epochs
    images = Need.IMAGES in strategy.needs
    choice = choose(
        setting,
        device,
        units,
        _measure(strategy, model, data, device),
        Search.on(device, images=images, training=True),
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
    if choice.source == "pinned" or choice.numerics.precision == "fp32":
        return choice  # pinned: the params decided; fp32: nothing to guard
    return _accuracy_gate(choice, strategy, model, data, device, seed)


def _accuracy_gate(
    choice: Choice,
    strategy: Strategy,
    model: TransferModel,
    data: TrainData,
    device: torch.device,
    seed: int,
) -> Choice:
    """Keep a faster reduced precision only on evidence or behind a probe (module docstring)."""
    precision, family = choice.numerics.precision, model.spec
    evidence = lookup(family, precision)
    if evidence is not None:
        choice.accuracy = evidence.describe()
        return choice if evidence.holds else _fp32_instead(choice, evidence.describe())
    epochs = strategy.schedule().epochs
    if 1 / epochs > PROBE_SHARE:
        return _fp32_instead(
            choice,
            f"no accuracy evidence for {precision} on {family}, and an fp32 probe epoch "
            f"would cost 1/{epochs} of the run (at most {PROBE_SHARE:.0%})",
        )
    started = time.perf_counter()
    choice.probe = probe_fp32(strategy, model, data, device, seed, choice.numerics)
    choice.accuracy = (
        f"no accuracy evidence for {precision} on {family}: an fp32 probe epoch "
        f"({time.perf_counter() - started:.1f} s, 1/{epochs} of the run) sets what the "
        f"run's first epoch must reach"
    )
    return choice


def _fp32_instead(choice: Choice, why: str) -> Choice:
    """The fastest timed fp32 candidate in place of a reduced precision, and why."""
    fp32 = [spec for spec in choice.timings if spec.startswith("fp32+")]
    chosen = min(fp32, key=choice.timings.__getitem__) if fp32 else None
    numerics = (parse(chosen) if chosen else None) or replace(choice.numerics, precision="fp32")
    faster = f"{choice.numerics.precision} was {choice.speedup or 0:.2f}x the default"
    choice.accuracy = why
    choice.reason = f"fp32 for accuracy ({faster}): {choice.reason}"
    choice.numerics = numerics
    return choice


class _StopAfterFirst(Callback):
    def on_epoch_end(self, loop: Loop, epoch: int, row: dict[str, float]) -> None:
        loop.should_stop = True


def probe_fp32(
    strategy: Strategy,
    model: TransferModel,
    data: TrainData,
    device: torch.device,
    seed: int,
    numerics: Numerics,
) -> dict[str, float]:
    """The run's first epoch in fp32 on copies: its validation row (what the run must reach).

    The copies see the batches, augmentations and dropout the run's first epoch will (the
    loop seeds them from (seed, epoch)), in the run's memory layout, eager.
    """
    s, m = copy.deepcopy(strategy), copy.deepcopy(model)
    s.numerics = replace(numerics, precision="fp32", compile=False)
    m.to(device).to(memory_format=s.numerics.memory_format)
    s.modules().to(device)
    s.prepare(m, data, device)
    loop = Loop(s, m, data, seed, device, [_StopAfterFirst()])
    loop.run()
    return loop.history[0]
