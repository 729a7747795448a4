"""What a device computes in: its bf16 units, whether it compiles, its precisions.

And what identifies it, so that a calibration cached on one machine is not reused on another
(:func:`machine`). :mod:`tlops.models.numerics` times the candidates these allow.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def bf16_units(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (CPU: AMX or AVX512-BF16; CUDA: Ampere+)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def precisions(device: torch.device) -> list[str]:
    """The precisions worth timing on ``device`` (emulated bf16 never wins, so it is not)."""
    if device.type == "cuda":
        return ["fp32", "bf16" if bf16_units(device) else "fp16"]
    return ["fp32", "bf16"] if bf16_units(device) else ["fp32"]


def can_compile(device: torch.device) -> bool:
    """Whether ``torch.compile``'s inductor backend can build kernels for ``device`` here."""
    if device.type == "cpu":
        return shutil.which(os.environ.get("CXX", "g++")) is not None
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return bool(has_triton())
    return False


def machine(device: torch.device) -> dict[str, Any]:
    """What makes timings of one machine differ from another's (part of the cache key)."""
    info: dict[str, Any] = {"torch": torch.__version__, "device": device.type}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info["gpu"] = torch.cuda.get_device_name(index)
        info["capability"] = list(torch.cuda.get_device_capability(index))
    else:
        info["cpu"] = _cpu_model()
        info["isa"] = torch.backends.cpu.get_cpu_capability()
        info["bf16_units"] = bf16_units(device)
        info["threads"] = torch.get_num_threads()
    return info


def machine_label(device: torch.device) -> str:
    """The machine in a few words, for figures that differ by machine (``dvc metrics diff``)."""
    info = machine(device)
    where = info.get("gpu") or f"{info['cpu']}, {info['threads']} threads"
    return f"{where}, torch {info['torch']}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextmanager
def synchronized(device: torch.device) -> Iterator[None]:
    """Wait for queued device work before and after (CUDA is asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
