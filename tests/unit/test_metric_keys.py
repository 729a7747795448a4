"""Where MLflow shows each metric: grouped by prefix, so the per-epoch curves come first."""

from __future__ import annotations

import pytest

from tlops.tracking.runs import metric_key


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("val_accuracy", "val/accuracy"),
        ("train_loss", "train/loss"),
        ("loss_coral", "train/loss_coral"),
        ("lr", "train/lr"),
        ("epoch_seconds", "time/epoch_seconds"),
        ("test_macro_f1", "test/macro_f1"),
        ("champion_test_macro_f1", "champion/macro_f1"),
        ("source_only_test_accuracy", "source_only/accuracy"),
        ("step_seconds.validate_data.target", "time/step_seconds.validate_data.target"),
        ("distill.student_params", "distill/student_params"),
        ("detect_change.drift_p_value", "detect_change/drift_p_value"),
        ("domain_mmd2_before", "domain/mmd2_before"),
        ("something_new", "something_new"),
    ],
)
def test_metric_keys_are_grouped_by_what_they_measure(name: str, key: str) -> None:
    assert metric_key(name) == key
