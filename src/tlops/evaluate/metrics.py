"""Classification metrics over predicted probabilities: overall, per class, calibration.

Computed with numpy, as scikit-learn defines them (``precision_recall_fscore_support`` with
``zero_division=0``, ``balanced_accuracy_score``, ``log_loss``, ``roc_auc_score`` one-vs-rest
macro, ``confusion_matrix``; the unit tests compare each with scikit-learn's): importing
scikit-learn cost every ``evaluate`` task about 1 s (``python -c "import tlops.steps.evaluate"``
took 3.8-4.8 s with it, 2.7-3.8 s without, on a 2-core machine).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray


def confusion(
    labels: NDArray[np.integer[Any]], predicted: NDArray[np.integer[Any]], k: int
) -> NDArray[np.int64]:
    """The (k, k) confusion counts: row = true class, column = predicted class."""
    flat = labels.astype(np.int64) * k + predicted.astype(np.int64)
    return np.bincount(flat, minlength=k * k).reshape(k, k)


def _divide(numerator: NDArray[Any], denominator: NDArray[Any]) -> NDArray[np.float64]:
    """Element-wise quotient, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(len(numerator), dtype=np.float64)
    defined = denominator != 0
    out[defined] = numerator[defined] / denominator[defined]
    return out


def per_class_prf(
    matrix: NDArray[np.int64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Precision, recall, F1 and support of each class of a :func:`confusion` matrix.

    A class neither in the labels nor predicted scores 0 (scikit-learn's ``zero_division=0``).
    """
    tp = np.diag(matrix).astype(np.float64)
    support, predicted_count = matrix.sum(axis=1), matrix.sum(axis=0)
    f1 = _divide(2 * tp, (support + predicted_count).astype(np.float64))
    return _divide(tp, predicted_count), _divide(tp, support), f1, support


def macro_f1(
    labels: NDArray[np.integer[Any]], predicted: NDArray[np.integer[Any]], k: int
) -> float:
    """The unweighted mean of the per-class F1 over ``range(k)``.

    The gate's and early stopping's metric: one definition for training and ``evaluate``.
    """
    return float(np.mean(per_class_prf(confusion(labels, predicted, k))[2]))


def binary_roc_auc(truth: NDArray[Any], score: NDArray[Any]) -> float:
    """Area under the ROC curve of one class (``truth``) against the rest.

    As scikit-learn's ``roc_curve`` (stable descending sort, one point per distinct score,
    collinear points dropped) then ``auc`` (the trapezoidal rule) compute it.

    Args:
        truth: (N,) whether each row is of the class.
        score: (N,) the class's predicted probability.

    Returns:
        The area; NaN when ``truth`` holds one value only.
    """
    order = np.argsort(score, kind="mergesort")[::-1]
    score, truth = score[order], truth[order].astype(np.float64)
    distinct = np.where(np.diff(score))[0]
    thresholds = np.r_[distinct, truth.size - 1]
    tps = np.cumsum(truth, dtype=np.float64)[thresholds]
    fps = 1 + thresholds - tps
    if len(fps) > 2:  # drop_intermediate: the points inside a straight stretch of the curve
        keep = np.where(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
        fps, tps = fps[keep], tps[keep]
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    if fps[-1] <= 0 or tps[-1] <= 0:
        return float("nan")
    return float(np.trapezoid(tps / tps[-1], fps / fps[-1]))


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
    n = len(labels)
    predicted = probs.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    matrix = confusion(labels, predicted, k)
    precision, recall, f1, support = per_class_prf(matrix)
    auc = float("nan")  # one-vs-rest needs every class in the test split, and probabilities
    if n and len(np.unique(labels)) == k and np.allclose(1, probs.sum(axis=1)):
        auc = float(np.mean([binary_roc_auc(labels == c, probs[:, c]) for c in range(k)]))
    ece, calibration = expected_calibration_error(probs, labels, calibration_bins)
    log_loss = float("nan")
    if n:
        floating = probs if np.issubdtype(probs.dtype, np.floating) else probs.astype(float)
        clipped = np.clip(floating, 1e-12, 1.0)
        normalised = clipped / clipped.sum(1, keepdims=True)
        eps = np.finfo(normalised.dtype).eps
        true_class = np.clip(normalised, eps, 1 - eps)[np.arange(n), labels]
        log_loss = float(np.mean(-np.log(true_class)))
    overall = {
        "accuracy": float(np.mean(labels == predicted)) if n else float("nan"),
        # the mean recall over the classes the test split holds
        "balanced_accuracy": float(np.mean(recall[support > 0])) if n else float("nan"),
        "macro_precision": float(np.mean(precision)),
        "macro_recall": float(np.mean(recall)),
        "macro_f1": float(np.mean(f1)),
        "roc_auc_ovr": auc,
        "log_loss": log_loss,
        "ece": ece,
        "n_test": n,
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
    return {
        "overall": overall,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "calibration": calibration,
    }


def finite_or_none(value: float) -> float | None:
    """NaN/inf become None so metrics serialise to valid JSON."""
    return value if isinstance(value, int | float) and math.isfinite(value) else None
