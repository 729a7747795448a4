"""The promotion gate: a pure function that decides whether a candidate replaces the champion."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from tlops.config import GatePolicy


@dataclass(frozen=True)
class ModelScores:
    """What the gate looks at: overall metrics and per-class F1."""

    metrics: Mapping[str, float | None]
    per_class_f1: Mapping[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """The gate's answer and every reason behind it, for logs, MLflow and reviewers."""

    promote: bool
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"promote": self.promote, "reasons": list(self.reasons)}


def _value(scores: ModelScores, name: str) -> float:
    raw = scores.metrics.get(name)
    if raw is None:
        return math.nan
    return float(raw)


def should_promote(
    candidate: ModelScores, champion: ModelScores | None, policy: GatePolicy
) -> Decision:
    """Decide whether ``candidate`` becomes the champion.

    Rules, all of which must hold:

    1. the candidate's primary metric is a number (not missing, not NaN);
    2. it is at least ``policy.floor``;
    3. with a champion: it beats the champion's by at least ``policy.min_improvement``
       (a tie is not an improvement; a champion with a missing or NaN metric is beaten by any
       valid candidate);
    4. with a champion: no class present in both loses more than
       ``policy.max_class_regression`` of F1.

    Args:
        candidate: The new model's scores on the test split.
        champion: The current champion's scores on the same split, or None if there is none.
        policy: Thresholds from params.yaml (``register_model.gate``).

    Returns:
        The decision with one reason per rule checked.
    """
    metric = policy.primary_metric
    value = _value(candidate, metric)
    reasons: list[str] = []
    if math.isnan(value):
        return Decision(False, (f"candidate {metric} is missing or NaN: not promoted",))
    if value < policy.floor:
        return Decision(
            False, (f"candidate {metric} {value:.4f} is below the floor {policy.floor:.4f}",)
        )
    reasons.append(f"candidate {metric} {value:.4f} clears the floor {policy.floor:.4f}")
    if champion is None:
        reasons.append("no champion yet: the first model that clears the floor is promoted")
        return Decision(True, tuple(reasons))
    best = _value(champion, metric)
    if math.isnan(best):
        reasons.append(f"champion {metric} is missing or NaN: any valid candidate beats it")
    else:
        gain = value - best
        if gain < policy.min_improvement or gain <= 0:
            reasons.append(
                f"{metric} {value:.4f} vs champion {best:.4f}: gain {gain:+.4f} is less than "
                f"the required {policy.min_improvement:.4f}"
            )
            return Decision(False, tuple(reasons))
        reasons.append(
            f"{metric} {value:.4f} vs champion {best:.4f}: gain {gain:+.4f} "
            f">= {policy.min_improvement:.4f}"
        )
    regressions = []
    for name, old in champion.per_class_f1.items():
        new = candidate.per_class_f1.get(name)
        if old is None or new is None or math.isnan(old) or math.isnan(new):
            continue
        drop = old - new
        if drop > policy.max_class_regression:
            regressions.append(f"class {name!r} F1 {old:.4f} -> {new:.4f} (-{drop:.4f})")
    if regressions:
        reasons.append(
            f"per-class F1 regression over {policy.max_class_regression:.4f}: "
            + "; ".join(regressions)
        )
        return Decision(False, tuple(reasons))
    reasons.append(f"no class loses more than {policy.max_class_regression:.4f} F1")
    return Decision(True, tuple(reasons))


def held(decision: Decision, reason: str | None) -> Decision:
    """``decision``, but never a promotion while ``reason`` holds (None: as it is).

    The rule behind it: a model that was not scored on labeled images of the data it was
    adapted to is registered, as a challenger, and waits for labels, whatever its scores on
    the old test split say.
    """
    if reason is None:
        return decision
    return Decision(False, (f"held, not promoted: {reason}", *decision.reasons))


def verdict_of(promote: bool, release: bool) -> str:
    """The decision in words: a release is promoted or not; an experiment only would be."""
    if release:
        return "PROMOTED to champion" if promote else "not promoted"
    return (
        "experiment: the gate would promote it (no alias moved)"
        if promote
        else "experiment: the gate would not promote it (no alias moved)"
    )
