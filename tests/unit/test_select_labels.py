"""Which images to label first: each selector on pools whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from tlops.labeling.select import SELECTORS, plan_round, select


def _blobs(per: int = 30, centers: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated blobs in 8 dimensions, and which blob each point is in."""
    rng = np.random.default_rng(seed)
    middles = rng.normal(0, 20, (centers, 8))
    points = np.vstack([m + rng.normal(0, 1, (per, 8)) for m in middles])
    return points, np.repeat(np.arange(centers), per)


def _probabilities(n: int, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0, 3, (n, 4))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return np.asarray(e / e.sum(1, keepdims=True))


def _inputs(n: int = 150) -> dict[str, np.ndarray]:
    points, _ = _blobs()
    return {"probabilities": _probabilities(len(points)), "embeddings": points}


@pytest.mark.parametrize("selector", SELECTORS)
def test_every_selector_respects_the_budget_is_deterministic_and_skips_earlier_picks(
    selector: str,
) -> None:
    inputs = _inputs()
    earlier = set(range(0, 150, 3))
    first = select(selector, 7, **inputs, exclude=earlier, seed=4)
    again = select(selector, 7, **inputs, exclude=earlier, seed=4)
    assert first == again  # deterministic for a seed
    picked = [p.index for p in first]
    assert len(picked) == 7 == len(set(picked)) and not set(picked) & earlier
    assert all(p.reason for p in first)
    # a budget larger than what is left takes what is left, once each
    everything = select(selector, 500, **inputs, exclude=earlier, seed=4)
    assert sorted(p.index for p in everything) == sorted(set(range(150)) - earlier)


def test_kcenter_and_typiclust_cover_every_blob_first() -> None:
    points, blob = _blobs()
    for selector in ("kcenter", "typiclust"):
        picks = select(selector, 5, embeddings=points, seed=0)
        assert sorted(blob[p.index] for p in picks) == [0, 1, 2, 3, 4], selector
    # with two blobs already labeled, k-center's picks go to the three others first
    labeled = points[[0, 30]]
    picks = select("kcenter", 3, embeddings=points, labeled_embeddings=labeled, exclude={0, 30})
    assert sorted(blob[p.index] for p in picks) == [2, 3, 4]


def test_k_center_covers_within_twice_the_best_radius() -> None:
    """The greedy core-set's guarantee, checked: its covering radius r is at most twice the
    best 10 centers' radius. With the farthest remaining point, its 11 points are pairwise at
    least r apart if it is greedy: any 10 centers leave two of them in one ball, so the best
    radius is at least half their smallest gap, and r <= that gap."""
    points = np.random.default_rng(1).normal(size=(200, 6))
    picks = select("kcenter", 10, embeddings=points)
    chosen = points[[p.index for p in picks]]
    to_picks = np.sqrt(((points[:, None] - chosen[None]) ** 2).sum(-1)).min(1)
    radius, farthest = to_picks.max(), int(to_picks.argmax())
    eleven = np.vstack([chosen, points[farthest]])
    gaps = np.sqrt(((eleven[:, None] - eleven[None]) ** 2).sum(-1))
    assert radius <= gaps[np.triu_indices(11, 1)].min() + 1e-9
    # and it covers better than a random draw of the same size
    drawn = points[[p.index for p in select("random", 10, embeddings=points, seed=0)]]
    assert radius < np.sqrt(((points[:, None] - drawn[None]) ** 2).sum(-1)).min(1).max()


def test_uncertainty_picks_the_closest_calls() -> None:
    probabilities = np.array(
        [[0.9, 0.1, 0.0], [0.5, 0.48, 0.02], [0.34, 0.335, 0.325], [0.6, 0.2, 0.2]]
    )
    margin = select("margin", 2, probabilities=probabilities, classes=["a", "b", "c"])
    assert [p.index for p in margin] == [2, 1] and "between a and b" in margin[0].reason
    entropy = select("entropy", 1, probabilities=probabilities)
    assert entropy[0].index == 2


def test_the_audit_is_uniform_disjoint_from_the_selection_and_the_same_for_any_selector() -> None:
    inputs = _inputs()
    rounds = {s: plan_round(s, 10, 30, **inputs, exclude={1, 2}, seed=7) for s in SELECTORS}
    audits = {tuple(r.audit) for r in rounds.values()}
    assert len(audits) == 1  # drawn before the selection, on a stream of its own
    (audit,) = audits
    assert len(audit) == 30 and not {1, 2} & set(audit)
    for r in rounds.values():
        assert len(r.selected) == 10 and not {p.index for p in r.selected} & set(audit)
    # the hard cases are not the test set: margin's picks are harder than the audit on average
    p = inputs["probabilities"]
    top = np.sort(p, 1)[:, ::-1]
    margins = top[:, 0] - top[:, 1]
    chosen = [q.index for q in rounds["margin"].selected]
    assert margins[chosen].mean() < margins[list(audit)].mean()


def test_bad_settings_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"select_labels\.selector 'best': expected one of random"):
        select("best", 3, probabilities=_probabilities(5))
    with pytest.raises(ValueError, match="kcenter: needs the champion's embeddings"):
        select("kcenter", 3, probabilities=_probabilities(5))
    with pytest.raises(ValueError, match="margin: needs the champion's predictions"):
        select("margin", 3, embeddings=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="disagree on the pool size"):
        select("hybrid", 3, probabilities=_probabilities(5), embeddings=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="budget -1: must be 0 or more"):
        select("random", -1, probabilities=_probabilities(5))
    with pytest.raises(ValueError, match="audit_size -2"):
        plan_round("random", 1, -2, probabilities=_probabilities(5))
