"""Which unlabeled images a person should label first, within a budget per round.

Selectors, each over the pool of unlabeled images (rows of ``probabilities`` and/or
``embeddings`` from the champion):

* ``random``: a uniform draw; the baseline every other selector must beat;
* ``margin``: the smallest gap between the two most likely classes (uncertainty);
* ``entropy``: the highest entropy of the predicted distribution (uncertainty);
* ``kcenter``: greedy core-set (Sener & Savarese, 2018): each pick is the image farthest from
  everything labeled or picked, so the picks cover the embedding space;
* ``typiclust``: TypiClust (Hacohen et al., 2022): the embeddings in as many k-means clusters
  as labeled images plus budget; from the largest clusters that hold no labeled image, the most
  typical image (densest neighbourhood). What works at very small budgets (cold start), where
  uncertainty picks outliers;
* ``hybrid``: ``typiclust`` alone while fewer than :data:`LOW_BUDGET_PER_CLASS` labels per class
  have been bought (the low-budget regime, where typicality beats uncertainty: Hacohen et al.,
  "Active Learning on a Budget", 2022); past it, half the budget by ``typiclust`` (coverage), the
  rest by ``margin`` among what is left (the boundary).

An audit sample (:func:`plan_round`) is drawn first, uniformly from the pool, and nothing in it
is selected: the audit is the new data's test split, and images chosen because they are hard
would make a biased one. Every draw is deterministic for a seed, and images picked in earlier
rounds (``exclude``) are never picked again.

A few lines of numpy and scikit-learn's k-means rather than scikit-activeml or baal: both
expect to own the model and its training loop (a classifier to query, a PyTorch wrapper to
retrain), where tlops has the champion's outputs as arrays already, and neither is in the lock.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SELECTORS = ("random", "margin", "entropy", "kcenter", "typiclust", "hybrid")
NEEDS_PROBABILITIES = ("margin", "entropy", "hybrid")
NEEDS_EMBEDDINGS = ("kcenter", "typiclust", "hybrid")
TYPICALITY_NEIGHBOURS = 20  # TypiClust's k: the neighbourhood a density is measured over
LOW_BUDGET_PER_CLASS = 5  # hybrid: typicality alone until this many labels per class are bought


@dataclass(frozen=True)
class Pick:
    """One image to label: its row in the pool, its score and why it was picked."""

    index: int
    score: float
    reason: str


@dataclass(frozen=True)
class Round:
    """What one labeling round sends: the selected images and the audit sample (disjoint)."""

    selected: list[Pick]
    audit: list[int]


def _available(n: int, exclude: Collection[int]) -> np.ndarray:
    mask = np.ones(n, dtype=bool)
    mask[[i for i in exclude if 0 <= i < n]] = False
    return np.flatnonzero(mask)


def _check(selector: str, probabilities: np.ndarray | None, embeddings: np.ndarray | None) -> int:
    """The pool size; refuses an unknown selector or missing inputs."""
    if selector not in SELECTORS:
        raise ValueError(
            f"select_labels.selector {selector!r}: expected one of {', '.join(SELECTORS)}"
        )
    if selector in NEEDS_PROBABILITIES and probabilities is None:
        raise ValueError(f"select_labels.selector {selector}: needs the champion's predictions")
    if selector in NEEDS_EMBEDDINGS and embeddings is None:
        raise ValueError(f"select_labels.selector {selector}: needs the champion's embeddings")
    sizes = {len(a) for a in (probabilities, embeddings) if a is not None}
    if len(sizes) > 1:
        raise ValueError(f"predictions and embeddings disagree on the pool size: {sorted(sizes)}")
    return sizes.pop() if sizes else 0


def _class_name(classes: Sequence[str] | None, index: int) -> str:
    return classes[index] if classes is not None else str(index)


def _uncertain(
    kind: str,
    probabilities: np.ndarray,
    pool: np.ndarray,
    budget: int,
    classes: Sequence[str] | None,
) -> list[Pick]:
    p = probabilities[pool]
    if kind == "margin":
        top = np.sort(p, axis=1)[:, ::-1]
        score = top[:, 0] - top[:, 1]
        order = np.lexsort((pool, score))  # smallest margin first; ties by row: deterministic
    else:
        score = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)
        order = np.lexsort((pool, -score))  # highest entropy first
    picks = []
    for j in order[:budget]:
        first, second = np.argsort(-p[j])[:2]
        if kind == "margin":
            why = (
                f"margin {score[j]:.3f} between {_class_name(classes, int(first))} and "
                f"{_class_name(classes, int(second))}"
            )
        else:
            why = f"entropy {score[j]:.3f} (most likely {_class_name(classes, int(first))})"
        picks.append(Pick(int(pool[j]), float(score[j]), why))
    return picks


def _kcenter(
    embeddings: np.ndarray, pool: np.ndarray, budget: int, labeled: np.ndarray | None
) -> list[Pick]:
    x = embeddings[pool].astype(np.float64)
    if labeled is not None and len(labeled):
        centers = labeled.astype(np.float64)
        nearest = np.min(((x[:, None, :] - centers[None, :, :]) ** 2).sum(-1), axis=1)
        first = None
    else:  # cold start: the image nearest the pool's mean, then the farthest from the picks
        first = int(np.argmin(((x - x.mean(0)) ** 2).sum(1)))
        nearest = ((x - x[first]) ** 2).sum(1)
    picks = []
    if first is not None:
        picks.append(Pick(int(pool[first]), 0.0, "nearest the pool's mean (no image labeled yet)"))
    while len(picks) < min(budget, len(pool)):
        j = int(np.argmax(nearest))
        distance = float(np.sqrt(nearest[j]))
        picks.append(
            Pick(
                int(pool[j]), distance, f"farthest from what is labeled or picked ({distance:.3f})"
            )
        )
        nearest = np.minimum(nearest, ((x - x[j]) ** 2).sum(1))
    return picks


def _typiclust(
    embeddings: np.ndarray, pool: np.ndarray, budget: int, labeled: np.ndarray | None, seed: int
) -> list[Pick]:
    from sklearn.cluster import KMeans

    x = embeddings[pool].astype(np.float64)
    known = labeled.astype(np.float64) if labeled is not None else np.empty((0, x.shape[1]))
    clusters = min(len(known) + budget, len(x))
    kmeans = KMeans(n_clusters=clusters, n_init=3, random_state=seed).fit(np.vstack([x, known]))
    assignment = kmeans.labels_[: len(x)]
    covered = set(kmeans.labels_[len(x) :].tolist())
    sizes = np.bincount(assignment, minlength=clusters)
    # the largest clusters first, those that hold no labeled image before those that do; a
    # cluster of labeled images only has no member to pick, so later passes take each
    # cluster's next most typical image until the budget is spent
    order = sorted(range(clusters), key=lambda c: (c in covered, -sizes[c], c))
    ranked = [(c, _by_typicality(x, np.flatnonzero(assignment == c))) for c in order]
    picks: list[Pick] = []
    for depth in range(max((len(r) for _, r in ranked), default=0)):
        for c, members in ranked:
            if len(picks) == budget:
                return picks
            if depth < len(members):
                index, typicality = members[depth]
                picks.append(
                    Pick(
                        int(pool[index]),
                        typicality,
                        f"most typical image of a cluster of {sizes[c]}"
                        + (" (with labeled images)" if c in covered else " (none labeled yet)")
                        if depth == 0
                        else f"next most typical image of a cluster of {sizes[c]}",
                    )
                )
    return picks


def _by_typicality(x: np.ndarray, members: np.ndarray) -> list[tuple[int, float]]:
    """A cluster's members (rows of ``x``), most typical first, with their typicality."""
    if not len(members):
        return []
    inside = x[members]
    distances = np.sqrt(((inside[:, None, :] - inside[None, :, :]) ** 2).sum(-1))
    k = min(TYPICALITY_NEIGHBOURS, len(members) - 1)
    if k:
        neighbours = np.sort(distances, axis=1)[:, 1 : k + 1].mean(axis=1)
        typicality = 1.0 / np.maximum(neighbours, 1e-12)
    else:
        typicality = np.ones(1)
    best = np.argsort(-typicality, kind="stable")
    return [(int(members[j]), float(typicality[j])) for j in best]


