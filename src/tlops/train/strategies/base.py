"""The strategy interface: what a training strategy needs, its loss, its modules and state.

The loop (:mod:`tlops.train.loop`) knows no strategy by name: it asks the strategy what to
train on, which parameters to optimise and with which learning rates, which backbone stages are
trainable in an epoch, the loss of a batch and the validation logits, and it checkpoints the
strategy's state with the model's so that a resumed run continues exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from tlops.config import TrainConfig
from tlops.data.budget import UNLABELED
from tlops.data.tensors import Shard, SplitTensors
from tlops.models.model import TransferModel
from tlops.models.numerics import Numerics
from tlops.train.needs import NEEDS, Need, needs_of


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

    def train_labels(self) -> np.ndarray:
        """Label indices of the labeled training images (for class weights)."""
        if self.train is not None:
            labels: np.ndarray = self.train.labels[self.train.labels != UNLABELED]
            return labels
        if self.train_features is not None:
            return self.train_features[1]
        raise ValueError("no training data")


@dataclass(frozen=True)
class Schedule:
    """How long and how fast: the loop's optimiser and warmup + cosine schedule use it."""

    epochs: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    early_stopping: bool = True


Batch = tuple[torch.Tensor, torch.Tensor]


class Strategy(ABC):
    """One way of training a :class:`TransferModel`; see the module docstring."""

    name: ClassVar[str]
    # what it trains on, whatever its params: for the strategies train.strategy names, declared
    # in tlops.train.needs (the pipeline is built from there, without torch) and set from there
    needs: ClassVar[frozenset[Need]]
    pretrained: ClassVar[bool] = True  # start from the backbone's pretrained weights
    log_every: ClassVar[int] = 1  # epochs between two metric reports
    own_source_head: ClassVar[bool] = False  # the source's labels are its own classes
    # learns from target images whose label it cannot use (data.target_unlabeled's are added)
    uses_unlabeled: ClassVar[bool] = False
    # why it cannot train data-parallel (None: it can; see tlops.train.distributed)
    data_parallel: ClassVar[str | None] = "it does not shard its batches"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.criterion: nn.Module = nn.CrossEntropyLoss()
        # extra trainable modules (a domain discriminator, ...): a subclass adds them here, so
        # that modules() is the same object for the optimiser, the checkpoints and the loss
        self.extra = nn.ModuleDict()
        # precision and memory layout: the loop sets them before the first batch (and for a
        # calibration copy); batches and validation follow them
        self.numerics = Numerics()
        # the run's progress in 0..1, set by the loop before every step from (epoch, step), so a
        # resumed run sees the values the uninterrupted one did (loss weights that ramp up)
        self.progress = 0.0
        # this process's rows of every global batch under DDP (set by the loop; None: all)
        self.shard: Shard | None = None
        # a folder of the run (the loop's checkpoint folder) for what a strategy computes before
        # the first epoch and wants to keep across a resume; None outside a training run
        self.work_dir: Path | None = None
        self._terms: dict[str, list[torch.Tensor]] = {}

    def record(self, name: str, value: torch.Tensor) -> None:
        """Add one step's value of an extra loss term to the epoch's mean (no device sync)."""
        self._terms.setdefault(name, []).append(value.detach().float())

    def epoch_terms(self) -> dict[str, float]:
        """The epoch's mean of every recorded term (logged per epoch), then reset."""
        means = {name: float(torch.stack(values).mean()) for name, values in self._terms.items()}
        self._terms = {}
        return means

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # one made in code only (an experiment, a test) keeps the needs it inherits or declares
        if cls.__dict__.get("name") in NEEDS:
            cls.needs = NEEDS[cls.name]

    @classmethod
    def required(cls, cfg: TrainConfig) -> frozenset[Need]:
        """What the strategy trains on with these params (``needs``, unless it depends on them)."""
        return needs_of(cls.name, cfg) if cls.name in NEEDS else cls.needs

    @property
    def uses(self) -> frozenset[Need]:
        """What this strategy object trains on (:meth:`required` of its params)."""
        return type(self).required(self.cfg)

    def pretraining_metrics(self) -> list[dict[str, float]]:
        """Per-epoch metrics of a phase before the loop's first epoch (none by default)."""
        return []

    def schedule(self) -> Schedule:
        """Epochs, learning rate, weight decay and warmup (``train`` params by default)."""
        cfg = self.cfg
        return Schedule(cfg.epochs, cfg.lr, cfg.weight_decay, cfg.warmup_epochs)

    def prepare(self, model: TransferModel, data: TrainData, device: torch.device) -> None:
        """Set up before the first epoch: the loss with optional class weights."""
        weights = class_weights(data.train_labels(), len(data.classes), self.cfg.class_weights)
        self.criterion = nn.CrossEntropyLoss(
            weight=None if weights is None else weights.to(device),
            label_smoothing=self.cfg.label_smoothing,
        )

    def modules(self) -> nn.ModuleDict:
        """Extra trainable modules beside the model (none for the supervised strategies)."""
        return self.extra

    @abstractmethod
    def param_groups(self, model: TransferModel) -> list[dict[str, Any]]:
        """Optimiser parameter groups with their learning rates."""

    @abstractmethod
    def trainable_stages(self, epoch: int) -> int | None:
        """Backbone stages trained in ``epoch`` (counted from the top; None: all)."""

    @abstractmethod
    def steps_per_epoch(self, data: TrainData) -> int:
        """Optimiser steps in one epoch (for the learning-rate schedule)."""

    @abstractmethod
    def batches(
        self, data: TrainData, generator: torch.Generator, device: torch.device
    ) -> Iterator[Batch]:
        """The training batches of one epoch (shuffled by ``generator``)."""

    @abstractmethod
    def loss(self, model: TransferModel, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        """The loss of one batch (``generator``: the epoch's seeded randomness)."""

    @abstractmethod
    def val_logits(
        self, model: TransferModel, data: TrainData, device: torch.device
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Validation logits (CPU, float32) and labels, for early stopping and the best epoch."""

    def after_step(self, model: TransferModel, optimizer: torch.optim.Optimizer) -> None:
        """Called after every optimiser step.

        A strategy with a non-smooth penalty applies its proximal step here (nothing by default).
        """
        return None

    def state(self, model: TransferModel) -> dict[str, torch.Tensor]:
        """The weights that training changes (checkpointed every epoch, best epoch kept)."""
        return {
            **{f"model.{k}": v for k, v in model.state_dict().items()},
            **{f"modules.{k}": v for k, v in self.modules().state_dict().items()},
        }

    def load_state(self, model: TransferModel, state: dict[str, torch.Tensor]) -> None:
        """Put back what :meth:`state` returned."""
        model.load_state_dict(_prefixed(state, "model."), strict=True)
        self.modules().load_state_dict(_prefixed(state, "modules."), strict=True)


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def class_weights(labels: np.ndarray, n_classes: int, mode: str) -> torch.Tensor | None:
    """``balanced`` weights (n / (k * count)) or None."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = len(labels) / (n_classes * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)
