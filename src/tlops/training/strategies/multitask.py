"""``multitask``: one shared backbone, a head per domain's task, trained jointly (Caruana 1997).

Each step takes a batch of labeled target images and ``train.multitask.source_batch_size``
labeled source images (drawn with the epoch's seeded generator), through the backbone as one
batch; the target head (the model's) learns the target classes, a second head (the strategy's
extra module, checkpointed with the model) the source's classes, which may differ. The loss is
``CE_target + train.multitask.source_weight x CE_source``. The source head is not part of the
registered model: it is a means of training the shared features.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from pydantic import Field

from tlops.config import StrategyParams
from tlops.training.strategies.base import Dim, Need, Space, TrainData, labeled, strategy
from tlops.training.strategies.finetune import FineTune

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tlops.data import tensors
    from tlops.models.model import TransferModel
else:
    from tlops.lazy import lazy

    torch = lazy("torch")
    nn = lazy("torch.nn")
    tensors = lazy("tlops.data.tensors")

# target and source images (uint8), target labels, source labels
MultiBatch = tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]


class MultiTaskParams(StrategyParams):
    """``train.multitask``."""

    source_batch_size: int = Field(ge=1)  # source images beside each target batch
    source_weight: float = Field(ge=0.0)  # loss = CE_target + this x CE_source


@strategy(
    "multitask",
    needs={Need.IMAGES, Need.SOURCE},
    sections={"multitask": MultiTaskParams},
    data_parallel="its steps pair a target batch with a source batch, which are not sharded",
)
class MultiTask(FineTune):
    """Target and source tasks on a shared backbone; see the module docstring."""

    own_source_head: ClassVar[bool] = True
    space: ClassVar[Space] = {**FineTune.space, "multitask.source_weight": Dim(0.2, 2.0, log=True)}

    @property
    def params(self) -> MultiTaskParams:
        """``train.multitask``."""
        section: MultiTaskParams = self.cfg.section("multitask")
        return section

    def prepare(self, model: TransferModel, data: TrainData, device: torch.device) -> None:
        """The source head (once, drawn from ``train.seed``) and the losses."""
        assert data.source_train is not None
        if "source_head" not in self.extra:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.cfg.seed)
                n_source = len(data.source_classes or data.classes)
                self.extra["source_head"] = nn.Linear(model.num_features, n_source).to(device)
        self.source_criterion = nn.CrossEntropyLoss(label_smoothing=self.cfg.label_smoothing)
        super().prepare(model, data, device)

    def steps_per_epoch(self, data: TrainData) -> int:
        """One pass over the labeled target images."""
        return math.ceil(len(data.train_labels()) / self.cfg.batch_size)

    def batches(  # type: ignore[override]
        self, data: TrainData, generator: torch.Generator, device: torch.device
    ) -> Iterator[MultiBatch]:
        """Shuffled labeled target batches, each with a source batch drawn with replacement."""
        assert data.train is not None and data.source_train is not None
        source = data.source_train
        size = self.params.source_batch_size
        for images, labels in tensors.batches(
            labeled(data.train), self.cfg.batch_size, True, generator, device
        ):
            pick = torch.randint(len(source), (size,), generator=generator).numpy()
            source_images = torch.from_numpy(np.ascontiguousarray(source.images[pick]))
            yield (
                torch.cat([images, source_images.to(device)]),
                labels,
                torch.from_numpy(source.labels[pick]).to(device),
            )

    def loss(  # type: ignore[override]
        self, model: TransferModel, batch: MultiBatch, generator: torch.Generator
    ) -> torch.Tensor:
        """``CE_target + source_weight x CE_source`` on augmented images."""
        images, labels, source_labels = batch
        features = model.dropout(model.features(self.augmented(model, images, generator)))
        n = len(labels)
        target_loss: torch.Tensor = self.criterion(model.head(features[:n]), labels)
        source_loss: torch.Tensor = self.source_criterion(
            self.extra["source_head"](features[n:]), source_labels
        )
        self.record("loss_target", target_loss)
        self.record("loss_source", source_loss)
        return target_loss + self.params.source_weight * source_loss