def select(
    selector: str,
    budget: int,
    *,
    probabilities: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    labeled_embeddings: np.ndarray | None = None,
    exclude: Collection[int] = (),
    classes: Sequence[str] | None = None,
    seed: int = 0,
) -> list[Pick]:
    """The images of the pool to label first, best first.

    Args:
        selector: One of :data:`SELECTORS`.
        budget: How many (fewer when the pool has fewer left).
        probabilities: The champion's class probabilities, one row per pool image.
        embeddings: The champion's pooled features, one row per pool image.
        labeled_embeddings: The features of the images already labeled (kcenter, typiclust;
            for hybrid, how many there are decides whether the budget is still low).
        exclude: Pool rows never to pick (earlier rounds, the audit).
        classes: Class names, for the reasons.
        seed: Every draw (random, k-means) follows it.

    Raises:
        ValueError: An unknown selector, a missing input, a negative budget.
    """
    if budget < 0:
        raise ValueError(f"select_labels.budget {budget}: must be 0 or more")
    n = _check(selector, probabilities, embeddings)
    pool = _available(n, exclude)
    budget = min(budget, len(pool))
    if budget == 0:
        return []
    if selector == "random":
        drawn = np.random.default_rng(seed).permutation(pool)[:budget]
        return [Pick(int(i), 0.0, "uniform random draw") for i in drawn]
    if selector in ("margin", "entropy"):
        assert probabilities is not None
        return _uncertain(selector, probabilities, pool, budget, classes)
    assert embeddings is not None
    if selector == "kcenter":
        return _kcenter(embeddings, pool, budget, labeled_embeddings)
    if selector == "typiclust":
        return _typiclust(embeddings, pool, budget, labeled_embeddings, seed)
    # hybrid: coverage first, then the boundary among what is left
    assert probabilities is not None
    bought = 0 if labeled_embeddings is None else len(labeled_embeddings)
    if bought < LOW_BUDGET_PER_CLASS * probabilities.shape[1]:  # a low budget: coverage only
        return _typiclust(embeddings, pool, budget, labeled_embeddings, seed)
    covered = _typiclust(embeddings, pool, (budget + 1) // 2, labeled_embeddings, seed)
    taken = {p.index for p in covered}
    rest = np.array([i for i in pool if i not in taken], dtype=np.int64)
    return covered + _uncertain("margin", probabilities, rest, budget - len(covered), classes)


def plan_round(
    selector: str,
    budget: int,
    audit_size: int,
    *,
    exclude: Collection[int] = (),
    seed: int = 0,
    **inputs: Any,
) -> Round:
    """One round: a uniform audit sample first, then ``budget`` picks from the rest.

    The audit is drawn before the selection and from everything not labeled before, so it is a
    uniform sample of the new data (its test split), and no selected image is in it.
    ``inputs``: the pool as :func:`select` takes it (``probabilities``, ``embeddings``,
    ``labeled_embeddings``, ``classes``); without ``labeled_embeddings``, the embeddings of
    ``exclude`` (earlier rounds' images) stand for what is labeled.

    Raises:
        ValueError: As :func:`select`; a negative audit size.
    """
    if audit_size < 0:
        raise ValueError(f"select_labels.audit_size {audit_size}: must be 0 or more")
    n = _check(selector, inputs.get("probabilities"), inputs.get("embeddings"))
    pool = _available(n, exclude)
    # its own stream: the audit is the same whichever selector runs beside it
    audit = np.random.default_rng([seed, 1]).permutation(pool)[: min(audit_size, len(pool))]
    embeddings = inputs.get("embeddings")
    if inputs.get("labeled_embeddings") is None and embeddings is not None and len(exclude):
        # what earlier rounds sent is labeled (or being labeled): covered, and counted
        inputs["labeled_embeddings"] = embeddings[sorted(i for i in exclude if 0 <= i < n)]
    picks = select(selector, budget, exclude={*exclude, *audit.tolist()}, seed=seed, **inputs)
    return Round(picks, sorted(int(i) for i in audit))
