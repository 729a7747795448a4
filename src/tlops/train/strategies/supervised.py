"""Supervised training on labeled target images: ``finetune`` and ``scratch``."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch

from tlops.data.tensors import Augment, augment_batch, batches, normalize
from tlops.models.inference import predict_logits
from tlops.models.model import TransferModel
from tlops.train.strategies.base import Batch, Need, Strategy, TrainData


class FineTune(Strategy):
    """The pretrained backbone, its top ``train.trainable_stages`` stages unfrozen.

    Gradual unfreezing by ``train.unfreeze_milestones``; the backbone learns at
    ``lr x backbone_lr_mult`` (discriminative fine-tuning); per-sample random affine
    augmentation of every batch.
    """

    name: ClassVar[str] = "finetune"
    needs: ClassVar[frozenset[Need]] = frozenset({Need.IMAGES})

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

    def steps_per_epoch(self, data: TrainData) -> int:
        """Batches of the train split."""
        assert data.train is not None
        return math.ceil(len(data.train) / self.cfg.batch_size)

    def batches(
        self, data: TrainData, generator: torch.Generator, device: torch.device
    ) -> Iterator[Batch]:
        """Shuffled uint8 image batches of the train split."""
        assert data.train is not None
        return batches(data.train, self.cfg.batch_size, True, generator, device)

    def loss(self, model: TransferModel, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        """Cross-entropy (label smoothing, class weights) on augmented images."""
        images, labels = batch
        aug = self.cfg.augment
        x = augment_batch(
            normalize(images, model.mean, model.std),
            Augment(aug.rotation_deg, aug.scale, aug.translate, aug.hflip),
            generator,
        )
        loss: torch.Tensor = self.criterion(
            model(x.contiguous(memory_format=self.numerics.memory_format)), labels
        )
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
