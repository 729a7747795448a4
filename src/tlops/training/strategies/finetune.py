"""``finetune``: the pretrained backbone, its top stages unfrozen, on labeled target images."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tlops.training.strategies.base import (
    Batch,
    Dim,
    Need,
    Space,
    Strategy,
    TrainData,
    labeled,
    strategy,
)

if TYPE_CHECKING:
    import torch

    from tlops.data import tensors
    from tlops.models import inference
    from tlops.models.model import TransferModel
else:
    from tlops.lazy import lazy

    tensors = lazy("tlops.data.tensors")
    inference = lazy("tlops.models.inference")


@strategy("finetune", needs={Need.IMAGES})  # per-image loss: any shard of a batch adds up
class FineTune(Strategy):
    """The pretrained backbone, its top ``train.trainable_stages`` stages unfrozen.

    Gradual unfreezing by ``train.unfreeze_milestones``; the backbone learns at
    ``lr x backbone_lr_mult`` (discriminative fine-tuning); per-sample random affine
    augmentation of every batch.
    """

    # the optimiser's knobs: which rates, how much decay, how soft the targets
    space: ClassVar[Space] = {
        "lr": Dim(3e-4, 1e-2, log=True),
        "backbone_lr_mult": Dim(0.1, 1.0, log=True),
        "weight_decay": Dim(1e-5, 1e-3, log=True),
        "label_smoothing": Dim(0.0, 0.2),
    }

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
        return tensors.batches(
            labeled(data.train), self.cfg.batch_size, True, generator, device, self.shard
        )

    def loss(self, model: TransferModel, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        """Cross-entropy (label smoothing, class weights) on augmented images."""
        images, labels = batch
        logits: torch.Tensor = model(self.augmented(model, images, generator))
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
        logits = inference.predict_logits(
            model, data.val, self.cfg.eval_batch_size, device, self.validation_numerics
        )
        return logits, data.val.labels
