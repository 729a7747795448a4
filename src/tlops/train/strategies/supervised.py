"""Supervised training on labeled target images: ``finetune`` and ``scratch``."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch

from tlops.data.budget import UNLABELED
from tlops.data.tensors import Augment, SplitTensors, augment_batch, batches, normalize
from tlops.models.inference import predict_logits
from tlops.models.model import TransferModel
from tlops.train.strategies.base import Batch, Strategy, TrainData


def labeled(split: SplitTensors) -> SplitTensors:
    """The images of ``split`` whose label the budget allows (``split`` itself if all are)."""
    keep = split.labels != UNLABELED
    if keep.all():
        return split
    index = np.flatnonzero(keep)
    return SplitTensors(
        np.ascontiguousarray(split.images[index]),
        split.labels[index],
        [split.paths[i] for i in index],
    )


class FineTune(Strategy):
    """The pretrained backbone, its top ``train.trainable_stages`` stages unfrozen.

    Gradual unfreezing by ``train.unfreeze_milestones``; the backbone learns at
    ``lr x backbone_lr_mult`` (discriminative fine-tuning); per-sample random affine
    augmentation of every batch.
    """

    name: ClassVar[str] = "finetune"
    data_parallel: ClassVar[str | None] = None  # per-image loss: any shard of a batch adds up

    def backbone_lr(self) -> float:
        """The backbone's learning rate."""
        return self.cfg.lr * self.cfg.backbone_lr_mult

    def param_groups(self, model: TransferModel) -> list[dict[str, Any]]:
        """Head at ``lr``, backbone at :meth:`backbone_lr`."""
        return [
            {"params": list(model.head.parameters()), "lr": self.cfg.lr},
            {"params": list(model.backbone.parameters()), "lr": self.backbone_lr()},
        ]

    def trainable_stages(self, epoch: int) -> int | None:
        """``trainable_stages``, changed at each milestone reached."""
        trainable = self.cfg.trainable_stages
        for milestone in sorted(self.cfg.unfreeze_milestones):
            if epoch >= milestone:
                trainable = self.cfg.unfreeze_milestones[milestone]
        return trainable

    def prepare(self, model: TransferModel, data: TrainData, device: torch.device) -> None:
        """The loss; refuses a label budget of 0 (nothing to fine-tune on)."""
        if not len(data.train_labels()):
            raise ValueError(
                f"train.strategy {self.name} trains on labeled target images, and "
                "train.target_labels is 0: use a domain adaptation strategy (source_only, dan, "
                "coral, dann, mcc) or give it labels"
            )
        super().prepare(model, data, device)

    def steps_per_epoch(self, data: TrainData) -> int:
        """Batches of the labeled images of the train split."""
        return math.ceil(len(data.train_labels()) / self.cfg.batch_size)

    def batches(
        self, data: TrainData, generator: torch.Generator, device: torch.device
    ) -> Iterator[Batch]:
        """Shuffled uint8 image batches of the labeled images of the train split."""
        assert data.train is not None
        return batches(
            labeled(data.train), self.cfg.batch_size, True, generator, device, self.shard
        )

    def loss(self, model: TransferModel, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        """Cross-entropy (label smoothing, class weights) on augmented images."""
        images, labels = batch
        aug = self.cfg.augment
        x = augment_batch(
            normalize(images, model.mean, model.std),
            Augment(aug.rotation_deg, aug.scale, aug.translate, aug.hflip),
            generator,
            self.shard,
        )
        logits: torch.Tensor = model(x.contiguous(memory_format=self.numerics.memory_format))
        if not len(labels):
            # a process with no row of a short last batch: a zero loss that still takes part
            # in DDP's gradient all-reduce
            return logits.sum() * 0.0
        loss: torch.Tensor = self.criterion(logits, labels)
        return loss

    def val_logits(
        self, model: TransferModel, data: TrainData, device: torch.device
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Logits of the val split."""
        assert data.val is not None
        logits = predict_logits(model, data.val, self.cfg.eval_batch_size, device, self.numerics)
        return logits, data.val.labels


class Scratch(FineTune):
    """The same architecture from random init, every layer trained at ``lr``.

    The baseline that shows what the transfer brings.
    """

    name: ClassVar[str] = "scratch"
    pretrained: ClassVar[bool] = False

    def backbone_lr(self) -> float:
        """The backbone learns as fast as the head."""
        return self.cfg.lr

    def trainable_stages(self, epoch: int) -> int | None:
        """Everything trains."""
        return None
