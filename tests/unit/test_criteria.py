"""Label-free model selection criteria, each against a direct computation (loops, no tricks)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tlops.evaluate.criteria import (
    CRITERIA,
    deep_embedded_validation,
    importance_weighted_risk,
    importance_weights,
    prediction_entropy,
    score,
    soft_neighbourhood_density,
)


def _softmax_rows(n: int, c: int, seed: int, scale: float = 2.0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0, scale, (n, c))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return np.asarray(e / e.sum(1, keepdims=True))


def test_entropy_is_the_mean_row_entropy() -> None:
    p = _softmax_rows(7, 4, 0)
    direct = sum(-sum(q * math.log(q) for q in row) for row in p) / len(p)
    assert prediction_entropy(p) == pytest.approx(direct)
    assert prediction_entropy(np.eye(3)) == pytest.approx(0.0, abs=1e-9)
    assert prediction_entropy(np.full((2, 4), 0.25)) == pytest.approx(math.log(4))


def test_snd_against_the_paper_step_by_step() -> None:
    p, t = _softmax_rows(6, 3, 1), 0.05
    n = len(p)
    unit = [row / math.sqrt(sum(v * v for v in row)) for row in p]
    total = 0.0
    for i in range(n):
        sims = [
            sum(a * b for a, b in zip(unit[i], unit[j], strict=True)) / t
            for j in range(n)
            if j != i
        ]
        top = max(sims)
        exps = [math.exp(s - top) for s in sims]
        probs = [e / sum(exps) for e in exps]
        total += -sum(q * math.log(q) for q in probs if q > 0)
    assert soft_neighbourhood_density(p, t) == pytest.approx(total / n, rel=1e-9)


def test_snd_is_the_log_size_of_each_prediction_neighbourhood() -> None:
    # identical predictions in groups of m, groups far apart: each image's neighbours are
    # the m - 1 others of its group, equally: entropy log(m - 1)
    def groups(m: int, k: int) -> np.ndarray:
        return np.repeat(np.eye(k), m, axis=0) * 0.9 + 0.1 / k

    assert soft_neighbourhood_density(groups(10, 3)) == pytest.approx(math.log(9), abs=1e-3)
    assert soft_neighbourhood_density(groups(4, 6)) == pytest.approx(math.log(3), abs=1e-3)
    with pytest.raises(ValueError, match="at least 2 target images"):
        soft_neighbourhood_density(groups(1, 1))


def test_iwv_and_dev_against_direct_formulas() -> None:
    rng = np.random.default_rng(3)
    losses, weights = rng.uniform(0, 2, 50), rng.uniform(0.2, 3, 50)
    assert importance_weighted_risk(losses, weights) == pytest.approx(
        sum(w * loss for w, loss in zip(weights, losses, strict=True)) / 50
    )
    wl = weights * losses
    mean_wl, mean_w = wl.sum() / 50, weights.sum() / 50
    cov = sum((a - mean_wl) * (b - mean_w) for a, b in zip(wl, weights, strict=True)) / 49
    var = sum((b - mean_w) ** 2 for b in weights) / 49
    eta = -cov / var
    assert deep_embedded_validation(losses, weights) == pytest.approx(mean_wl + eta * mean_w - eta)
    # equal weights: DEV is the plain mean loss
    assert deep_embedded_validation(losses, np.ones(50)) == pytest.approx(losses.mean())
    with pytest.raises(ValueError, match="one value per source example"):
        importance_weighted_risk(losses, weights[:3])


def test_importance_weights_favour_target_like_source_examples() -> None:
    rng = np.random.default_rng(4)
    source = np.r_[rng.normal(0, 1, (100, 2)), rng.normal(3, 1, (100, 2))]
    target = rng.normal(3, 1, (200, 2))  # the target looks like the second half
    weights = importance_weights(source, target)
    assert weights[100:].mean() > 5 * weights[:100].mean()
    same = importance_weights(target[:100], target[100:])
    assert 0.5 < same.mean() < 2.0  # overlapping domains: weights about 1


def test_every_criterion_is_maximised_through_score() -> None:
    assert score("snd", 2.0) == 2.0 and score("entropy", 2.0) == -2.0
    assert {name for name, c in CRITERIA.items() if c.reads == "source"} == {"iwv", "dev"}
    with pytest.raises(ValueError, match="expected one of entropy, snd, iwv, dev"):
        score("oracle", 1.0)


def test_snd_scores_collapsed_predictions_highest_which_a_search_must_know() -> None:
    """Every image predicted alike (near-uniform) beats confident, well-separated classes."""
    rng = np.random.default_rng(0)
    confident = np.full((60, 3), 0.02)
    confident[np.arange(60), np.arange(60) % 3] = 0.96
    collapsed = np.full((60, 3), 1 / 3) + rng.normal(0, 1e-3, (60, 3))
    collapsed /= collapsed.sum(1, keepdims=True)
    assert soft_neighbourhood_density(collapsed) > soft_neighbourhood_density(confident)
    assert prediction_entropy(collapsed) > prediction_entropy(confident)  # entropy is not fooled
