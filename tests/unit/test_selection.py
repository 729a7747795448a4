"""What picks the best epoch without target labels, and the search spaces strategies declare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import fast_da, train_da
from tlops import plugins
from tlops.config import ConfigError, Params, apply_overrides
from tlops.evaluate import criteria
from tlops.io import read_json, write_json
from tlops.plugins import Dim


def _fast(params: Params, tmp_path: Path, **overrides: Any) -> Params:
    """mcc without target labels, 3 epochs (fast_da's other settings)."""
    defaults = {"train.strategy": "mcc", "train.target_labels": 0, "train.epochs": 3}
    return fast_da(params, tmp_path, **{**defaults, **overrides})


def _train(params: Params, tmp_path: Path, out: str, target: str = "target") -> dict[str, Any]:
    return dict(vars(train_da(params, tmp_path, out, target)))


def test_a_label_free_criterion_picks_the_best_epoch_from_the_target_images(
    params: Params, domains: dict[str, Path], tmp_path: Path
) -> None:
    fast = _fast(params, tmp_path, **{"train.selection.criterion": "entropy"})
    summary = _train(fast, tmp_path, "model")
    history = read_json(tmp_path / "model" / "history.json")
    assert summary["metric"] == "select_score"
    assert summary["selection"] == "entropy criterion (no target label)"
    for row in history:  # every criterion is on the curves; the chosen one is the score
        assert {"select_entropy", "select_snd", "select_iwv", "select_dev"} <= set(row)
        assert row["select_score"] == pytest.approx(-row["select_entropy"])
    scores = [row["select_score"] for row in history]
    assert summary["best_epoch"] == int(np.argmax(scores)) + 1
    assert summary["best_metric"] == pytest.approx(max(scores))

    # the best epoch's entropy, computed again from the saved model on every target training
    # image (fewer than train.selection.max_images: all of them)
    from tlops.data.dataset import load_splits
    from tlops.models.inference import predict_logits
    from tlops.models.init import load_model

    model = load_model(tmp_path / "model" / "model.pt")
    train = load_splits(fast, tmp_path / "target_ingest", model.classes, ("train",))["train"]
    logits = predict_logits(model, train, 64, torch.device("cpu"))
    expected = criteria.prediction_entropy(torch.softmax(logits, 1).numpy())
    best = history[summary["best_epoch"] - 1]
    assert best["select_entropy"] == pytest.approx(expected, rel=1e-4)


def test_with_target_labels_the_target_validation_split_decides(
    params: Params, domains: dict[str, Path], tmp_path: Path
) -> None:
    fast = _fast(
        params,
        tmp_path,
        **{"train.selection.criterion": "snd", "train.target_labels": "all", "train.epochs": 1},
    )
    summary = _train(fast, tmp_path, "model")
    assert summary["metric"] == "val_accuracy" and summary["selection"] == "target val"
    assert "select_score" not in read_json(tmp_path / "model" / "history.json")[0]


def test_an_unknown_criterion_is_refused_naming_the_key(params: Params) -> None:
    with pytest.raises(ConfigError, match=r"train\.selection\.criterion"):
        apply_overrides(params, {"train.selection.criterion": "accuracy"})


@pytest.mark.parametrize("name", sorted(plugins.strategies()))
def test_every_declared_search_space_names_train_params_and_stays_valid_at_its_bounds(
    name: str, params: Params
) -> None:
    space = plugins.declaration(name).cls.space
    assert space, f"{name} declares no search space"
    with_strategy = apply_overrides(params, {"train.strategy": name})
    for key, dim in space.items():
        values = dim.choices or (dim.low, dim.high)
        for value in values:
            value = int(value) if dim.integer else value
            changed = apply_overrides(with_strategy, {f"train.{key}": value}, "space")
            section = changed.train
            for part in key.split("."):
                section = (
                    getattr(section, part) if hasattr(section, part) else section.section(part)
                )
            assert section == value


def test_a_search_dimension_with_an_empty_range_is_refused() -> None:
    with pytest.raises(ValueError, match="low < high"):
        Dim(1.0, 1.0)
    with pytest.raises(ValueError, match="low > 0 on a log scale"):
        Dim(0.0, 1.0, log=True)
    assert Dim(1e-4, 3e-2, log=True).describe() == "0.0001..0.03 log"


def test_a_strategy_without_a_search_space_cannot_be_tuned(
    params: Params, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tlops.training.search import NothingToSearch, space_of

    monkeypatch.setattr(plugins.declaration("finetune").cls, "space", {})
    with pytest.raises(NothingToSearch, match="finetune declares no search space"):
        space_of(params)


def test_tuned_params_that_break_a_rule_are_refused_naming_the_file(
    params: Params, tmp_path: Path
) -> None:
    from tlops.training.start import tuned

    write_json(tmp_path / "tuned.json", {"params": {"train.lr": -1.0}})
    with pytest.raises(ConfigError, match=r"tuned\.json \(best trial\) train\.lr=-1\.0"):
        tuned(params, tmp_path)
    write_json(tmp_path / "tuned.json", {"params": {}})  # no trial completed: nothing applied
    assert tuned(params, tmp_path) == (params, None)


def test_the_first_trial_is_the_params_as_they_are_where_they_lie_in_the_space(
    params: Params,
) -> None:
    from tlops.training.search import current_values, space_of

    mcc = apply_overrides(params, {"train.strategy": "mcc"})
    current = current_values(mcc, space_of(mcc))
    assert current == {
        "lr": mcc.train.lr,
        "backbone_lr_mult": mcc.train.backbone_lr_mult,
        "weight_decay": mcc.train.weight_decay,
        "da.ramp_gamma": mcc.train.section("da").ramp_gamma,
        "mcc.weight": mcc.train.section("mcc").weight,
        "mcc.temperature": mcc.train.section("mcc").temperature,
    }
    outside = apply_overrides(mcc, {"train.lr": 0.5})  # beyond the range: TPE draws it
    assert "lr" not in current_values(outside, space_of(outside))
