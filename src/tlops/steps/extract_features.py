"""Step ``extract_features``: a frozen backbone over every split -> features per split.

Outputs (in ``out_dir``): ``<split>.npy`` (float32, N x D), ``<split>_index.csv`` (path, label in
the same row order) and ``features.json`` (backbone, data version, throughput). Features are
reused from ``extract_features.cache_dir`` when the data version, backbone and image params are
unchanged.
"""

from __future__ import annotations

import csv
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlops.config import SPLITS, Params
from tlops.data.tensors import batches, normalize
from tlops.io import atomic_dir, read_json, write_json
from tlops.models.backbones import TransferModel, create_model
from tlops.steps.common import class_list, fingerprint, ingest_info, load_splits
from tlops.tracking.runs import log_metrics, set_tags
from tlops.train.loop import resolve_device

META_FILE = "features.json"


@dataclass(frozen=True)
class FeaturesResult:
    """What ``extract_features`` returns."""

    key: str
    reused: bool
    num_features: int
    counts: dict[str, int]
    images_per_s: float
    out_dir: Path


@torch.no_grad()
def extract(model: TransferModel, images: Any, batch_size: int, device: torch.device) -> np.ndarray:
    """Pooled features of uint8 images (a SplitTensors), float32 (N, D)."""
    model.eval().to(device).to(memory_format=torch.channels_last)
    chunks = []
    for batch, _ in batches(images, batch_size, False, None, device):
        x = normalize(batch, model.mean, model.std).contiguous(memory_format=torch.channels_last)
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                chunks.append(model.features(x).float().cpu().numpy())
        else:
            chunks.append(model.features(x).numpy())
    if not chunks:
        return np.zeros((0, model.num_features), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32)


def run(
    params: Params,
    ingest_dir: Path,
    out_dir: Path,
    run_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> FeaturesResult:
    """Extract features of every split with the frozen ``model.backbone``.

    Args:
        params: Resolved params (reads ``model``, ``image``, ``extract_features``).
        ingest_dir: An ``ingest_data`` output.
        out_dir: Output directory (replaced).
        run_id: MLflow run to log into.
        progress: Called with 1 per decoded image.

    Returns:
        Counts, feature width and throughput.
    """
    ingest = ingest_info(ingest_dir)
    classes = class_list(params, ingest)
    key = fingerprint(
        ingest["data_version"],
        params.model.backbone,
        params.model.pretrained,
        params.model.image_size,
        params.image.model_dump(mode="json"),
        classes,
    )
    cached = params.extract_features.cache_dir / "features" / key
    reused = (cached / META_FILE).is_file()
    if not reused:
        splits = load_splits(params, ingest_dir, classes, progress=progress)
        device = resolve_device(params.train.device)
        model = create_model(params.model.backbone, classes, params.model.pretrained)
        counts, seconds = {}, 0.0
        with atomic_dir(cached) as staging:
            for split in SPLITS:
                started = time.perf_counter()
                features = extract(model, splits[split], params.extract_features.batch_size, device)
                seconds += time.perf_counter() - started
                np.save(staging / f"{split}.npy", features)
                with (staging / f"{split}_index.csv").open(
                    "w", newline="", encoding="utf-8"
                ) as handle:
                    writer = csv.writer(handle)
                    writer.writerow(["path", "label"])
                    for path, label in zip(splits[split].paths, splits[split].labels, strict=True):
                        writer.writerow([path, classes[label]])
                counts[split] = len(splits[split])
            total = sum(counts.values())
            write_json(
                staging / META_FILE,
                {
                    "key": key,
                    "backbone": params.model.backbone,
                    "weights": model.weights,
                    "pretrained": params.model.pretrained,
                    "image_size": params.model.image_size,
                    "data_version": ingest["data_version"],
                    "classes": classes,
                    "num_features": model.num_features,
                    "counts": counts,
                    "seconds": seconds,
                    "images_per_s": total / seconds if seconds else 0.0,
                    "device": str(device),
                },
            )
    meta = read_json(cached / META_FILE)
    with atomic_dir(out_dir) as staging:
        for file in cached.iterdir():
            shutil.copy2(file, staging / file.name)
        write_json(staging / META_FILE, {**meta, "reused": reused})
    log_metrics(params.tracking, run_id, {"features_images_per_s": meta["images_per_s"]})
    set_tags(params.tracking, run_id, {"features.reused": reused, "features.key": key})
    return FeaturesResult(
        key,
        reused,
        int(meta["num_features"]),
        dict(meta["counts"]),
        float(meta["images_per_s"]),
        out_dir,
    )
