"""Domain adaptation: train on the labeled source domain, adapt to the target domain.

Every step takes a batch of labeled source images and a batch of target images
(``train.da.target_batch_size``, drawn from the target training split with the epoch's seeded
generator); both go through the backbone as one batch. The loss is the cross-entropy on the
source images and on the target images whose label the budget (``train.target_labels``) allows,
plus the strategy's domain term on the features or predictions:

* ``source_only``: none (the baseline every method is measured against; with a label budget
  k > 0 its target batches hold only the k labeled images per class);
* ``dan``: multi-kernel MMD between source and target features (Long et al. 2015);
* ``coral``: the distance of their covariances (Sun & Saenko 2016);
* ``dann``: a domain discriminator behind a gradient reversal layer (Ganin et al. 2016);
* ``mcc``: minimum class confusion on the target predictions (Jin et al. 2020).

The domain term's weight rises with Ganin et al.'s ramp over the run (``train.da.ramp_gamma``).
Without target labels (budget 0) no target label is read before evaluation: the best epoch
and early stopping use the **source validation split** (the "source risk" criterion of
You et al. 2019, *Towards Accurate Model Selection in Deep Unsupervised Domain Adaptation*).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from tlops.data.budget import UNLABELED
from tlops.data.tensors import Augment, SplitTensors, augment_batch, batches, normalize
from tlops.models.inference import predict_logits
from tlops.models.model import TransferModel
from tlops.train import losses
from tlops.train.strategies.base import TrainData, class_weights
from tlops.train.strategies.supervised import FineTune

# A step's batch: the uint8 images of source then target, and their labels (UNLABELED for a
# target image whose label is not used); the first `n_source` rows are the source batch.
DaBatch = tuple[torch.Tensor, torch.Tensor, int]


class SourceOnly(FineTune):
    """Fine-tune on the labeled source domain (and the target labels the budget allows)."""

    name: ClassVar[str] = "source_only"
    data_parallel: ClassVar[str | None] = (
        "its steps pair a source batch with a target batch, and the domain losses (MMD, CORAL, "
        "MCC) are statistics of the whole batch; a shard alone cannot compute them"
    )

    def prepare(self, model: TransferModel, data: TrainData, device: torch.device) -> None:
        """The loss (class weights over the labeled images of both domains) and target pool."""
        assert data.source_train is not None and data.train is not None
        labels = np.concatenate([data.source_train.labels, data.train_labels()])
        weights = class_weights(labels, len(data.classes), self.cfg.class_weights)
        self.criterion = nn.CrossEntropyLoss(
            weight=None if weights is None else weights.to(device),
            label_smoothing=self.cfg.label_smoothing,
            ignore_index=UNLABELED,
        )
        target = data.train.labels
        # the target images a step may draw: every one, or only the labeled ones
        self.pool = np.arange(len(target)) if self.uses_unlabeled else np.flatnonzero(target >= 0)

    def steps_per_epoch(self, data: TrainData) -> int:
        """One pass over the source training split."""
        assert data.source_train is not None
        return math.ceil(len(data.source_train) / self.cfg.batch_size)

    def batches(  # type: ignore[override]
        self, data: TrainData, generator: torch.Generator, device: torch.device
    ) -> Iterator[DaBatch]:
        """Shuffled source batches, each with a target batch drawn with replacement."""
        assert data.source_train is not None and data.train is not None
        size = self.cfg.da.target_batch_size
        for images, labels in batches(
            data.source_train, self.cfg.batch_size, True, generator, device
        ):
            if not len(self.pool):
                yield images, labels, len(labels)
                continue
            pick = self.pool[torch.randint(len(self.pool), (size,), generator=generator).numpy()]
            target = torch.from_numpy(np.ascontiguousarray(data.train.images[pick])).to(device)
            target_labels = torch.from_numpy(data.train.labels[pick]).to(device)
            yield (
                torch.cat([images, target]),
                torch.cat([labels, target_labels]),
                len(labels),
            )

    def weight(self) -> float:
        """The domain term's weight at the current progress (Ganin et al.'s ramp)."""
        return losses.ramp(self.progress, self.cfg.da.ramp_gamma)

    def domain_term(
        self, source: torch.Tensor, target: torch.Tensor, target_logits: torch.Tensor
    ) -> tuple[str, torch.Tensor, float] | None:
        """The strategy's domain term: ``(name, value, weight)``, or None (no term).

        Args:
            source: Features of the source images.
            target: Features of the target images.
            target_logits: The head's output on the target images.
        """
        return None

    def loss(  # type: ignore[override]
        self, model: TransferModel, batch: DaBatch, generator: torch.Generator
    ) -> torch.Tensor:
        """Cross-entropy on every labeled image of the batch, plus the domain term."""
        images, labels, n_source = batch
        aug = self.cfg.augment
        x = augment_batch(
            normalize(images, model.mean, model.std),
            Augment(aug.rotation_deg, aug.scale, aug.translate, aug.hflip),
            generator,
        )
        features = model.features(x.contiguous(memory_format=self.numerics.memory_format))
        logits = model.head(model.dropout(features))
        ce: torch.Tensor = self.criterion(logits, labels)
        self.record("loss_ce", ce)
        if features.shape[0] == n_source:  # no target image in this batch
            return ce
        term = self.domain_term(features[:n_source], features[n_source:], logits[n_source:])
        if term is None:
            return ce
        name, value, weight = term
        self.record(name, value)
        return ce + weight * value

    def val_logits(
        self, model: TransferModel, data: TrainData, device: torch.device
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Target validation logits, or the source's when no target label may be read."""
        split: SplitTensors | None = data.val if data.val is not None else data.source_val
        assert split is not None
        logits = predict_logits(model, split, self.cfg.eval_batch_size, device, self.numerics)
        return logits, split.labels


