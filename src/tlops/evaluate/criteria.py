"""Model selection without target labels: criteria from source labels and unlabeled targets.

They rank trained models (or epochs) by what the source labels and the unlabeled target
images say. When a strategy runs with ``train.target_labels: 0`` no target label may pick the
best model, so the search and the best epoch need a figure computed from other data. These are
the ones the domain adaptation literature compares (skada-bench, Saito et al. 2021):

* ``entropy``: the mean entropy of the model's predictions on the target images; lower is
  better (a model confident on the target);
* ``snd``: soft neighbourhood density (Saito et al., ICCV 2021): how densely the target
  predictions cluster; each target's similarity to the others, as a softmax at a temperature,
  has high entropy when its neighbours are many and close; higher is better. Predictions that
  collapse to one vector for every image (near-uniform ones, say) are all each other's
  neighbours and score highest: a search judged by ``snd`` can walk into them;
* ``iwv``: importance-weighted validation (Sugiyama et al. 2007): the source validation loss,
  each example weighted by how target-like it is, ``p(target|x) / p(source|x)`` from a domain
  classifier on the features, normalised by the set sizes; lower is better;
* ``dev``: deep embedded validation (You et al., ICML 2019): ``iwv`` with a control variate
  that cancels most of the weights' variance; lower is better.

Every function takes numpy arrays and returns a float; :data:`CRITERIA` says which way is better,
so a search can always maximise :func:`score`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-12


def prediction_entropy(probabilities: np.ndarray) -> float:
    """Mean entropy (nats) of the rows of ``probabilities`` (N, C)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPS, 1.0)
    return float(-(p * np.log(p)).sum(axis=1).mean())


def soft_neighbourhood_density(probabilities: np.ndarray, temperature: float = 0.05) -> float:
    """SND: the mean entropy of each target's softmax-normalised similarity to the others.

    Args:
        probabilities: The model's target predictions (N, C), N >= 2.
        temperature: The softmax temperature over similarities (the paper's 0.05).

    Raises:
        ValueError: Fewer than two rows, or a temperature that is not positive.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if len(p) < 2:
        raise ValueError(f"snd: needs at least 2 target images, got {len(p)}")
    if temperature <= 0:
        raise ValueError(f"snd: temperature {temperature} must be > 0")
    unit = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), EPS)
    similarity = unit @ unit.T / temperature
    np.fill_diagonal(similarity, -np.inf)  # a prediction is not its own neighbour
    similarity -= similarity.max(axis=1, keepdims=True)
    weights = np.exp(similarity)
    weights /= weights.sum(axis=1, keepdims=True)
    return prediction_entropy(weights)


def importance_weights(
    source_features: np.ndarray, target_features: np.ndarray, seed: int = 0
) -> np.ndarray:
    """``p(target|x) / p(source|x) * n_source / n_target`` for each source example.

    From a logistic-regression domain classifier on standardised features (its mean weight
    over the source is about 1 when the domains overlap).
    """
    from sklearn.linear_model import LogisticRegression

    xs, xt = np.asarray(source_features, np.float64), np.asarray(target_features, np.float64)
    x = np.vstack([xs, xt])
    mean, std = x.mean(0), x.std(0) + 1e-6
    domain = np.r_[np.zeros(len(xs)), np.ones(len(xt))]
    classifier = LogisticRegression(max_iter=2000, random_state=seed).fit((x - mean) / std, domain)
    p_target = classifier.predict_proba((xs - mean) / std)[:, 1]
    p_target = np.clip(p_target, 1e-6, 1 - 1e-6)
    return np.asarray(p_target / (1 - p_target) * len(xs) / len(xt))


def importance_weighted_risk(losses: np.ndarray, weights: np.ndarray) -> float:
    """IWV: the mean of ``weights * losses`` over the source validation examples."""
    losses, weights = _paired(losses, weights)
    return float((weights * losses).mean())


def deep_embedded_validation(losses: np.ndarray, weights: np.ndarray) -> float:
    """DEV: IWV with the control variate ``eta (mean(w) - 1)``, eta = -Cov(wl, w) / Var(w)."""
    losses, weights = _paired(losses, weights)
    weighted = weights * losses
    variance = weights.var(ddof=1) if len(weights) > 1 else 0.0
    if variance <= EPS:  # equal weights: nothing to cancel
        return float(weighted.mean())
    eta = -np.cov(np.vstack([weighted, weights]), ddof=1)[0, 1] / variance
    return float(weighted.mean() + eta * weights.mean() - eta)


def _paired(losses: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    losses = np.asarray(losses, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if losses.shape != weights.shape or losses.ndim != 1 or not len(losses):
        raise ValueError(
            f"losses {losses.shape} and weights {weights.shape}: one value per source example"
        )
    return losses, weights


@dataclass(frozen=True)
class Criterion:
    """A label-free criterion: what it reads and which way is better."""

    name: str
    higher_is_better: bool
    reads: str  # "target" (predictions) or "source" (validation losses and weights)


CRITERIA = {
    "entropy": Criterion("entropy", False, "target"),
    "snd": Criterion("snd", True, "target"),
    "iwv": Criterion("iwv", False, "source"),
    "dev": Criterion("dev", False, "source"),
}


def score(name: str, value: float) -> float:
    """``value`` of criterion ``name`` as a figure to maximise (negated when lower is better).

    Raises:
        ValueError: An unknown criterion (the message lists them).
    """
    if name not in CRITERIA:
        raise ValueError(f"criterion {name!r}: expected one of {', '.join(CRITERIA)}")
    return value if CRITERIA[name].higher_is_better else -value
