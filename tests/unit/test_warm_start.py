"""Where a retrain starts: the champion detect_change names, for strategies that fine-tune."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO
from tlops.config import ConfigError, apply_overrides, load_params
from tlops.io import write_json
from tlops.layout import CHANGE_FILE
from tlops.training.start import for_change, warm_start
from tlops.training.strategies import get_strategy

CHAMPION = {"version": "4", "uri": "models:/tlops-digits/4", "run_id": "r", "data_version": "d"}


def _change(tmp_path: Path, retrain: bool, champion: dict[str, str] | None) -> Path:
    write_json(
        tmp_path / CHANGE_FILE,
        {"retrain": retrain, "reasons": ["no new data: ..."], "champion": champion},
    )
    return tmp_path


def test_a_retrain_starts_from_the_champion_version_not_the_alias(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    strategy = get_strategy(params.train)
    assert warm_start(params, strategy, _change(tmp_path, True, CHAMPION)) == CHAMPION["uri"]
    assert warm_start(params, strategy, _change(tmp_path, True, None)) is None  # no champion
    assert warm_start(params, strategy, None) is None  # the training pipeline
    cold = apply_overrides(params, {"detect_change.warm_start": False})
    assert warm_start(cold, strategy, _change(tmp_path, True, CHAMPION)) is None


def test_strategies_on_features_or_from_scratch_do_not_warm_start(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    for name in ("linear_probe", "scratch"):
        other = apply_overrides(params, {"train.strategy": name})
        change = _change(tmp_path, True, CHAMPION)
        assert warm_start(other, get_strategy(other.train), change) is None, name


def test_a_skip_decision_is_never_trained_on(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    with pytest.raises(ValueError, match=r"decided not to retrain \(no new data"):
        warm_start(params, get_strategy(params.train), _change(tmp_path, False, CHAMPION))


def test_an_adapt_decision_trains_the_label_free_strategy(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    assert for_change(params, None) is params  # the training pipeline
    assert for_change(params, _change(tmp_path, True, CHAMPION)) is params  # a plain retrain
    overrides = {"train.strategy": "mcc", "train.target_labels": 0}
    payload = {"retrain": True, "action": "adapt", "reasons": ["r"], "overrides": overrides}
    write_json(tmp_path / CHANGE_FILE, payload)
    adapted = for_change(params, tmp_path)
    assert (adapted.train.strategy, adapted.train.target_labels) == ("mcc", 0)
    payload["overrides"] = {"train.strategy": "mc"}
    write_json(tmp_path / CHANGE_FILE, payload)
    with pytest.raises(ConfigError, match=r"change\.json"):
        for_change(params, tmp_path)