class Dan(SourceOnly):
    """Multi-kernel MMD between the source and target features (Long et al. 2015)."""

    name: ClassVar[str] = "dan"
    uses_unlabeled: ClassVar[bool] = True

    def domain_term(
        self, source: torch.Tensor, target: torch.Tensor, target_logits: torch.Tensor
    ) -> tuple[str, torch.Tensor, float]:
        """``MK-MMD^2(source, target)``, weighted ``weight x ramp``."""
        cfg = self.cfg.da.dan
        return "loss_mmd", losses.mk_mmd(source, target, cfg.bandwidths), cfg.weight * self.weight()


class Coral(SourceOnly):
    """Match the covariances of source and target features (Sun & Saenko 2016)."""

    name: ClassVar[str] = "coral"
    uses_unlabeled: ClassVar[bool] = True

    def domain_term(
        self, source: torch.Tensor, target: torch.Tensor, target_logits: torch.Tensor
    ) -> tuple[str, torch.Tensor, float]:
        """``CORAL(source, target)``, weighted ``weight x ramp``."""
        loss = losses.coral(source, target)
        return "loss_coral", loss, self.cfg.da.coral.weight * self.weight()


class Dann(SourceOnly):
    """A domain discriminator behind a gradient reversal layer (Ganin et al. 2016).

    The discriminator (two hidden layers of ``train.da.dann.hidden``) learns to tell the
    domains apart at full strength; the reversal layer hands the backbone the opposite of its
    gradient, scaled by the ramp, so the features become indistinguishable. It is part of the
    strategy's state: checkpointed every epoch and restored on resume.
    """

    name: ClassVar[str] = "dann"
    uses_unlabeled: ClassVar[bool] = True

    def prepare(self, model: TransferModel, data: TrainData, device: torch.device) -> None:
        """The discriminator (once, drawn from ``train.seed``), then the loss and target pool."""
        if "discriminator" not in self.extra:
            hidden = self.cfg.da.dann.hidden
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.cfg.seed)
                self.extra["discriminator"] = nn.Sequential(
                    nn.Linear(model.num_features, hidden),
                    nn.ReLU(),
                    nn.Linear(hidden, hidden),
                    nn.ReLU(),
                    nn.Linear(hidden, 1),
                ).to(device)
        super().prepare(model, data, device)

    def domain_term(
        self, source: torch.Tensor, target: torch.Tensor, target_logits: torch.Tensor
    ) -> tuple[str, torch.Tensor, float]:
        """The discriminator's cross-entropy on features reversed with the ramp's coefficient."""
        reversed_features = losses.grad_reverse(torch.cat([source, target]).float(), self.weight())
        domain = self.extra["discriminator"](reversed_features)
        loss = losses.domain_bce(domain[: len(source)], domain[len(source) :])
        return "loss_domain", loss, self.cfg.da.dann.weight


class Mcc(SourceOnly):
    """Minimum class confusion on the target predictions (Jin et al. 2020)."""

    name: ClassVar[str] = "mcc"
    uses_unlabeled: ClassVar[bool] = True

    def domain_term(
        self, source: torch.Tensor, target: torch.Tensor, target_logits: torch.Tensor
    ) -> tuple[str, torch.Tensor, float]:
        """``MCC(target logits)``, weighted ``weight x ramp``."""
        cfg = self.cfg.da.mcc
        return "loss_mcc", losses.mcc(target_logits, cfg.temperature), cfg.weight * self.weight()
