"""``distill``: a student learns from a teacher's softened outputs (Hinton et al. 2015).

The student is the model ``model.backbone`` names (e.g. a small ``timm:mobilenetv3_small_050``
from random init); the teacher is a trained model (``train.distill.teacher``; default: the
current champion, resolved to its version when the run starts). The teacher's logits of every
target training image, labeled or not, are computed once, at the teacher's own resolution and
alignment, before the first epoch (offline distillation: the teacher never runs again, which
is what makes distilling from a large model affordable). The loss of a batch is
``alpha x CE(student, label) + (1 - alpha) x T^2 x KL(teacher_T || student_T)``: the
cross-entropy over the images the label budget allows, the KL term over all of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import torch

from tlops.data.tensors import Augment, augment_batch, normalize
from tlops.models.model import TransferModel
from tlops.train import losses
from tlops.train.strategies.base import TrainData
from tlops.train.strategies.supervised import FineTune

# uint8 images, labels (UNLABELED outside the budget), the teacher's logits of those images
DistillBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Distill(FineTune):
    """A student trained on a teacher's soft targets and the labels; see the module docstring."""

    name: ClassVar[str] = "distill"
    data_parallel: ClassVar[str | None] = (
        "its batches carry the teacher's logits and its label term is normalised per batch; "
        "neither is sharded"
    )
    uses_unlabeled: ClassVar[bool] = True

    def backbone_lr(self) -> float:
        """The student learns as one: its backbone at ``lr``, like the head."""
        return self.cfg.lr

    def trainable_stages(self, epoch: int) -> int | None:
        """The whole student trains."""
        return None

    def prepare(self, model: TransferModel, data: TrainData, device: torch.device) -> None:
        """The cross-entropy (class weights over the labeled images); no label is required."""
        assert data.train is not None and data.teacher_logits is not None
        if len(data.teacher_logits) != len(data.train):
            raise ValueError(
                f"teacher logits for {len(data.teacher_logits)} images, the train split has "
                f"{len(data.train)}"
            )
        super(FineTune, self).prepare(model, data, device)
        self.teacher = torch.from_numpy(data.teacher_logits).float()

    def steps_per_epoch(self, data: TrainData) -> int:
        """One pass over every target training image, labeled or not."""
        assert data.train is not None
        return math.ceil(len(data.train) / self.cfg.batch_size)

    def batches(  # type: ignore[override]
        self, data: TrainData, generator: torch.Generator, device: torch.device
    ) -> Iterator[DistillBatch]:
        """Shuffled batches of all target training images with their teacher logits."""
        assert data.train is not None
        split = data.train
        order = torch.randperm(len(split), generator=generator).numpy()
        for start in range(0, len(order), self.cfg.batch_size):
            index = np.sort(order[start : start + self.cfg.batch_size])
            images = torch.from_numpy(np.ascontiguousarray(split.images[index])).to(device)
            labels = torch.from_numpy(split.labels[index]).to(device)
            yield images, labels, self.teacher[index].to(device)

    def loss(  # type: ignore[override]
        self, model: TransferModel, batch: DistillBatch, generator: torch.Generator
    ) -> torch.Tensor:
        """Hinton et al.'s loss on augmented images (:func:`tlops.train.losses.distillation`)."""
        images, labels, teacher_logits = batch
        aug = self.cfg.augment
        x = augment_batch(
            normalize(images, model.mean, model.std),
            Augment(aug.rotation_deg, aug.scale, aug.translate, aug.hflip),
            generator,
        )
        student = model(x.contiguous(memory_format=self.numerics.memory_format))
        cfg = self.cfg.distill
        loss, kl = losses.distillation(student, teacher_logits, labels, cfg.alpha, cfg.temperature)
        self.record("loss_kd", kl)
        return loss
