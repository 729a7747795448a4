"""The machine line every benchmark prints with its results."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    """CPU model, cores, torch and Python versions."""
    model = "unknown cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    torch_part = ""
    try:
        import torch

        torch_part = f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
        if torch.cpu._is_amx_tile_supported():
            torch_part += ", bf16 units: AMX"
        elif torch.cpu._is_avx512_bf16_supported():
            torch_part += ", bf16 units: AVX512-BF16 without AMX"
        else:
            torch_part += ", no bf16 units"
    except ImportError:
        pass
    return f"{model}, {os.cpu_count()} cores{torch_part}, Python {platform.python_version()}"
