"""The canary judge: a pure function that rolls a new champion forward or back by its traffic.

While a new version takes ``deploy.canary_percent`` of the requests, the predictor records what
each version answered (:mod:`tlops.serving.recorder`). The judge compares the canary's figures
with the thresholds in ``deploy.policy`` and with the stable version's own figures over the
same window: the canary must answer without errors, fast enough, and not markedly less sure of
itself than the version it replaces (a drop in mean confidence is the first sign of a model
that does not fit the traffic, before any label arrives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import Field

from tlops.config.sections import Section

FORWARD, BACK = "forward", "back"


class CanaryPolicy(Section):
    """``deploy.policy``: when the canary is rolled forward."""

    min_requests: int = Field(ge=1)  # images the canary must answer before it is judged
    max_error_rate: float = Field(ge=0.0, le=1.0)  # refused or failed / all, of the canary's
    max_p99_latency_ms: float = Field(gt=0.0)
    max_confidence_drop: float = Field(ge=0.0, le=1.0)  # stable's mean - canary's mean
    too_little_traffic: str = Field(pattern="^(forward|back)$")  # fewer than min_requests


@dataclass(frozen=True)
class ServedFigures:
    """What one version answered over the window."""

    version: str
    requests: int  # recorded images, answered or not
    errors: int
    p99_latency_ms: float  # NaN without answers
    mean_confidence: float  # NaN without answers

    @property
    def error_rate(self) -> float:
        """Errors over requests (0 without requests)."""
        return self.errors / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, float | int | str]:
        """JSON-ready form (the run's tags and deploy.json)."""
        return {
            "version": self.version,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p99_latency_ms": self.p99_latency_ms,
            "mean_confidence": self.mean_confidence,
        }


@dataclass(frozen=True)
class Verdict:
    """The judge's answer and every reason behind it."""

    direction: str  # forward | back
    reasons: tuple[str, ...]

    @property
    def forward(self) -> bool:
        """Whether the canary takes all the traffic."""
        return self.direction == FORWARD


def judge_canary(
    canary: ServedFigures, stable: ServedFigures | None, policy: CanaryPolicy
) -> Verdict:
    """Roll the canary forward only when every rule holds.

    1. it answered at least ``min_requests`` images (else ``too_little_traffic`` decides);
    2. its error rate is at most ``max_error_rate``;
    3. its p99 latency is at most ``max_p99_latency_ms``;
    4. with stable traffic: its mean confidence is at most ``max_confidence_drop`` below the
       stable version's.

    Args:
        canary: The new version's figures over the window.
        stable: The version it replaces, over the same window (None: no stable traffic).
        policy: ``deploy.policy``.

    Returns:
        The direction, with one reason per rule checked.
    """
    if canary.requests < policy.min_requests:
        return Verdict(
            policy.too_little_traffic,
            (
                f"canary v{canary.version} answered {canary.requests} images, fewer than "
                f"min_requests = {policy.min_requests}: {policy.too_little_traffic} "
                "(deploy.policy.too_little_traffic)",
            ),
        )
    checks = [
        (
            canary.error_rate <= policy.max_error_rate,
            f"error rate {canary.error_rate:.4f} ({canary.errors}/{canary.requests}) "
            f"{'<=' if canary.error_rate <= policy.max_error_rate else '>'} "
            f"max_error_rate {policy.max_error_rate}",
        ),
        _latency(canary, policy),
    ]
    if stable is not None and stable.requests and not math.isnan(stable.mean_confidence):
        drop = stable.mean_confidence - canary.mean_confidence
        ok = not math.isnan(drop) and drop <= policy.max_confidence_drop
        checks.append(
            (
                ok,
                f"mean confidence {canary.mean_confidence:.3f} vs stable "
                f"v{stable.version} {stable.mean_confidence:.3f}: drop {drop:+.3f} "
                f"{'<=' if ok else '>'} max_confidence_drop {policy.max_confidence_drop}",
            )
        )
    else:
        checks.append((True, "no stable traffic in the window: confidence not compared"))
    direction = FORWARD if all(ok for ok, _ in checks) else BACK
    return Verdict(direction, tuple(reason for _, reason in checks))


def _latency(canary: ServedFigures, policy: CanaryPolicy) -> tuple[bool, str]:
    p99 = canary.p99_latency_ms
    ok = not math.isnan(p99) and p99 <= policy.max_p99_latency_ms
    shown = "none answered" if math.isnan(p99) else f"{p99:.0f} ms"
    return ok, f"p99 latency {shown} {'<=' if ok else '>'} {policy.max_p99_latency_ms:.0f} ms"
