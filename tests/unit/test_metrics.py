"""Evaluation metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tlops.evaluate.metrics import classification_metrics, expected_calibration_error


def test_perfect_predictions() -> None:
    labels = np.array([0, 1, 2, 2])
    probs = np.eye(3)[labels] * 0.98 + 0.01 / 1  # confident and right
    probs /= probs.sum(1, keepdims=True)
    result = classification_metrics(probs, labels, ["a", "b", "c"])
    overall = result["overall"]
    assert overall["accuracy"] == 1.0 and overall["macro_f1"] == 1.0
    assert overall["roc_auc_ovr"] == 1.0
    assert result["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]
    assert [row["support"] for row in result["per_class"]] == [1, 1, 2]


def test_known_mistakes() -> None:
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    overall = classification_metrics(probs, labels, ["a", "b"])["overall"]
    assert overall["accuracy"] == 0.75
    assert math.isclose(overall["balanced_accuracy"], 0.75)
    expected_loss = -np.mean(np.log([0.9, 0.4, 0.8, 0.7]))
    assert math.isclose(overall["log_loss"], expected_loss, rel_tol=1e-9)


def test_roc_auc_is_nan_when_a_class_is_absent() -> None:
    labels = np.array([0, 0, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    overall = classification_metrics(probs, labels, ["a", "b", "c"])["overall"]
    assert math.isnan(overall["roc_auc_ovr"])
    assert overall["accuracy"] == 1.0


def test_ece_of_a_calibrated_and_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    n = 20000
    confidence = rng.uniform(0.5, 1.0, n)
    correct = rng.uniform(size=n) < confidence
    labels = np.where(correct, 0, 1)
    probs = np.stack([confidence, 1 - confidence], 1)
    calibrated, table = expected_calibration_error(probs, labels, 10)
    assert calibrated < 0.02 and sum(row["count"] for row in table) == n
    overconfident = np.stack([np.full(n, 0.99), np.full(n, 0.01)], 1)
    labels_half = (rng.uniform(size=n) < 0.5).astype(int)
    ece, _ = expected_calibration_error(overconfident, labels_half, 10)
    assert abs(ece - 0.49) < 0.02


def test_training_macro_f1_is_sklearns() -> None:
    from sklearn.metrics import f1_score

    from tlops.evaluate.metrics import macro_f1

    rng = np.random.default_rng(0)
    for n_classes in (2, 5, 10):
        labels = rng.integers(0, n_classes, 50)
        predicted = np.where(rng.random(50) < 0.6, labels, rng.integers(0, n_classes, 50))
        expected = f1_score(
            labels, predicted, average="macro", labels=list(range(n_classes)), zero_division=0
        )
        assert macro_f1(labels, predicted, n_classes) == pytest.approx(expected)
    assert macro_f1(np.array([0, 0]), np.array([0, 0]), 3) == pytest.approx(1 / 3)


def _sklearn(probs: np.ndarray, labels: np.ndarray, k: int) -> dict[str, object]:
    """The same metrics from scikit-learn, as this module computed them before it had its own."""
    from sklearn import metrics

    index = list(range(k))
    predicted = probs.argmax(axis=1)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predicted, labels=index, zero_division=0
    )
    try:
        # two classes: scikit-learn's binary form (the positive class's column; it refuses
        # the two-column form, which left a two-class model without a ROC-AUC here once)
        scores = probs[:, 1] if k == 2 else probs
        auc = float(metrics.roc_auc_score(labels, scores, multi_class="ovr", labels=index))
    except ValueError:
        auc = float("nan")
    if len(np.unique(labels)) < k:
        auc = float("nan")
    clipped = np.clip(probs, 1e-12, 1.0)
    return {
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
        "balanced_accuracy": float(metrics.balanced_accuracy_score(labels, predicted)),
        "macro_precision": float(np.mean(precision)),
        "macro_recall": float(np.mean(recall)),
        "macro_f1": float(np.mean(f1)),
        "roc_auc_ovr": auc,
        "log_loss": float(
            metrics.log_loss(labels, y_proba=clipped / clipped.sum(1, keepdims=True), labels=index)
        ),
        "per_class": [
            (float(p), float(r), float(f), int(s))
            for p, r, f, s in zip(precision, recall, f1, support, strict=True)
        ],
        "confusion_matrix": metrics.confusion_matrix(labels, predicted, labels=index).tolist(),
    }


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn: a class of y_pred not in y_true
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("n", "k", "decimals", "absent"),
    [
        (200, 10, None, None),  # distinct scores
        (300, 4, 1, None),  # many tied scores: the ROC curve's steps and collinear points
        (50, 5, 2, 3),  # a class the test split lacks: no ROC-AUC, balanced accuracy over 4
        (7, 3, None, None),  # fewer rows than a class could fill
        (120, 2, 1, None),
    ],
)
def test_every_metric_is_scikit_learns_to_the_bit(
    n: int, k: int, decimals: int | None, absent: int | None, dtype: type
) -> None:
    rng = np.random.default_rng(n * k)
    labels = rng.integers(0, k, n)
    if absent is not None:
        labels[labels == absent] = (absent + 1) % k
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[labels] * rng.random((n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if decimals is not None:  # ties, still rows of probabilities
        probs = np.round(probs, decimals)
        probs[:, -1] = 1 - probs[:, :-1].sum(1)
        probs = np.clip(probs, 0, 1)
    probs = probs.astype(dtype)
    ours = classification_metrics(probs, labels, [str(c) for c in range(k)])
    theirs = _sklearn(probs, labels, k)
    for key, value in ours["overall"].items():
        if key in theirs:
            same = value == theirs[key] or (math.isnan(value) and math.isnan(theirs[key]))
            assert same, (key, value, theirs[key])
    assert [
        (r["precision"], r["recall"], r["f1"], r["support"]) for r in ours["per_class"]
    ] == theirs["per_class"]
    assert ours["confusion_matrix"] == theirs["confusion_matrix"]


def test_the_metrics_do_not_import_scikit_learn() -> None:
    """Every evaluate task would pay its import (about 1 s) for what numpy computes here."""
    import subprocess
    import sys

    probe = (
        "import sys, numpy as np; from tlops.evaluate.metrics import classification_metrics; "
        "classification_metrics(np.full((2, 2), 0.5), np.array([0, 1]), ['a', 'b']); "
        "print('sklearn' in sys.modules)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == "False"
