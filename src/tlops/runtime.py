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
