"""``source_only``: train on the labeled source domain; the base of domain adaptation.

Every step takes a batch of labeled source images and a batch of target images
(``train.da.target_batch_size``, drawn from the target training split with the epoch's seeded
generator); both go through the backbone as one batch. The loss is the cross-entropy on the
source images and on the target images whose label the budget (``train.target_labels``) allows,
plus the domain term of a strategy built on this one (``dan``, ``coral``, ``dann``, ``mcc``) on
the features or predictions; ``source_only`` has none: it is the baseline every method is
measured against (with a label budget k > 0 its target batches hold only the k labeled images
per class).

The domain term's weight rises with Ganin et al.'s ramp over the run (``train.da.ramp_gamma``).
Without target labels (budget 0) no target label is read before evaluation: the best epoch
and early stopping use the **source validation split** (the "source risk" criterion of
You et al. 2019, *Towards Accurate Model Selection in Deep Unsupervised Domain Adaptation*),
or the label-free criterion ``train.selection.criterion`` names
(:mod:`tlops.training.selection`).
With ``train.da.reference`` an adaptation run also trains ``source_only`` on the same data,
budget and seed, and evaluate scores both.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field

from tlops.config import StrategyParams
from tlops.layout import REFERENCE_FILE
from tlops.training.contexts import EvalContext, EvalExtras, FitContext
from tlops.training.strategies.base import (
    UNLABELED,
    Dim,
    Need,
    Space,
    TrainData,
    class_weights,
    strategy,
)
from tlops.training.strategies.finetune import FineTune

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tlops.data.tensors import SplitTensors
    from tlops.models import inference, init
    from tlops.models.model import TransferModel
    from tlops.training import losses
else:
    from tlops.lazy import lazy

    torch = lazy("torch")
    nn = lazy("torch.nn")
    inference = lazy("tlops.models.inference")
    init = lazy("tlops.models.init")
    losses = lazy("tlops.training.losses")


class DomainAdaptation(StrategyParams):
    """``train.da``: what the domain adaptation strategies share."""

    target_batch_size: int = Field(ge=1)  # target images beside each source batch
    # the domain loss's weight ramps from 0 to its value as 2/(1+exp(-gamma p))-1 over the
    # run (p: progress 0..1), Ganin et al.'s schedule; 0: no ramp
    ramp_gamma: float = Field(ge=0.0)
    # also train source_only on the same data, budget and seed, so that evaluate reports what
    # the adaptation added in the same run (twice the training time)
    reference: bool


ADAPTATION = frozenset({Need.IMAGES, Need.SOURCE})
SECTIONS = {"da": DomainAdaptation}
# A step's batch: the uint8 images of source then target, and their labels (UNLABELED for a
# target image whose label is not used); the first `n_source` rows are the source batch.
__all__ = ["ADAPTATION", "Dim", "DomainAdaptation", "SourceOnly", "Space", "adaptation", "losses"]
DaBatch = tuple["torch.Tensor", "torch.Tensor", int]
NOT_DATA_PARALLEL = (
    "its steps pair a source batch with a target batch, and the domain losses (MMD, CORAL, "
    "MCC) are statistics of the whole batch; a shard alone cannot compute them"
)


def adaptation(name: str, params: type[StrategyParams] | None = None) -> Any:
    """Declare a domain adaptation strategy: ``train.da`` and its own section ``train.<name>``."""
    sections: dict[str, type[BaseModel]] = {**SECTIONS, **({name: params} if params else {})}
    return strategy(name, needs=ADAPTATION, sections=sections, data_parallel=NOT_DATA_PARALLEL)


@adaptation("source_only")
class SourceOnly(FineTune):
    """Fine-tune on the labeled source domain (and the target labels the budget allows)."""

    # the optimiser's rates and how fast the domain term ramps in (a subclass adds its weight)
    space: ClassVar[Space] = {
        "lr": Dim(3e-4, 1e-2, log=True),
        "backbone_lr_mult": Dim(0.1, 1.0, log=True),
        "weight_decay": Dim(1e-5, 1e-3, log=True),
        "da.ramp_gamma": Dim(3.0, 30.0, log=True),
    }

    @property
    def da(self) -> DomainAdaptation:
        """``train.da``."""
        section: DomainAdaptation = self.cfg.section("da")
        return section

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
        from tlops.data.tensors import batches

        assert data.source_train is not None and data.train is not None
        size = self.da.target_batch_size
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
        return losses.ramp(self.progress, self.da.ramp_gamma)

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
        features = model.features(self.augmented(model, images, generator))
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
        logits = inference.predict_logits(
            model, split, self.cfg.eval_batch_size, device, self.validation_numerics
        )
        return logits, split.labels

    def label_free(self) -> bool:
        """No target label may be read and a label-free criterion picks the best epoch."""
        return self.cfg.target_labels == 0 and self.cfg.selection.criterion != "source"

    def selection_metric(self) -> str:
        """:data:`tlops.training.selection.SCORE` without target labels, unless ``source``."""
        if self.label_free():
            from tlops.training.selection import SCORE

            return SCORE
        return super().selection_metric()

    def selection(
        self, model: TransferModel, data: TrainData, device: torch.device
    ) -> dict[str, float]:
        """Every label-free criterion of the epoch's model (``train.selection``)."""
        if not self.label_free():
            return {}
        from tlops.training.selection import epoch_criteria

        return epoch_criteria(model, data, self.cfg, device, self.validation_numerics)

    def extra_models(self, ctx: FitContext) -> dict[str, TransferModel]:
        """With ``train.da.reference``: ``source_only`` on the same data, budget and seed.

        Trained in fp32 with its own checkpoints (beside the run's), so it resumes too.
        """
        if not self.da.reference or self.name == "source_only":
            return {}  # source_only is the reference itself
        cfg = self.cfg.model_copy(update={"strategy": "source_only"})
        reference = ctx.build(cfg)
        ctx.fit(SourceOnly(cfg), reference, ctx.checkpoints / "reference", f"{ctx.key}-ref")
        return {REFERENCE_FILE: reference.cpu()}

    def evaluation(self, ctx: EvalContext) -> EvalExtras:
        """The domain distance, and the ``source_only`` reference's scores when one was trained."""
        extras = super().evaluation(ctx)
        if not (ctx.model_dir / REFERENCE_FILE).is_file():
            return extras
        from tlops.evaluate.metrics import finite_or_none

        reference_model = init.load_model(ctx.model_dir / REFERENCE_FILE)
        scored = ctx.score(reference_model, ctx.test)["overall"]
        reference: dict[str, Any] = {k: finite_or_none(v) for k, v in scored.items()}
        extras.report["source_only_reference"] = reference
        extras.metrics.update({f"source_only_{k}": v for k, v in reference.items()})
        extras.logged.update(
            {f"source_only_test_{k}": v for k, v in reference.items() if v is not None}
        )
        return extras
