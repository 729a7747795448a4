"""The strategy interface: what a strategy trains on, its loss, its modules, state and hooks.

The loop (:mod:`tlops.training.loop`) knows no strategy by name: it asks the strategy what to
train on, which parameters to optimise and with which learning rates, which backbone stages are
trainable in an epoch, the loss of a batch and the validation logits, and it checkpoints the
strategy's state with the model's so that a resumed run continues exactly. The train and
evaluate steps call its hooks (:meth:`Strategy.extra_models`, :meth:`Strategy.evaluation`) for
what only it knows how to add.

A strategy is one file: a class decorated with :func:`strategy`, which declares it
(:mod:`tlops.plugins`). Like every strategy file, this one imports torch lazily: registering a
strategy must not cost a torch import.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
from pydantic import BaseModel

from tlops import plugins
from tlops.data.budget import UNLABELED
from tlops.plugins import Dim, Need, NeedsFn, Space, StrategyDecl
from tlops.training.contexts import EvalContext, EvalExtras, FitContext, TrainData, domain_distance

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tlops.config import TrainConfig
    from tlops.data import tensors
    from tlops.data.tensors import Shard, SplitTensors
    from tlops.models.model import TransferModel
    from tlops.models.numerics import Numerics
else:
    from tlops.lazy import lazy

    torch = lazy("torch")
    nn = lazy("torch.nn")
    tensors = lazy("tlops.data.tensors")

__all__ = ["UNLABELED", "Dim", "Need", "Schedule", "Space", "Strategy", "TrainData", "strategy"]

S = TypeVar("S", bound="type[Strategy]")


def strategy(
    name: str,
    *,
    needs: Iterable[Need] | NeedsFn,
    sections: Mapping[str, type[BaseModel]] | None = None,
    data_parallel: str | None = None,
) -> Callable[[S], S]:
    """Declare the decorated class as strategy ``name`` (see :mod:`tlops.plugins`).

    Args:
        name: What ``train.strategy`` says to pick it.
        needs: What it trains on, or a function of the ``train`` params that says it.
        sections: The sections of ``train`` it reads (``train.<section>``) and their models.
        data_parallel: Why it cannot train data-parallel; None: it can.
    """

    def register(cls: S) -> S:
        declared = needs if callable(needs) else frozenset(needs)
        decl = StrategyDecl(
            name, dict(sections or {}), declared, data_parallel, cls.__module__, cls
        )
        plugins.register(decl)
        cls.name = name
        return cls

    return register


@dataclass(frozen=True)
class Schedule:
    """How long and how fast: the loop's optimiser and warmup + cosine schedule use it."""

    epochs: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    early_stopping: bool = True


Batch = tuple["torch.Tensor", "torch.Tensor"]


