"""The promotion gate: a pure function, tested on its edge cases."""

from __future__ import annotations

import math

import pytest

from tlops.config import GatePolicy
from tlops.evaluate.gate import ModelScores, held, should_promote

POLICY = GatePolicy(
    primary_metric="macro_f1", min_improvement=0.01, floor=0.5, max_class_regression=0.05
)


def scores(value: float | None, **per_class: float | None) -> ModelScores:
    return ModelScores({"macro_f1": value}, per_class)


def test_first_model_is_promoted_when_it_clears_the_floor() -> None:
    decision = should_promote(scores(0.8), None, POLICY)
    assert decision.promote
    assert any("no champion" in r for r in decision.reasons)


def test_first_model_below_the_floor_is_not_promoted() -> None:
    decision = should_promote(scores(0.49), None, POLICY)
    assert not decision.promote
    assert "below the floor" in decision.reasons[0]


def test_floor_is_inclusive() -> None:
    assert should_promote(scores(0.5), None, POLICY).promote


@pytest.mark.parametrize("value", [None, math.nan])
def test_missing_or_nan_candidate_is_never_promoted(value: float | None) -> None:
    for champion in (None, scores(0.1)):
        decision = should_promote(scores(value), champion, POLICY)
        assert not decision.promote
        assert "missing or NaN" in decision.reasons[0]


def test_candidate_without_the_primary_metric_key() -> None:
    assert not should_promote(ModelScores({"accuracy": 0.99}), None, POLICY).promote


def test_tie_is_not_an_improvement() -> None:
    decision = should_promote(scores(0.9), scores(0.9), POLICY)
    assert not decision.promote
    assert "gain +0.0000" in decision.reasons[-1]


def test_tie_with_zero_required_improvement_is_still_not_promoted() -> None:
    policy = POLICY.model_copy(update={"min_improvement": 0.0})
    assert not should_promote(scores(0.9), scores(0.9), policy).promote
    assert should_promote(scores(0.9001), scores(0.9), policy).promote


def test_improvement_must_reach_the_minimum() -> None:
    assert not should_promote(scores(0.905), scores(0.9), POLICY).promote
    assert should_promote(scores(0.911), scores(0.9), POLICY).promote


def test_worse_candidate_is_not_promoted() -> None:
    decision = should_promote(scores(0.7), scores(0.9), POLICY)
    assert not decision.promote and "-0.2000" in decision.reasons[-1]


@pytest.mark.parametrize("value", [None, math.nan])
def test_champion_with_missing_metric_is_beaten_by_a_valid_candidate(
    value: float | None,
) -> None:
    decision = should_promote(scores(0.7), scores(value), POLICY)
    assert decision.promote
    assert any("champion macro_f1 is missing or NaN" in r for r in decision.reasons)


def test_regression_on_one_class_blocks_promotion() -> None:
    candidate = scores(0.95, cat=0.99, dog=0.99, fox=0.80)
    champion = scores(0.90, cat=0.90, dog=0.90, fox=0.90)
    decision = should_promote(candidate, champion, POLICY)
    assert not decision.promote
    assert "class 'fox' F1 0.9000 -> 0.8000" in decision.reasons[-1]


def test_regression_within_the_bound_is_allowed() -> None:
    candidate = scores(0.95, cat=0.99, fox=0.86)
    champion = scores(0.90, cat=0.90, fox=0.90)
    assert should_promote(candidate, champion, POLICY).promote


def test_classes_missing_or_nan_on_one_side_are_not_compared() -> None:
    candidate = scores(0.95, cat=0.99, fox=math.nan)
    champion = scores(0.90, cat=0.90, fox=0.99, owl=0.99)
    assert should_promote(candidate, champion, POLICY).promote


def test_other_primary_metric() -> None:
    policy = POLICY.model_copy(update={"primary_metric": "accuracy"})
    candidate = ModelScores({"accuracy": 0.95, "macro_f1": 0.1})
    champion = ModelScores({"accuracy": 0.90, "macro_f1": 0.9})
    assert should_promote(candidate, champion, policy).promote


def test_decision_is_json_ready() -> None:
    payload = should_promote(scores(0.8), None, POLICY).as_dict()
    assert payload["promote"] is True and isinstance(payload["reasons"], list)


def test_a_held_model_is_never_promoted_whatever_its_scores() -> None:
    decision = should_promote(scores(0.9), None, POLICY)
    assert decision.promote
    assert held(decision, None) is decision
    hold = held(decision, "adapted without labels")
    assert not hold.promote
    assert hold.reasons[0] == "held, not promoted: adapted without labels"
    assert hold.reasons[1:] == decision.reasons
