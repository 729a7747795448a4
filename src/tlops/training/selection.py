"""The label-free criteria of an epoch's model: what picks the best epoch without target labels.

With ``train.target_labels: 0`` and ``train.selection.criterion`` other than ``source``, each
epoch's validation also computes every criterion of :mod:`tlops.evaluate.criteria` on a
seeded draw of the target training images (their labels are never read) and of the source
validation split: the model's pooled features and predictions, one forward pass per image.
The row gets ``select_<criterion>`` for each (the curves a reviewer compares) and
:data:`SCORE`, the chosen one as a figure to maximise, which early stopping, the best epoch
and the ``tune`` step's trials read: one idea of "best" for the search and the training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tlops.evaluate import criteria

if TYPE_CHECKING:
    import torch

    from tlops.config import TrainConfig
    from tlops.data.tensors import SplitTensors
    from tlops.models.model import TransferModel
    from tlops.models.numerics import Numerics
    from tlops.training.contexts import TrainData

SCORE = "select_score"  # the chosen criterion, higher is better (early stopping's metric)
PREFIX = "select_"


def draw(size: int, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``size`` items, the same for every epoch."""
    if size <= limit:
        return np.arange(size)
    return np.sort(np.random.default_rng(seed).choice(size, limit, replace=False))


def features_and_logits(
    model: TransferModel,
    split: SplitTensors,
    batch_size: int,
    device: torch.device,
    numerics: Numerics,
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (N, D) and logits (N, C) of a split, from one pass of the backbone."""
    import torch

    from tlops.models.inference import pooled_features

    features = pooled_features(model, split, batch_size, device, numerics)
    with torch.no_grad():  # the head is a linear layer: on the pooled features, in fp32
        logits = model.head(torch.from_numpy(features).to(device)).float().cpu().numpy()
    return features, logits


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def epoch_criteria(
    model: TransferModel,
    data: TrainData,
    cfg: TrainConfig,
    device: torch.device,
    numerics: Numerics,
) -> dict[str, float]:
    """Every label-free criterion of the model as it is, and :data:`SCORE` for the chosen one.

    Args:
        model: The epoch's model (in eval mode).
        data: The training data: ``train`` (the target images, labels unread) and
            ``source_val`` (labeled source validation images).
        cfg: The ``train`` params (``selection``, ``eval_batch_size``, ``seed``).
        device: Where the model is.
        numerics: What the validation runs in (fp32).

    Raises:
        ValueError: No target training images, or no source validation split for a criterion
            that reads it.
    """
    from tlops.data.tensors import subset

    selection = cfg.selection
    if data.train is None or len(data.train) < 2:
        raise ValueError(
            f"train.selection.criterion {selection.criterion}: needs at least 2 target "
            "training images"
        )
    target = subset(data.train, draw(len(data.train), selection.max_images, cfg.seed))
    batch = cfg.eval_batch_size
    target_features, target_logits = features_and_logits(model, target, batch, device, numerics)
    probabilities = _softmax(target_logits)
    values = {
        "entropy": criteria.prediction_entropy(probabilities),
        "snd": criteria.soft_neighbourhood_density(probabilities),
    }
    if data.source_val is not None and len(data.source_val):
        source = subset(
            data.source_val, draw(len(data.source_val), selection.max_images, cfg.seed + 1)
        )
        source_features, source_logits = features_and_logits(model, source, batch, device, numerics)
        losses = _cross_entropy(source_logits, source.labels)
        weights = criteria.importance_weights(source_features, target_features, cfg.seed)
        values["iwv"] = criteria.importance_weighted_risk(losses, weights)
        values["dev"] = criteria.deep_embedded_validation(losses, weights)
    if selection.criterion not in values:
        raise ValueError(
            f"train.selection.criterion {selection.criterion}: needs the source validation "
            "split (a domain adaptation strategy's)"
        )
    row = {PREFIX + name: value for name, value in values.items()}
    row[SCORE] = criteria.score(selection.criterion, values[selection.criterion])
    return row


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy (nats) of logits against label indices."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return np.asarray(-log_probabilities[np.arange(len(labels)), labels], dtype=np.float64)
