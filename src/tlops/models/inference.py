"""A model over a whole split: logits or pooled features, batch by batch, in manifest order."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tlops.data.tensors import SplitTensors, batches, normalize
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

FP32 = Numerics()


def _inputs(model: TransferModel, images: torch.Tensor, numerics: Numerics) -> torch.Tensor:
    # channels-last (the default): oneDNN's depthwise convolutions run 2-3x faster on NHWC
    return normalize(images, model.mean, model.std).contiguous(memory_format=numerics.memory_format)


def _forward(model: TransferModel, features: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    return model.features if features else model


@torch.no_grad()
def _over_split(
    model: TransferModel,
    split: SplitTensors,
    batch_size: int,
    device: torch.device,
    features: bool,
    numerics: Numerics,
) -> list[torch.Tensor]:
    """The model (or its features) on every batch of a split, as float32 on the CPU."""
    model.eval().to(device).to(memory_format=numerics.memory_format)
    forward = _forward(model, features)
    outputs = []
    for images, _ in batches(split, batch_size, False, None, device):
        with numerics.autocast(device):
            outputs.append(forward(_inputs(model, images, numerics)).float().cpu())
    return outputs


def predict_logits(
    model: TransferModel,
    split: SplitTensors,
    batch_size: int,
    device: torch.device,
    numerics: Numerics = FP32,
) -> torch.Tensor:
    """Logits (N, C) of a split, in manifest order, in float32 on the CPU."""
    outputs = _over_split(model, split, batch_size, device, False, numerics)
    return torch.cat(outputs) if outputs else torch.zeros(0, len(model.classes))


def pooled_features(
    model: TransferModel,
    split: SplitTensors,
    batch_size: int,
    device: torch.device,
    numerics: Numerics = FP32,
) -> np.ndarray:
    """Pooled backbone features (N, D) of a split, float32, in manifest order."""
    outputs = _over_split(model, split, batch_size, device, True, numerics)
    if not outputs:
        return np.zeros((0, model.num_features), dtype=np.float32)
    return torch.cat(outputs).numpy().astype(np.float32)


def inference_numerics(
    setting: str,
    model: TransferModel,
    splits: list[SplitTensors],
    batch_size: int,
    device: torch.device,
    cache_file: Path | None,
    features: bool = False,
    decides: bool = False,
) -> Choice:
    """Resolve ``setting`` for a model over ``splits`` (see :mod:`tlops.models.numerics`).

    Candidates are precisions and memory layouts; compiling is not tried for inference (one
    pass over a split rarely pays back a compilation). With ``decides`` (figures a decision
    reads: evaluate's metrics, which the gate compares), ``auto`` computes in fp32 on every
    device and times only the memory layouts; a pinned precision is still obeyed.
    """
    units = sum(math.ceil(len(s) / batch_size) for s in splits)
    sample = next((s for s in splits if len(s)), None)

    @torch.no_grad()
    def measure(numerics: Numerics) -> Measurement:
        assert sample is not None
        model.eval().to(device).to(memory_format=numerics.memory_format)
        forward = _forward(model, features)
        batch_iter = itertools.cycle(list(_first_batches(sample, batch_size, device)))
        times = []
        for i in range(WARMUP + TIMED):
            images = next(batch_iter)
            with synchronized(device):
                started = time.perf_counter()
                with numerics.autocast(device):
                    forward(_inputs(model, images, numerics)).float().cpu()
            if i >= WARMUP:
                times.append(time.perf_counter() - started)
        return Measurement(median_seconds(times))

    if sample is None:
        units = 0  # nothing to run: the default, not a calibration
    search = Search.on(device, images=True, compile_=False)
    return choose(
        setting,
        device,
        units,
        measure,
        replace(search, precisions=("fp32",)) if decides else search,
        cache_file,
        {
            "purpose": "features" if features else "logits",
            "model": model.spec,
            "image_size": int(sample.images.shape[-1]) if sample is not None else 0,
            "batch_size": batch_size,
            **({"precisions": "fp32"} if decides else {}),
        },
        default=FP32 if decides else None,
    )


def _first_batches(
    split: SplitTensors, batch_size: int, device: torch.device
) -> list[torch.Tensor]:
    out = []
    for images, _ in batches(split, batch_size, False, None, device):
        out.append(images)
        if len(out) == WARMUP + TIMED:
            break
    return out
