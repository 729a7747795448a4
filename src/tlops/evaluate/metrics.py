"""Classification metrics over predicted probabilities: overall, per class, calibration."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)


def expected_calibration_error(
    probs: NDArray[np.floating[Any]], labels: NDArray[np.integer[Any]], bins: int = 15
) -> tuple[float, list[dict[str, float]]]:
    """ECE with equal-width confidence bins, and the per-bin table for a reliability diagram.

    Args:
        probs: (N, C) predicted probabilities.
        labels: (N,) true class indices.
        bins: Number of bins over [0, 1].

    Returns:
        ECE (weighted mean |accuracy - confidence|) and one row per non-empty bin.
    """
    if len(labels) == 0:
        return float("nan"), []
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        members = which == b
        if not members.any():
            continue
        acc, conf = float(correct[members].mean()), float(confidence[members].mean())
        weight = float(members.mean())
        ece += weight * abs(acc - conf)
        table.append(
            {
                "bin_low": float(edges[b]),
                "bin_high": float(edges[b + 1]),
                "accuracy": acc,
                "confidence": conf,
                "count": int(members.sum()),
            }
        )
    return float(ece), table


def classification_metrics(
    probs: NDArray[np.floating[Any]],
    labels: NDArray[np.integer[Any]],
    classes: Sequence[str],
    calibration_bins: int = 15,
) -> dict[str, Any]:
    """Every metric of the ``evaluate`` step.

    Args:
        probs: (N, C) predicted probabilities (rows sum to 1).
        labels: (N,) true class indices into ``classes``.
        classes: Class names.
        calibration_bins: Bins of the expected calibration error.

    Returns:
        ``{"overall": {...}, "per_class": [...], "confusion_matrix": [[...]],
        "calibration": [...]}``; undefined values (e.g. ROC-AUC with one class present) are NaN.
    """
    k = len(classes)
    index = list(range(k))
    predicted = probs.argmax(axis=1) if len(labels) else np.zeros(0, dtype=np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=index, zero_division=0
    )
    present = np.unique(labels)
    try:
        auc = (
            float(roc_auc_score(labels, probs, multi_class="ovr", labels=index))
            if len(present) == k
            else float("nan")
        )
    except ValueError:
        auc = float("nan")
    ece, calibration = expected_calibration_error(probs, labels, calibration_bins)
    clipped = np.clip(probs, 1e-12, 1.0)
    overall = {
        "accuracy": float(accuracy_score(labels, predicted)) if len(labels) else float("nan"),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted))
        if len(labels)
        else float("nan"),
        "macro_precision": float(np.mean(precision)),
        "macro_recall": float(np.mean(recall)),
        "macro_f1": float(np.mean(f1)),
        "roc_auc_ovr": auc,
        "log_loss": float(log_loss(labels, clipped / clipped.sum(1, keepdims=True), labels=index))
        if len(labels)
        else float("nan"),
        "ece": ece,
        "n_test": len(labels),
    }
    per_class = [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    ]
    matrix = confusion_matrix(labels, predicted, labels=index).tolist()
    return {
        "overall": overall,
        "per_class": per_class,
        "confusion_matrix": matrix,
        "calibration": calibration,
    }


def finite_or_none(value: float) -> float | None:
    """NaN/inf become None so metrics serialise to valid JSON."""
    return value if isinstance(value, int | float) and math.isfinite(value) else None
