"""Pooled features of individual images, cached by content hash for one model.

The drift check of ``detect_change`` embeds the champion's held-out images and the new ones in
the champion's feature space. Most of those images were embedded by the previous check, so
features are kept per image sha256 in one file per model (``<key>.npz``): a check with nothing
new decodes and runs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from tlops.config import ImageConfig
from tlops.data.images import load_image
from tlops.data.tensors import SplitTensors, model_input
from tlops.models.inference import pooled_features
from tlops.models.model import TransferModel


def _read_cache(path: Path) -> dict[str, NDArray[np.float32]]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as stored:
            return dict(zip(stored["sha256"].tolist(), stored["features"], strict=True))
    except (OSError, ValueError, KeyError):  # a torn or foreign file is a cache miss
        return {}


def _write_cache(path: Path, cache: dict[str, NDArray[np.float32]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    keys = sorted(cache)
    with partial.open("wb") as handle:
        np.savez(handle, sha256=np.array(keys), features=np.stack([cache[k] for k in keys]))
    partial.replace(path)  # atomic: a concurrent reader sees the old file or the new one


def embed_images(
    load_model: Callable[[], TransferModel],
    images: Sequence[tuple[str, Path]],
    image_cfg: ImageConfig,
    cache_file: Path,
    batch_size: int,
    device: torch.device,
) -> tuple[NDArray[np.float32], int]:
    """Pooled features of ``images`` (``(sha256, file)`` pairs), in order.

    Args:
        load_model: Gives the model whose feature space is wanted; called only when an image
            is not in the cache (loading a registered model costs seconds).
        images: Content hash and file of each image; a hash in the cache is not decoded.
        image_cfg: How images are read.
        cache_file: The model's feature cache (created or extended).
        batch_size: Inference batch size.
        device: Where the model runs.

    Returns:
        ``(features (N, D) float32, number of images that had to be embedded)``.
    """
    cache = _read_cache(cache_file)
    missing = [(sha, path) for sha, path in dict(images).items() if sha not in cache]
    if missing:
        model = load_model()
        size = model.image_size or 64
        channels = 3 if image_cfg.mode == "RGB" else 1
        pixels = np.empty((len(missing), channels, size, size), dtype=np.uint8)
        for i, (_, path) in enumerate(missing):
            image, _ = load_image(path, image_cfg)
            pixels[i] = model_input(image, size, model.align)
        split = SplitTensors(
            pixels, np.zeros(len(missing), dtype=np.int64), [str(p) for _, p in missing]
        )
        features = pooled_features(model.to(device).eval(), split, batch_size, device)
        cache.update({sha: features[i] for i, (sha, _) in enumerate(missing)})
        _write_cache(cache_file, cache)
    if not images:
        return np.zeros((0, 0), dtype=np.float32), 0
    return np.stack([cache[sha] for sha, _ in images]).astype(np.float32), len(missing)
