"""The canary judge (a pure function): each rule, and the figures it is fed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tlops.evaluate.rollout import BACK, FORWARD, CanaryPolicy, ServedFigures, judge_canary
from tlops.serving.traffic import Traffic, figures

POLICY = CanaryPolicy(
    min_requests=10,
    max_error_rate=0.05,
    max_p99_latency_ms=200.0,
    max_confidence_drop=0.05,
    too_little_traffic="back",
)


def fig(version: str, requests: int = 100, errors: int = 0, p99: float = 50.0,
        confidence: float = 0.9) -> ServedFigures:  # fmt: skip
    return ServedFigures(version, requests, errors, p99, confidence)


def test_a_canary_within_every_threshold_goes_forward_with_a_reason_per_rule() -> None:
    rollout = judge_canary(fig("2", confidence=0.88), fig("1"), POLICY)
    assert rollout.direction == FORWARD and rollout.forward
    assert len(rollout.reasons) == 3
    assert "drop +0.020 <= max_confidence_drop 0.05" in rollout.reasons[2]


@pytest.mark.parametrize(
    ("canary", "broken"),
    [
        (fig("2", errors=6), "error rate 0.0600 (6/100) > max_error_rate 0.05"),
        (fig("2", p99=250.0), "p99 latency 250 ms > 200 ms"),
        (fig("2", p99=math.nan, errors=100), "p99 latency none answered > 200 ms"),
        (fig("2", confidence=0.8), "drop +0.100 > max_confidence_drop 0.05"),
    ],
)
def test_any_broken_rule_rolls_back(canary: ServedFigures, broken: str) -> None:
    rollout = judge_canary(canary, fig("1"), POLICY)
    assert rollout.direction == BACK
    assert any(broken in reason for reason in rollout.reasons), rollout.reasons


def test_too_little_traffic_goes_the_way_the_policy_says() -> None:
    few = fig("2", requests=9)
    assert judge_canary(few, fig("1"), POLICY).direction == BACK
    forward = POLICY.model_copy(update={"too_little_traffic": "forward"})
    rollout = judge_canary(few, fig("1"), forward)
    assert rollout.direction == FORWARD
    assert rollout.reasons == (
        "canary v2 answered 9 images, fewer than min_requests = 10: forward "
        "(deploy.policy.too_little_traffic)",
    )


def test_without_stable_traffic_confidence_is_not_compared() -> None:
    rollout = judge_canary(fig("2", confidence=0.2), None, POLICY)
    assert rollout.direction == FORWARD
    assert rollout.reasons[-1] == "no stable traffic in the window: confidence not compared"


def test_figures_count_each_version_apart_and_skip_failed_answers() -> None:
    status = np.array(["ok", "ok", "error", "ok", "ok"])
    traffic = Traffic(
        time=np.arange(5.0),
        request_id=np.array(list("abcde")),
        version=np.array(["2", "2", "2", "1", "2"]),
        sha256=np.array(["x"] * 5),
        predicted=np.array(["c"] * 5),
        confidence=np.array([0.5, 0.7, np.nan, 0.9, 0.9], dtype=np.float32),
        latency_ms=np.array([10.0, 20.0, 1.0, 5.0, 30.0], dtype=np.float32),
        status=status,
        probabilities=np.zeros((5, 2), dtype=np.float32),
        embedding=np.zeros((5, 3), dtype=np.float32),
        files=1,
    )
    canary = figures(traffic, "2")
    assert (canary.requests, canary.errors) == (4, 1)
    assert canary.mean_confidence == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert canary.p99_latency_ms == pytest.approx(np.percentile([10.0, 20.0, 30.0], 99))
    assert figures(traffic, "3").requests == 0
