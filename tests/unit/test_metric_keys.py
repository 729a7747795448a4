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
        ("champion_test_macro_f1", "test_champion/macro_f1"),
        ("source_only_test_accuracy", "test_source_only/accuracy"),
        ("step_seconds.validate_data.target", "time/step_seconds.validate_data.target"),
        ("distill.student_params", "transfer/distill.student_params"),
        ("detect_change.drift_p_value", "trigger/drift_p_value"),
        ("domain_mmd2_before", "transfer/mmd2_before"),
        ("something_new", "something_new"),
    ],
)
def test_metric_keys_are_grouped_by_what_they_measure(name: str, key: str) -> None:
    assert metric_key(name) == key


def test_the_candidates_test_figures_sort_before_every_other_group() -> None:
    names = ["champion_test_accuracy", "numerics.calibration_seconds", "detect_change.drift",
             "domain_mmd2_before", "distill.student_params", "source_only_test_accuracy",
             "step_seconds.train", "lr", "val_loss", "best_epoch"]  # fmt: skip
    keys = sorted(metric_key(n) for n in [*names, "test_accuracy", "test_macro_f1"])
    assert keys[:2] == ["test/accuracy", "test/macro_f1"]
    assert keys[2] == "test_champion/accuracy"
