"""The transfer strategies' losses against direct computations on synthetic tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tlops.training import losses


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mmd_matches_a_direct_sum_over_pairs() -> None:
    a = torch.randn(6, 3, generator=_gen(1))
    b = torch.randn(5, 3, generator=_gen(2)) + 0.5
    multipliers = (0.5, 1.0, 2.0)
    pooled = torch.cat([a, b]).double()
    d2 = [[float(((x - y) ** 2).sum()) for y in pooled] for x in pooled]
    scale = np.mean(d2)

    def k(i: int, j: int) -> float:
        return sum(math.exp(-d2[i][j] / (scale * m)) for m in multipliers) / len(multipliers)

    n, m = 6, 5
    xx = sum(k(i, j) for i in range(n) for j in range(n)) / n**2
    yy = sum(k(i, j) for i in range(n, n + m) for j in range(n, n + m)) / m**2
    xy = sum(k(i, j) for i in range(n) for j in range(n, n + m)) / (n * m)
    assert float(losses.mk_mmd(a, b, multipliers)) == pytest.approx(xx + yy - 2 * xy, rel=1e-5)


def test_mmd_is_near_zero_for_one_distribution_and_large_for_a_shifted_one() -> None:
    a = torch.randn(400, 8, generator=_gen(1))
    b = torch.randn(400, 8, generator=_gen(2))
    same = float(losses.mk_mmd(a, b, (0.5, 1.0, 2.0)))
    shifted = float(losses.mk_mmd(a, b + 1.0, (0.5, 1.0, 2.0)))
    assert abs(same) < 0.01
    assert shifted > 20 * abs(same) and shifted > 0.05
    assert float(losses.mk_mmd(a, a, (1.0,))) == pytest.approx(0.0, abs=1e-6)


def test_coral_is_the_covariance_distance_and_zero_for_equal_covariances() -> None:
    a = torch.randn(50, 4, generator=_gen(1))
    b = torch.randn(60, 4, generator=_gen(2)) * 3.0
    cov_a = np.cov(a.numpy(), rowvar=False)
    cov_b = np.cov(b.numpy(), rowvar=False)
    expected = ((cov_a - cov_b) ** 2).sum() / (4 * 4 * 4)
    assert float(losses.coral(a, b)) == pytest.approx(expected, rel=1e-5)
    # a shift of the mean does not change a covariance
    assert float(losses.coral(a, a + 5.0)) == pytest.approx(0.0, abs=1e-5)


def test_the_reversal_layer_is_identity_forward_and_flips_and_scales_the_gradient() -> None:
    x = torch.randn(3, 4, generator=_gen(1), requires_grad=True)
    y = losses.grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    weights = torch.randn(3, 4, generator=_gen(2))
    (y * weights).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, -0.3 * weights)


def test_domain_bce_labels_source_one_and_target_zero() -> None:
    s, t = torch.tensor([[2.0], [0.5]]), torch.tensor([[-1.0]])

    def sigmoid(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    expected = -(math.log(sigmoid(2.0)) + math.log(sigmoid(0.5)) + math.log(1 - sigmoid(-1.0))) / 3
    assert float(losses.domain_bce(s, t)) == pytest.approx(expected, rel=1e-6)


def test_the_ramp_rises_from_zero_to_one() -> None:
    assert losses.ramp(0.0, 10.0) == 0.0
    assert losses.ramp(1.0, 10.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert 0.0 < losses.ramp(0.1, 10.0) < losses.ramp(0.5, 10.0) < 1.0
    assert losses.ramp(0.0, 0.0) == 1.0


def test_mcc_matches_the_paper_and_is_zero_on_a_confident_diagonal() -> None:
    logits = torch.randn(8, 4, generator=_gen(3)) * 2
    t = 2.5
    p = torch.softmax(logits.double() / t, 1)
    h = -(p * torch.log(p + 1e-5)).sum(1)
    w = 1 + torch.exp(-h)
    w = 8 * w / w.sum()
    c = torch.zeros(4, 4, dtype=torch.float64)
    for i in range(8):
        c += w[i] * torch.outer(p[i], p[i])
    c = c / c.sum(1, keepdim=True)
    expected = (c.sum() - torch.trace(c)) / 4
    assert float(losses.mcc(logits, t)) == pytest.approx(float(expected), rel=1e-5)
    # confident, distinct predictions: no two classes are confused
    diagonal = torch.eye(4).repeat(2, 1) * 100.0
    assert float(losses.mcc(diagonal, t)) == pytest.approx(0.0, abs=1e-6)
    # every example equally unsure between all classes: maximal confusion (K-1)/K
    assert float(losses.mcc(torch.zeros(8, 4), t)) == pytest.approx(3 / 4, rel=1e-6)


def test_distillation_equals_cross_entropy_for_a_one_hot_teacher_at_t1() -> None:
    student = torch.randn(6, 5, generator=_gen(4))
    labels = torch.tensor([0, 3, 2, 4, 1, 1])
    one_hot = F.one_hot(labels, 5).float() * 1e4  # softmax of this is the one-hot
    ce = F.cross_entropy(student, labels)
    for alpha in (0.0, 0.3, 1.0):
        loss, kl = losses.distillation(student, one_hot, labels, alpha, 1.0)
        assert float(loss) == pytest.approx(float(ce), rel=1e-5)
    # at T the soft term is T^2 KL of the softened distributions (batch mean)
    teacher = torch.randn(6, 5, generator=_gen(5))
    t = 4.0
    q = torch.softmax(teacher / t, 1)
    log_p = torch.log_softmax(student / t, 1)
    expected_kl = float((q * (torch.log(q) - log_p)).sum(1).mean()) * t * t
    loss, kl = losses.distillation(student, teacher, torch.full((6,), -1), 0.5, t)
    assert float(kl) == pytest.approx(expected_kl, rel=1e-5)
    assert float(loss) == pytest.approx(0.5 * expected_kl, rel=1e-5)  # no label: KL alone
