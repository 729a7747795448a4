"""A model over a whole split: logits or pooled features, batch by batch, in manifest order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from tlops.data.tensors import SplitTensors, batches, normalize
from tlops.models.model import TransferModel


def autocast(device: torch.device) -> Any:
    """Mixed precision on CUDA (bf16 where supported, else fp16); full fp32 on CPU."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def _inputs(model: TransferModel, images: torch.Tensor) -> torch.Tensor:
    # channels-last: oneDNN's (depthwise above all) convolutions run 2-3x faster on NHWC on CPU
    return normalize(images, model.mean, model.std).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def _over_split(
    model: TransferModel,
    split: SplitTensors,
    batch_size: int,
    device: torch.device,
    forward: Callable[[torch.Tensor], torch.Tensor],
) -> list[torch.Tensor]:
    """``forward`` of every batch of a split (eval mode, channels-last), as float32 on the CPU."""
    model.eval().to(device).to(memory_format=torch.channels_last)
    outputs = []
    for images, _ in batches(split, batch_size, False, None, device):
        with autocast(device):
            outputs.append(forward(_inputs(model, images)).float().cpu())
    return outputs


def predict_logits(
    model: TransferModel, split: SplitTensors, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Logits (N, C) of a split, in manifest order, in float32 on the CPU."""
    outputs = _over_split(model, split, batch_size, device, model)
    return torch.cat(outputs) if outputs else torch.zeros(0, len(model.classes))


def pooled_features(
    model: TransferModel, split: SplitTensors, batch_size: int, device: torch.device
) -> np.ndarray:
    """Pooled backbone features (N, D) of a split, float32, in manifest order."""
    outputs = _over_split(model, split, batch_size, device, model.features)
    if not outputs:
        return np.zeros((0, model.num_features), dtype=np.float32)
    return torch.cat(outputs).numpy().astype(np.float32)
