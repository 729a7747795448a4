"""Benchmark: two parts of a training step that tlops' numerics and loop decide, measured alone.

1. The AdamW step over a model's parameters: PyTorch's default (a per-parameter loop on CPU),
   ``foreach=True`` and ``fused=True`` (what tlops' loop uses on CPU and CUDA).
2. ``torch.compile`` of a whole training step (forward, backward, AdamW) at 64 px, batch 64,
   channels-last: the compile time (the first two steps) and the steady step time against eager;
   this is what ``COMPILE_SECONDS`` in ``tlops.models.numerics`` estimates. Inductor's caches
   go to a fresh temporary directory, so the compile is a cold one, as on a new machine or pod.

    .venv/bin/python bench/step_parts.py
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import warnings
from typing import Any

import torch

from machine import describe
from tlops.models.init import create_model

MODELS = {"ResNet-18": "torchvision:resnet18", "EfficientNet-Lite0": "timm:tf_efficientnet_lite0"}


def optimizer_ms(spec: str, **kwargs: Any) -> float:
    model = create_model(spec, [str(i) for i in range(10)], pretrained=False)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, **kwargs)
    for _ in range(3):
        optimizer.step()
    times = []
    for _ in range(20):
        started = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def step_seconds(spec: str, compiled: bool) -> tuple[float, float]:
    """(seconds of the first two steps, median seconds of 5 steps after them)."""
    torch.manual_seed(0)
    model = create_model(spec, [str(i) for i in range(10)], pretrained=False)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    forward = torch.compile(model) if compiled else model
    x = torch.randn(64, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    started = time.perf_counter()
    step()
    step()
    first = time.perf_counter() - started
    times = []
    for _ in range(5):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return first, statistics.median(times)


def main() -> None:
    warnings.filterwarnings("ignore")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    print(f"machine: {describe()}\n")
    print("| model | AdamW step, default (ms) | foreach (ms) | fused (ms) |")
    print("|---|---|---|---|")
    for name, spec in MODELS.items():
        default, foreach, fused = (
            optimizer_ms(spec),
            optimizer_ms(spec, foreach=True),
            optimizer_ms(spec, fused=True),
        )
        print(f"| {name} | {default:.1f} | {foreach:.1f} | {fused:.1f} |")
    print("\n| model | eager step (s) | compiled: first two steps (s) | compiled step (s) |")
    print("|---|---|---|---|")
    for name, spec in MODELS.items():
        _, eager = step_seconds(spec, False)
        first, compiled = step_seconds(spec, True)
        print(f"| {name} | {eager:.3f} | {first:.1f} | {compiled:.3f} |", flush=True)


if __name__ == "__main__":
    main()
