"""Drift statistics: a two-sample MMD permutation test and the shift of the label distribution.

Maximum mean discrepancy (Gretton et al., 2012) with a Gaussian (RBF) kernel whose bandwidth is
the median pairwise distance of the pooled sample (the median heuristic). The p-value comes from
a permutation test: the statistic is recomputed with the sample labels shuffled, which is exact
for any sample size. The whole pooled kernel matrix is computed once and every permutation is a
weighted sum over it, so a test costs one ``(P, N) x (N, N)`` product for P permutations of N
points: quadratic in N. Past ``max_samples`` per side, each side is subsampled (seeded), which
keeps the cost of a check flat as the reference data grows (see bench/retraining.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

PERMUTATION_CHUNK = 250  # permutations per matrix product: bounds memory at (chunk, N) floats


@dataclass(frozen=True)
class MMDResult:
    """An MMD two-sample test."""

    mmd2: float  # biased (V-statistic) squared MMD of the two samples
    p_value: float  # (1 + #permutations at least as large) / (1 + permutations)
    bandwidth: float  # RBF sigma from the median heuristic
    n_reference: int
    n_new: int
    permutations: int
    subsampled: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def _subsample(x: NDArray[np.floating], limit: int, rng: np.random.Generator) -> NDArray[Any]:
    if len(x) <= limit:
        return x
    return x[np.sort(rng.choice(len(x), size=limit, replace=False))]


def rbf_kernel(pooled: NDArray[np.floating]) -> tuple[NDArray[np.float64], float]:
    """The RBF kernel matrix of ``pooled`` with the median-heuristic bandwidth.

    Returns:
        ``(K, sigma)`` with ``K[i, j] = exp(-|x_i - x_j|^2 / (2 sigma^2))`` and sigma the median
        of the pairwise distances (off the diagonal).
    """
    x = np.asarray(pooled, dtype=np.float64)
    squared = np.einsum("ij,ij->i", x, x)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2.0 * (x @ x.T), 0.0)
    off_diagonal = distances[~np.eye(len(x), dtype=bool)]
    median = float(np.median(off_diagonal)) if off_diagonal.size else 0.0
    if median <= 0.0:  # all points identical: any bandwidth gives the same (zero) statistic
        median = 1.0
    sigma = float(np.sqrt(median))
    return np.exp(-distances / (2.0 * median)), sigma


def mmd_test(
    reference: NDArray[np.floating],
    new: NDArray[np.floating],
    permutations: int = 1000,
    seed: int = 0,
    max_samples: int | None = 1000,
) -> MMDResult:
    """Test whether ``new`` comes from the distribution of ``reference``.

    Args:
        reference: (n, d) features of the reference sample.
        new: (m, d) features of the new sample.
        permutations: Number of label permutations of the p-value.
        seed: Seed of the subsampling and the permutations.
        max_samples: Each side is subsampled to at most this many points (None: never).

    Returns:
        The statistic, its permutation p-value and the bandwidth.

    Raises:
        ValueError: A side has fewer than 2 points, the widths differ, or permutations < 1.
    """
    if len(reference) < 2 or len(new) < 2:
        raise ValueError(
            f"MMD test needs at least 2 points a side (reference {len(reference)}, new {len(new)})"
        )
    if reference.shape[1:] != new.shape[1:]:
        raise ValueError(f"feature widths differ: {reference.shape[1:]} vs {new.shape[1:]}")
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    rng = np.random.default_rng(seed)
    subsampled = max_samples is not None and max(len(reference), len(new)) > max_samples
    if max_samples is not None:
        reference, new = _subsample(reference, max_samples, rng), _subsample(new, max_samples, rng)
    n, m = len(reference), len(new)
    kernel, sigma = rbf_kernel(np.concatenate([reference, new]))
    weights = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])
    observed = float(weights @ kernel @ weights)
    exceed = 0
    done = 0
    while done < permutations:
        chunk = min(PERMUTATION_CHUNK, permutations - done)
        shuffled = np.stack([rng.permutation(weights) for _ in range(chunk)])
        stats = np.einsum("pi,pi->p", shuffled @ kernel, shuffled)
        # a tolerance, so that ties with the observed value count as "at least as large"
        exceed += int(np.count_nonzero(stats >= observed - 1e-12))
        done += chunk
    return MMDResult(
        mmd2=max(observed, 0.0),
        p_value=(1 + exceed) / (1 + permutations),
        bandwidth=sigma,
        n_reference=n,
        n_new=m,
        permutations=permutations,
        subsampled=bool(subsampled),
    )


@dataclass(frozen=True)
class LabelShift:
    """How the class proportions of the new images differ from the reference's."""

    total_variation: float  # half the L1 distance between the two class distributions, 0..1
    p_value: float | None  # chi-square goodness of fit of the new counts (None: not testable)
    reference: dict[str, float]  # class -> proportion
    new: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def label_shift(
    reference_labels: Sequence[str], new_labels: Sequence[str], classes: Sequence[str]
) -> LabelShift | None:
    """Compare the class proportions of new labeled images with the reference's.

    Returns:
        None when either side has no labeled image.
    """
    from scipy.stats import chisquare

    if not reference_labels or not new_labels:
        return None
    ref = np.array([sum(1 for y in reference_labels if y == c) for c in classes], dtype=float)
    new = np.array([sum(1 for y in new_labels if y == c) for c in classes], dtype=float)
    p_ref, p_new = ref / ref.sum(), new / new.sum()
    total_variation = 0.5 * float(np.abs(p_ref - p_new).sum())
    p_value: float | None = None
    # the chi-square approximation needs expected counts that are not tiny, and no class the
    # reference never saw (its expected count would be zero)
    expected = p_ref * new.sum()
    if (p_ref > 0).all() and expected.min() >= 1.0:
        p_value = float(chisquare(new, expected).pvalue)
    return LabelShift(
        total_variation,
        p_value,
        {c: float(p) for c, p in zip(classes, p_ref, strict=True)},
        {c: float(p) for c, p in zip(classes, p_new, strict=True)},
    )