class Strategy(ABC):
    """One way of training a :class:`TransferModel`; see the module docstring."""

    name: ClassVar[str]  # set by the @strategy declaration
    pretrained: ClassVar[bool] = True  # start from the backbone's pretrained weights
    log_every: ClassVar[int] = 1  # epochs between two metric reports
    own_source_head: ClassVar[bool] = False  # the source's labels are its own classes
    # learns from target images whose label it cannot use (data.target_unlabeled's are added)
    uses_unlabeled: ClassVar[bool] = False
    # what the tune step searches: train param (dotted below train) -> its range; a strategy
    # declares its own params and the shared ones it cares about (none: it cannot be tuned),
    # around their params.yaml values (the search's first trial), a few times either way
    space: ClassVar[Space] = {}

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.criterion: nn.Module = nn.CrossEntropyLoss()
        # extra trainable modules (a domain discriminator, ...): a subclass adds them here, so
        # that modules() is the same object for the optimiser, the checkpoints and the loss
        self.extra = nn.ModuleDict()
        # precision and memory layout: the loop sets them before the first batch (and for a
        # calibration copy); batches and validation follow them
        self.numerics: Numerics = lazy_numerics()
        # the run's progress in 0..1, set by the loop before every step from (epoch, step), so a
        # resumed run sees the values the uninterrupted one did (loss weights that ramp up)
        self.progress = 0.0
        # this process's rows of every global batch under DDP (set by the loop; None: all)
        self.shard: Shard | None = None
        # a folder of the run (the loop's checkpoint folder) for what a strategy computes before
        # the first epoch and wants to keep across a resume; None outside a training run
        self.work_dir: Path | None = None
        self._terms: dict[str, list[torch.Tensor]] = {}

    @classmethod
    def declaration(cls) -> StrategyDecl:
        """This strategy's declaration (:mod:`tlops.plugins`)."""
        return plugins.declaration(cls.name)

    @property
    def needs(self) -> frozenset[Need]:
        """What this strategy trains on with its params."""
        return self.declaration().needs_of(self.cfg)

    def record(self, name: str, value: torch.Tensor) -> None:
        """Add one step's value of an extra loss term to the epoch's mean (no device sync)."""
        self._terms.setdefault(name, []).append(value.detach().float())

    def epoch_terms(self) -> dict[str, float]:
        """The epoch's mean of every recorded term (logged per epoch), then reset."""
        means = {name: float(torch.stack(values).mean()) for name, values in self._terms.items()}
        self._terms = {}
        return means

    def augmented(
        self, model: TransferModel, images: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """:meth:`warped`, in the training's memory layout (what the model's forward takes)."""
        x = self.warped(model, images, generator)
        return x.contiguous(memory_format=self.numerics.memory_format)

    @property
    def validation_numerics(self) -> Numerics:
        """fp32 in the run's memory layout: what every figure a decision reads is computed in.

        Early stopping and the best-epoch checkpoint read the validation figures; under bf16
        they would rank epochs by rounded logits (bench/numerics_trace.py).
        """
        return replace(self.numerics, precision="fp32", compile=False)

    def warped(
        self, model: TransferModel, images: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """A uint8 batch normalised and randomly warped (``train.augment``).

        The same draws of ``generator`` in every strategy (a shard takes its rows of them).
        """
        aug = self.cfg.augment
        return tensors.augment_batch(
            tensors.normalize(images, model.mean, model.std),
            tensors.Augment(aug.rotation_deg, aug.scale, aug.translate, aug.hflip),
            generator,
            self.shard,
        )

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

    def named_teacher(self) -> str | None:
        """The teacher a strategy that needs one names (None: the champion)."""
        return None

    def extra_models(self, ctx: FitContext) -> dict[str, TransferModel]:
        """Models trained beside the run's, saved next to it by file name (none by default)."""
        return {}

    def evaluation(self, ctx: EvalContext) -> EvalExtras:
        """What this strategy adds to the evaluation of its model.

        A strategy that trained on the source domain: how far apart the two domains' test
        features are before and after training (:func:`domain_distance`), when the source's
        data was given. A subclass adds its own to what this returns.
        """
        extras = EvalExtras()
        if Need.SOURCE not in self.needs:
            return extras
        source = ctx.test_split("source", ctx.model)
        if source is None:
            return extras
        distance = domain_distance(ctx, source)
        extras.report["domain_distance"] = distance
        extras.logged.update(distance)
        extras.summary = (
            f"; source-target MMD^2 {distance['domain_mmd2_before']:.4f} before, "
            f"{distance['domain_mmd2_after']:.4f} after training"
        )
        return extras

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

    def selection_metric(self) -> str:
        """The row key that picks the best epoch: ``train.early_stopping.metric`` by default."""
        return str(self.cfg.early_stopping.metric)

    def selection(
        self, model: TransferModel, data: TrainData, device: torch.device
    ) -> dict[str, float]:
        """Figures of the epoch's model beside the validation's (none by default)."""
        return {}

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


def lazy_numerics() -> Numerics:
    """fp32, the default until the loop sets the run's numerics."""
    from tlops.models.numerics import Numerics

    return Numerics()


def get_strategy(cfg: TrainConfig) -> Strategy:
    """The strategy object ``train.strategy`` names.

    Raises:
        ValueError: No strategy has that name.
    """
    cls: type[Strategy] = plugins.declaration(cfg.strategy).cls
    return cls(cfg)


def labeled(split: SplitTensors) -> SplitTensors:
    """The images of ``split`` whose label the budget allows (``split`` itself if all are)."""
    keep = split.labels != UNLABELED
    if keep.all():
        return split
    return tensors.subset(split, np.flatnonzero(keep))


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def class_weights(labels: np.ndarray, n_classes: int, mode: str) -> torch.Tensor | None:
    """``balanced`` weights (n / (k * count)) or None."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = len(labels) / (n_classes * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)
