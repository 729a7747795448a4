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

    from tlops.train.loop import macro_f1

    rng = np.random.default_rng(0)
    for n_classes in (2, 5, 10):
        labels = rng.integers(0, n_classes, 50)
        predicted = np.where(rng.random(50) < 0.6, labels, rng.integers(0, n_classes, 50))
        expected = f1_score(
            labels, predicted, average="macro", labels=list(range(n_classes)), zero_division=0
        )
        assert macro_f1(labels, predicted, n_classes) == pytest.approx(expected)
    assert macro_f1(np.array([0, 0]), np.array([0, 0]), 3) == pytest.approx(1 / 3)
