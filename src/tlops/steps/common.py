"""Helpers the model steps share: the class list, the splits as tensors, fingerprints."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlops.config import SPLITS, Params
from tlops.data.tensors import SplitTensors, load_split
from tlops.io import read_json
from tlops.steps.ingest_data import IMAGES_DIR, INGEST_FILE


def ingest_info(ingest_dir: Path) -> dict[str, Any]:
    """``ingest.json`` of an ``ingest_data`` output."""
    path = ingest_dir / INGEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not an ingest_data output")
    info: dict[str, Any] = read_json(path)
    return info


def class_list(params: Params, ingest: dict[str, Any]) -> list[str]:
    """The target classes, in output order: ``validate_data.classes``, else the class folders."""
    if params.validate_data.classes is not None:
        return list(params.validate_data.classes)
    return sorted(ingest["classes"])


def load_splits(
    params: Params,
    ingest_dir: Path,
    classes: list[str],
    splits: tuple[str, ...] = SPLITS,
    progress: Callable[[int], None] | None = None,
    image_size: int | None = None,
) -> dict[str, SplitTensors]:
    """Decode the requested splits of an ingest output (cached by data version).

    ``image_size`` overrides ``model.image_size`` (a champion is scored at its own resolution).
    """
    from tlops.steps.validate_data import load_manifest

    ingest = ingest_info(ingest_dir)
    manifest = load_manifest(ingest_dir)
    return {
        split: load_split(
            ingest_dir / IMAGES_DIR,
            manifest,
            split,
            classes,
            params.model.image_size,
            params.image,
            params.extract_features.cache_dir / "images",
            str(ingest["data_version"]),
            progress,
        )
        for split in splits
    }


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
