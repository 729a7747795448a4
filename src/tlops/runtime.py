"""Where and how reproducibly a step computes: the device and the seeds."""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "TLOPS_DEVICE"


def resolve_device(name: str = "auto") -> torch.device:
    """The device to compute on: ``TLOPS_DEVICE`` wins, then ``name``; ``auto`` prefers CUDA.

    Raises:
        ValueError: CUDA is asked for and not available.
    """
    import torch

    chosen = os.environ.get(DEVICE_ENV) or name
    if chosen == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(chosen)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {chosen!r} requested ({DEVICE_ENV} or runtime.device) but CUDA is not "
            "available on this machine"
        )
    return device


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python, and ask for deterministic kernels."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    # cuBLAS needs this for deterministic matmuls on CUDA
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def torchrun_rank() -> tuple[int, int] | None:
    """(rank, world size) of a process torchrun started for more than one process, else None.

    torchrun (and a Kubeflow Trainer TrainJob, which runs it) sets ``RANK`` and ``WORLD_SIZE``;
    read here without importing torch, for runners that must know whether they lead.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return int(os.environ.get("RANK", "0") or 0), world


def is_follower() -> bool:
    """Whether this is a data-parallel process other than rank 0 (it logs and writes nothing)."""
    found = torchrun_rank()
    return found is not None and found[0] != 0
