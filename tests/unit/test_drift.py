"""The drift test (MMD, RBF kernel, median heuristic, permutation p-value) and label shift."""

from __future__ import annotations

import numpy as np
import pytest

from tlops.evaluate.drift import label_shift, mmd_test, rbf_kernel

TRIALS, SIDE, WIDTH, ALPHA = 200, 200, 64, 0.05


def _rejections(shift: float) -> int:
    rejected = 0
    for trial in range(TRIALS):
        rng = np.random.default_rng(10_000 + trial)
        reference = rng.standard_normal((SIDE, WIDTH))
        new = rng.standard_normal((SIDE, WIDTH)) + shift
        rejected += mmd_test(reference, new, permutations=1000, seed=trial).p_value < ALPHA
    return rejected


def test_same_distribution_rarely_raises_an_alarm() -> None:
    # 5 % expected at alpha = 0.05; the bound leaves room for sampling noise, not for a bias
    assert _rejections(0.0) <= 0.10 * TRIALS


def test_a_mean_shift_of_a_quarter_sd_is_detected() -> None:
    assert _rejections(0.25) >= 0.95 * TRIALS


def test_statistic_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((30, 5)), rng.standard_normal((40, 5)) + 0.5
    result = mmd_test(x, y, permutations=200, seed=1)
    pooled = np.concatenate([x, y])
    d2 = ((pooled[:, None, :] - pooled[None, :, :]) ** 2).sum(-1)
    median = np.median(d2[~np.eye(len(pooled), dtype=bool)])
    k = np.exp(-d2 / (2 * median))
    direct = k[:30, :30].mean() + k[30:, 30:].mean() - 2 * k[:30, 30:].mean()
    assert result.mmd2 == pytest.approx(direct, rel=1e-9)
    assert result.bandwidth == pytest.approx(np.sqrt(median))
    assert 1 / 201 <= result.p_value <= 1.0


def test_kernel_is_symmetric_with_unit_diagonal() -> None:
    kernel, sigma = rbf_kernel(np.random.default_rng(2).standard_normal((20, 3)))
    assert np.allclose(kernel, kernel.T) and np.allclose(np.diag(kernel), 1.0) and sigma > 0


def test_seeded_and_subsampled_past_max_samples() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((500, 8)), rng.standard_normal((120, 8))
    first = mmd_test(x, y, permutations=100, seed=7, max_samples=100)
    assert first == mmd_test(x, y, permutations=100, seed=7, max_samples=100)
    assert first.subsampled and first.n_reference == 100 and first.n_new == 100
    whole = mmd_test(x, y, permutations=100, seed=7, max_samples=None)
    assert not whole.subsampled and whole.n_reference == 500


def test_bad_inputs_are_refused() -> None:
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match="at least 2 points"):
        mmd_test(x[:1], x)
    with pytest.raises(ValueError, match="widths differ"):
        mmd_test(x, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="permutations"):
        mmd_test(x, x, permutations=0)


def test_identical_samples_are_not_drift() -> None:
    x = np.ones((10, 4))
    assert mmd_test(x, x.copy(), permutations=100).p_value == 1.0


def test_label_shift_is_the_total_variation_distance() -> None:
    shift = label_shift(["a"] * 50 + ["b"] * 50, ["a"] * 80 + ["b"] * 20, ["a", "b"])
    assert shift is not None
    assert shift.total_variation == pytest.approx(0.3)
    assert shift.p_value is not None and shift.p_value < 1e-6
    same = label_shift(["a", "b"] * 50, ["a", "b"] * 20, ["a", "b"])
    assert same is not None and same.total_variation == 0.0 and same.p_value == pytest.approx(1.0)
    unseen = label_shift(["a"] * 10, ["a", "b"] * 5, ["a", "b"])
    assert unseen is not None and unseen.p_value is None  # a class the reference never had
    assert label_shift([], ["a"], ["a"]) is None
