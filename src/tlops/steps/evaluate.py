"""Step ``evaluate``: the trained model (and the champion, if any) on the test split.

Outputs (in ``out_dir``): ``metrics.json`` (flat test metrics, for DVC, plus the champion's
side by side), ``per_class.csv``, ``predictions.csv``, ``confusion_matrix.png``,
``reliability.png`` (and ``champion_confusion_matrix.png`` with a champion), ``evaluation.json``
(everything, including the calibration table).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlops.config import Params
from tlops.data.tensors import SplitTensors
from tlops.evaluate.metrics import classification_metrics, finite_or_none
from tlops.evaluate.plots import confusion_matrix_png, reliability_png
from tlops.io import atomic_dir, write_json
from tlops.models.backbones import (
    TransferModel,
    load_model,
    model_from_checkpoint,
    resolve_init,
)
from tlops.steps.common import class_list, ingest_info, load_splits
from tlops.steps.train import MODEL_FILE
from tlops.tracking.registry import CHAMPION, alias_version, champion_uri
from tlops.tracking.runs import log_artifacts, log_metrics, set_tags
from tlops.train.loop import predict_logits, resolve_device

METRICS_FILE = "metrics.json"
EVALUATION_FILE = "evaluation.json"


@dataclass(frozen=True)
class EvaluateResult:
    """What ``evaluate`` returns."""

    metrics: dict[str, Any]
    per_class: list[dict[str, Any]]
    champion: dict[str, Any] | None  # {"version", "metrics", "per_class"} or None
    champion_note: str
    out_dir: Path


def score(model: TransferModel, test: SplitTensors, params: Params) -> dict[str, Any]:
    """All metrics of ``model`` on a split."""
    device = resolve_device(params.train.device)
    logits = predict_logits(model.to(device), test, params.evaluate.batch_size, device)
    probs = torch.softmax(logits, dim=1).numpy().astype(np.float64)
    result = classification_metrics(
        probs, test.labels, model.classes, params.evaluate.calibration_bins
    )
    result["predicted"] = probs.argmax(axis=1).tolist() if len(probs) else []
    result["confidence"] = probs.max(axis=1).tolist() if len(probs) else []
    return result


def _champion(params: Params, classes: list[str]) -> tuple[TransferModel | None, str | None, str]:
    name = params.register_model.model_name
    try:
        version = alias_version(params.tracking, name, CHAMPION)
    except Exception as exc:  # no registry yet, server unreachable...: no comparison
        return None, None, f"no champion: registry not readable ({exc.__class__.__name__})"
    if version is None:
        return None, None, f"no champion yet for {name}"
    payload = resolve_init(champion_uri(name)).checkpoint or {}
    if list(payload.get("classes", [])) != classes:
        return (
            None,
            version,
            (
                f"champion v{version} has classes {payload.get('classes')}, "
                f"not {classes}: not comparable"
            ),
        )
    model = model_from_checkpoint(payload)
    size = f" at its own {model.image_size} px" if model.image_size else ""
    return model, version, f"champion v{version} evaluated on the same test split{size}"


def run(
    params: Params,
    ingest_dir: Path,
    model_dir: Path,
    out_dir: Path,
    run_id: str | None = None,
    compare_champion: bool = True,
) -> EvaluateResult:
    """Evaluate the trained model, and the champion when one exists, on the test split.

    Args:
        params: Resolved params.
        ingest_dir: An ``ingest_data`` output (the test split).
        model_dir: A ``train`` output.
        out_dir: Output directory (replaced).
        run_id: MLflow run to log into.
        compare_champion: Look up ``models:/<name>@champion`` and evaluate it too.

    Returns:
        Candidate and champion metrics.
    """
    ingest = ingest_info(ingest_dir)
    classes = class_list(params, ingest)
    model = load_model(model_dir / MODEL_FILE)
    if model.classes != classes:
        raise ValueError(
            f"{model_dir / MODEL_FILE}: trained for {model.classes}, the data has {classes}"
        )
    test = load_splits(params, ingest_dir, classes, ("test",))["test"]
    result = score(model, test, params)
    champion_model, champion_version, note = (None, None, "champion comparison off")
    if compare_champion:
        champion_model, champion_version, note = _champion(params, classes)
    champion = None
    if champion_model is not None:
        size = champion_model.image_size or params.model.image_size
        champion_test = (
            test
            if size == params.model.image_size
            else load_splits(params, ingest_dir, classes, ("test",), image_size=size)["test"]
        )
        champion_result = score(champion_model, champion_test, params)
        champion = {
            "version": champion_version,
            "metrics": champion_result["overall"],
            "per_class": champion_result["per_class"],
            "confusion_matrix": champion_result["confusion_matrix"],
        }
    overall = result["overall"]
    flat = {k: finite_or_none(v) for k, v in overall.items()}
    if champion is not None:
        flat.update({f"champion_{k}": finite_or_none(v) for k, v in champion["metrics"].items()})
    with atomic_dir(out_dir) as staging:
        write_json(staging / METRICS_FILE, flat)
        write_json(
            staging / EVALUATION_FILE,
            {
                "classes": classes,
                "data_version": ingest["data_version"],
                "overall": flat,
                "per_class": result["per_class"],
                "confusion_matrix": result["confusion_matrix"],
                "calibration": result["calibration"],
                "champion": champion,
                "champion_note": note,
                "model": str(model_dir / MODEL_FILE),
            },
        )
        with (staging / "per_class.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=["class", "precision", "recall", "f1", "support"]
            )
            writer.writeheader()
            writer.writerows(result["per_class"])
        with (staging / "predictions.csv").open("w", newline="", encoding="utf-8") as handle:
            rows = csv.writer(handle)
            rows.writerow(["path", "actual", "predicted", "confidence"])
            for path, actual, predicted, conf in zip(
                test.paths, test.labels, result["predicted"], result["confidence"], strict=True
            ):
                rows.writerow([path, classes[actual], classes[predicted], f"{conf:.6f}"])
        confusion_matrix_png(
            result["confusion_matrix"],
            classes,
            staging / "confusion_matrix.png",
            "candidate · test split",
        )
        reliability_png(
            result["calibration"],
            overall["ece"],
            staging / "reliability.png",
            "candidate · reliability",
        )
        if champion is not None:
            confusion_matrix_png(
                champion["confusion_matrix"],
                classes,
                staging / "champion_confusion_matrix.png",
                f"champion v{champion_version} · test split",
            )
    log_metrics(params.tracking, run_id, {f"test_{k}": v for k, v in overall.items()})
    if champion is not None:
        log_metrics(
            params.tracking,
            run_id,
            {f"champion_test_{k}": v for k, v in champion["metrics"].items()},
        )
    set_tags(params.tracking, run_id, {"champion.compared": note})
    log_artifacts(params.tracking, run_id, [p for p in sorted(out_dir.iterdir())], "evaluate")
    return EvaluateResult(flat, result["per_class"], champion, note, out_dir)
