"""The extra losses of the transfer strategies, as plain functions of tensors.

Each one is the published formula, written out so that a unit test can compare it with a direct
computation: multi-kernel MMD (DAN), CORAL, the gradient reversal layer and domain loss (DANN),
minimum class confusion (MCC), and the distillation loss (Hinton et al.).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F


def ramp(progress: float, gamma: float) -> float:
    """Ganin et al.'s coefficient schedule ``2 / (1 + exp(-gamma p)) - 1`` (1 when gamma is 0).

    It rises from 0 at the start of training (``progress`` 0) towards 1, so that the domain
    loss does not pull on features before the classifier has learned anything.
    """
    if gamma == 0.0:
        return 1.0
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def mk_mmd(source: torch.Tensor, target: torch.Tensor, bandwidths: Sequence[float]) -> torch.Tensor:
    """Squared multi-kernel MMD between two feature batches (biased estimate).

    The kernel is the mean of Gaussian kernels ``exp(-||x - y||^2 / (m * s))`` over the
    multipliers ``m`` in ``bandwidths``, with ``s`` the mean squared distance of the pooled batch
    (detached: the bandwidth is a statistic, not a path for gradients), as in DAN (Long et al.
    2015) with equal kernel weights.

    Args:
        source: (n, d) features.
        target: (m, d) features.
        bandwidths: Multipliers of the mean squared distance.

    Returns:
        A scalar: 0 for identical batches, larger the further apart their distributions.
    """
    pooled = torch.cat([source, target]).float()
    distances = torch.cdist(pooled, pooled).pow(2)
    scale = distances.detach().mean().clamp_min(1e-12)
    kernel = sum(torch.exp(-distances / (scale * m)) for m in bandwidths) / len(bandwidths)
    assert isinstance(kernel, torch.Tensor)
    n = source.shape[0]
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2.0 * kernel[:n, n:].mean()


def coral(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CORAL loss ``||C_s - C_t||_F^2 / (4 d^2)`` of two feature batches (Sun & Saenko 2016).

    ``C`` is the unbiased covariance of each batch's features (d x d).
    """
    d = source.shape[1]
    cov_s = torch.cov(source.float().T)
    cov_t = torch.cov(target.float().T)
    return (cov_s - cov_t).pow(2).sum() / (4.0 * d * d)


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float) -> torch.Tensor:
    """Identity forward; the gradient multiplied by ``-coeff`` backward (Ganin et al. 2016)."""
    out: torch.Tensor = _GradientReversal.apply(x, coeff)
    return out


def domain_bce(source_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss: binary cross-entropy, source labeled 1 and target 0."""
    logits = torch.cat([source_logits, target_logits]).float().flatten()
    labels = torch.cat(
        [
            torch.ones(source_logits.shape[0], device=logits.device),
            torch.zeros(target_logits.shape[0], device=logits.device),
        ]
    )
    return F.binary_cross_entropy_with_logits(logits, labels)


def mcc(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Minimum class confusion of a batch of target logits (Jin et al. 2020).

    Probabilities at ``temperature``; each example weighted by ``1 + exp(-entropy)``
    (normalised to sum to the batch size: confident examples count more); the class
    correlation matrix ``C = P^T W P``, each row divided by its sum; the loss is the mass off
    the diagonal, divided by the number of classes.
    """
    probs = F.softmax(logits.float() / temperature, dim=1)
    n, k = probs.shape
    entropy = -(probs * torch.log(probs + 1e-5)).sum(1)
    weights = 1.0 + torch.exp(-entropy)
    weights = (n * weights / weights.sum()).unsqueeze(1)
    confusion = (probs * weights).T @ probs
    confusion = confusion / confusion.sum(1, keepdim=True)
    return (confusion.sum() - confusion.trace()) / k


def distillation(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hinton et al.'s loss: ``alpha CE(student, y) + (1 - alpha) T^2 KL(teacher_T || student_T)``.

    The cross-entropy is over the examples with a label (``labels >= 0``); the KL term over all
    of them (labeled and unlabeled), on outputs softened by ``temperature``; ``T^2`` keeps the
    soft term's gradients at the scale of the hard one's.

    Returns:
        ``(the loss, its KL term)``.
    """
    t = temperature
    soft_teacher = F.softmax(teacher_logits.float() / t, dim=1)
    log_student = F.log_softmax(student_logits.float() / t, dim=1)
    kl = F.kl_div(log_student, soft_teacher, reduction="batchmean") * t * t
    labeled = labels >= 0
    if bool(labeled.any()):
        ce = F.cross_entropy(student_logits[labeled].float(), labels[labeled])
        return alpha * ce + (1.0 - alpha) * kl, kl
    return (1.0 - alpha) * kl, kl
