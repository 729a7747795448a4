"""What a strategy is handed, and what its hooks hand back.

:class:`TrainData` is what it trains on (filled by the providers of its needs). The train step
hands :meth:`Strategy.extra_models` a :class:`FitContext`; the evaluate step hands
:meth:`Strategy.evaluation` an :class:`EvalContext` and merges the :class:`EvalExtras` it gets
back. Neither step knows which strategy adds what.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlops.data.budget import UNLABELED

if TYPE_CHECKING:
    from tlops.config import Params, TrainConfig
    from tlops.data.tensors import SplitTensors
    from tlops.models.model import TransferModel


@dataclass
class TrainData:
    """Everything a strategy may train on; what it declared in ``needs`` is filled.

    ``train`` holds every target training image; those outside the label budget
    (``train.target_labels``) have the label :data:`UNLABELED`. ``val`` is None when the budget
    is 0: no target label is read before evaluation.
    """

    classes: list[str]
    train: SplitTensors | None = None
    val: SplitTensors | None = None
    train_features: tuple[np.ndarray, np.ndarray] | None = None  # (N, D) features, (N,) labels
    val_features: tuple[np.ndarray, np.ndarray] | None = None
    source_train: SplitTensors | None = None
    source_val: SplitTensors | None = None
    source_classes: list[str] | None = None  # the source's own classes (multitask's source head)
    teacher_logits: np.ndarray | None = None  # (N, C), in the order of ``train``
    teacher: str | None = None  # the teacher's URI (a version, not an alias)

    @property
    def val_size(self) -> int:
        """Images (or feature rows) the validation figures are computed on (0: none)."""
        if self.val is not None:
            return len(self.val)
        if self.val_features is not None:
            return len(self.val_features[1])
        return len(self.source_val) if self.source_val is not None else 0

    def train_labels(self) -> np.ndarray:
        """Label indices of the labeled training images (for class weights)."""
        if self.train is not None:
            labels: np.ndarray = self.train.labels[self.train.labels != UNLABELED]
            return labels
        if self.train_features is not None:
            return self.train_features[1]
        raise ValueError("no training data")


@dataclass
class FitContext:
    """What :meth:`Strategy.extra_models` may use: the run's data, start and folders.

    Args:
        build: Makes a fresh model for a ``train`` params (the step's own construction).
        fit: Trains a model with a strategy (the loop, with the run's device).
        data: What the run trained on.
        checkpoints: The run's checkpoint folder (a hook's own training resumes under it).
        key: The run's key.
    """

    build: Callable[[TrainConfig], TransferModel]
    fit: Callable[..., Any]  # (strategy, model, checkpoint folder, key) -> TrainOutcome
    data: TrainData
    checkpoints: Path
    key: str


@dataclass
class EvalContext:
    """What :meth:`Strategy.evaluation` may use; a hook never knows the step's files.

    Args:
        params: The resolved params.
        model: The trained model.
        model_dir: The train step's output (``train.json``, the extra models).
        trained: ``train.json``.
        classes: The target classes.
        test: The target's test split at the model's resolution.
        test_split: Decodes the test split of a domain (``target``/``source``) for a model's
            resolution and alignment; None: that domain's data was not given.
        score: Every test metric of a model on a split (the step's scoring).
        overall: The trained model's test metrics (``score(model, test)["overall"]``).
    """

    params: Params
    model: TransferModel
    model_dir: Path
    trained: dict[str, Any]
    classes: list[str]
    test: SplitTensors
    test_split: Callable[[str, TransferModel], SplitTensors | None]
    score: Callable[[TransferModel, SplitTensors], dict[str, Any]]
    overall: dict[str, Any]


@dataclass
class EvalExtras:
    """What a strategy adds to an evaluation.

    Args:
        report: ``evaluation.json`` entries (name -> JSON value).
        metrics: Flat metrics for ``metrics.json`` (None: not finite).
        logged: Metrics for the MLflow run.
        summary: A clause for the console line (``; ...``), or "".
    """

    report: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    logged: dict[str, float] = field(default_factory=dict)
    summary: str = ""


def domain_distance(ctx: EvalContext, source: SplitTensors) -> dict[str, float]:
    """MMD between source and target test features, before and after training.

    Before: the backbone training started from (``model.backbone``, its pretrained weights);
    after: the trained model. Each is the squared MMD with a Gaussian kernel at the median
    distance (:func:`tlops.evaluate.drift.mmd_test`), with its permutation p-value: a drop
    says the features of the two domains came closer, a p-value that rises above 0.05 that
    they are no longer told apart.
    """
    from tlops.evaluate.drift import mmd_test
    from tlops.models.inference import pooled_features
    from tlops.models.init import create_model
    from tlops.runtime import resolve_device

    params = ctx.params
    device = resolve_device(params.runtime.device)
    start = create_model(params.model.backbone, ctx.classes, pretrained=params.model.pretrained)
    out: dict[str, float] = {}
    for when, network in (("before", start), ("after", ctx.model)):
        network.to(device).eval()
        batch = params.evaluate.batch_size
        result = mmd_test(
            pooled_features(network, source, batch, device),
            pooled_features(network, ctx.test, batch, device),
            permutations=200,
            seed=0,
        )
        out[f"domain_mmd2_{when}"] = result.mmd2
        out[f"domain_mmd_p_{when}"] = result.p_value
    return out
