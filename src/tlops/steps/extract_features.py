"""Step ``extract_features``: a frozen backbone over every split -> features per split.

Outputs (in the ``features`` directory): ``<split>.npy`` (float32, N x D),
``<split>_index.csv`` (path, label in the same row order) and ``features.json`` (backbone,
data version, throughput). Features are reused from ``extract_features.cache_dir`` when the data
version, backbone and image params are unchanged.
"""

from __future__ import annotations

import csv
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlops.config import SPLITS, Params
from tlops.data.dataset import class_list, ingest_info, load_splits
from tlops.io import atomic_dir, fingerprint, read_json, write_json
from tlops.layout import FEATURES_FILE, NUMERICS_CACHE
from tlops.runner.spec import Port, StepIO, StepResult, StepSpec
from tlops.runtime import resolve_device
from tlops.steps.ingest_data import dataset_input
from tlops.tracking import lifecycle

if TYPE_CHECKING:
    from tlops.data.tensors import SplitTensors


def run(params: Params, io: StepIO) -> StepResult:
    """Extract features of every split with the frozen ``model.backbone``.

    Features are computed once per (data version, backbone, image params, classes) under
    ``extract_features.cache_dir`` and copied from there when asked again.

    Args:
        params: Resolved params (reads ``model``, ``image``, ``extract_features``, ``runtime``).
        io: Input ``dataset`` (an ingest_data output); output ``features`` (replaced).

    Returns:
        Counts, feature width and throughput: the console line and the ``features``
        metadata.
    """
    ingest_dir, out_dir = io.inputs["dataset"], io.outputs["features"]
    ingest = ingest_info(ingest_dir)
    classes = class_list(params, ingest)
    key = fingerprint(
        ingest["data_version"],
        params.model.backbone,
        params.model.pretrained,
        params.model.image_size,
        params.image.model_dump(mode="json"),
        classes,
        params.extract_features.numerics,  # the setting: auto's choice is in features.json
    )
    cached = params.extract_features.cache_dir / "features" / key
    reused = (cached / FEATURES_FILE).is_file()
    if not reused:
        _extract(params, ingest_dir, ingest, classes, key, cached, io.progress)
    meta = read_json(cached / FEATURES_FILE)
    # the output keeps what the features are; what this run (or the one that filled the
    # cache) measured goes to step.json, so the same inputs give the same output
    choice = meta.get("numerics", {})
    kept = {k: v for k, v in meta.items() if k not in ("seconds", "images_per_s", "numerics")}
    kept["numerics"] = {"numerics": choice.get("numerics", "fp32+channels_last+eager")}
    with atomic_dir(out_dir) as staging:
        for file in cached.iterdir():
            shutil.copy2(file, staging / file.name)
        write_json(staging / FEATURES_FILE, kept)
    lifecycle.write_run_facts(
        out_dir,
        {
            "reused": reused,
            "extract_seconds": meta.get("seconds"),
            "images_per_s": meta.get("images_per_s"),
            "numerics_choice": choice,
        },
    )
    num_features = int(meta["num_features"])
    return StepResult(
        f"extract_features: {dict(meta['counts'])} images, {num_features} features, "
        f"{'reused' if reused else 'computed'} ({float(meta['images_per_s']):.0f} images/s, "
        f"{meta.get('numerics', {}).get('numerics', 'fp32')}) -> {out_dir}",
        metadata={
            "features": {
                "backbone": params.model.backbone,
                "key": key,
                "reused": reused,
                "num_features": num_features,
                "data_version": ingest["data_version"],
            }
        },
    )


def _extract(
    params: Params,
    ingest_dir: Path,
    ingest: dict[str, Any],
    classes: list[str],
    key: str,
    cached: Path,
    progress: Callable[[int], None] | None,
) -> None:
    """Compute every split's features into the cache folder ``cached`` (all or nothing)."""
    from tlops.models.inference import inference_numerics, pooled_features
    from tlops.models.init import create_model

    splits = load_splits(params, ingest_dir, classes, progress=progress)
    device = resolve_device(params.runtime.device)
    model = create_model(params.model.backbone, classes, params.model.pretrained)
    batch_size = params.extract_features.batch_size
    choice = inference_numerics(
        params.extract_features.numerics,
        model,
        [splits[s] for s in SPLITS],
        batch_size,
        device,
        params.extract_features.cache_dir / NUMERICS_CACHE,
        features=True,
    )
    counts, seconds = {}, 0.0
    with atomic_dir(cached) as staging:
        for split in SPLITS:
            started = time.perf_counter()
            features = pooled_features(model, splits[split], batch_size, device, choice.numerics)
            seconds += time.perf_counter() - started
            _write_split(staging, split, features, splits[split], classes)
            counts[split] = len(splits[split])
        total = sum(counts.values())
        write_json(
            staging / FEATURES_FILE,
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
                "numerics": choice.as_dict(),
            },
        )


def _write_split(
    folder: Path, split: str, features: np.ndarray, tensors: SplitTensors, classes: list[str]
) -> None:
    """``<split>.npy`` and ``<split>_index.csv`` (path, label in the rows' order)."""
    np.save(folder / f"{split}.npy", features)
    with (folder / f"{split}_index.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for path, label in zip(tensors.paths, tensors.labels, strict=True):
            writer.writerow([path, classes[label]])


# The step's declaration: what every runner (tlops step, dvc.yaml, KFP) is derived from.
STEP = StepSpec(
    name="extract_features",
    run=run,
    help="Run the frozen backbone over every split and save the features.",
    params=(
        "model.backbone",
        "model.pretrained",
        "model.image_size",
        "image",
        "validate_data.classes",
        "extract_features",
        "runtime",
    ),
    inputs=(dataset_input(),),
    outputs=(Port("features", "Dataset", "<split>.npy, <split>_index.csv, features.json"),),
    code=("tlops.models.init", "tlops.models.inference", "tlops.data.tensors"),
    cacheable=True,
    resources="gpu",
)
