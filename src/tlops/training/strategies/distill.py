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
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from tlops.config import StrategyParams
from tlops.training.contexts import EvalContext, EvalExtras
from tlops.training.strategies.base import Dim, Need, Space, TrainData, strategy
from tlops.training.strategies.finetune import FineTune

if TYPE_CHECKING:
    import torch

    from tlops.data.tensors import SplitTensors
    from tlops.models.model import TransferModel
    from tlops.training import losses
else:
    from tlops.lazy import lazy

    torch = lazy("torch")
    losses = lazy("tlops.training.losses")

# uint8 images, labels (UNLABELED outside the budget), the teacher's logits of those images
DistillBatch = tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]


class DistillParams(StrategyParams):
    """``train.distill``."""

    # a trained model: a checkpoint path or an MLflow model URI; null: the current champion
    # of register_model.model_name (resolved to its version when the run starts)
    teacher: str | None
    alpha: float = Field(ge=0.0, le=1.0)  # weight of the label cross-entropy
    temperature: float = Field(gt=0.0)


@strategy(
    "distill",
    needs={Need.IMAGES, Need.TEACHER},
    sections={"distill": DistillParams},
    data_parallel="its batches carry the teacher's logits and its label term is normalised "
    "per batch; neither is sharded",
)
class Distill(FineTune):
    """A student trained on a teacher's soft targets and the labels; see the module docstring."""

    uses_unlabeled: ClassVar[bool] = True
    space: ClassVar[Space] = {
        **FineTune.space,
        "distill.alpha": Dim(0.0, 1.0),
        "distill.temperature": Dim(1.0, 8.0, log=True),
    }

    @property
    def params(self) -> DistillParams:
        """``train.distill``."""
        section: DistillParams = self.cfg.section("distill")
        return section

    def named_teacher(self) -> str | None:
        """``train.distill.teacher`` (None: the champion)."""
        return self.params.teacher

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
        """Hinton et al.'s loss on augmented images (:func:`tlops.training.losses.distillation`)."""
        images, labels, teacher_logits = batch
        student = model(self.augmented(model, images, generator))
        cfg = self.params
        loss, kl = losses.distillation(student, teacher_logits, labels, cfg.alpha, cfg.temperature)
        self.record("loss_kd", kl)
        return loss

    def evaluation(self, ctx: EvalContext) -> EvalExtras:
        """The teacher and the student on the same test split (:func:`teacher_comparison`)."""
        extras = super().evaluation(ctx)
        uri = ctx.trained.get("teacher")
        if not uri:
            return extras
        compared = teacher_comparison(ctx, str(uri))
        extras.report["teacher"] = compared
        extras.logged.update(
            {f"distill.{k}": v for k, v in compared.items() if isinstance(v, int | float)}
        )
        extras.summary += (
            f"; teacher {compared['teacher_accuracy']:.4f} at "
            f"{compared['teacher_images_per_s']:.0f} images/s, student "
            f"{compared['student_images_per_s']:.0f} images/s"
        )
        return extras


def teacher_comparison(ctx: EvalContext, uri: str) -> dict[str, Any]:
    """The teacher and the student of a ``distill`` run on the same test split.

    Accuracy and macro F1 of both, each at its own resolution and alignment, their inference
    images/s (same device, batch size and fp32) and parameter counts.
    """
    from tlops.models.init import is_mlflow_uri, load_trained
    from tlops.runtime import resolve_device
    from tlops.tracking.runs import client

    if is_mlflow_uri(uri):
        client(ctx.params.tracking)  # the teacher is read through the configured store
    teacher = load_trained(uri)
    teacher_test = ctx.test_split("target", teacher)
    assert teacher_test is not None
    device = resolve_device(ctx.params.runtime.device)
    batch = ctx.params.evaluate.batch_size
    scored = ctx.score(teacher, teacher_test)["overall"]
    out: dict[str, Any] = {"uri": uri}
    for who, network, split in (
        ("teacher", teacher, teacher_test),
        ("student", ctx.model, ctx.test),
    ):
        network.to(device).eval()
        out[f"{who}_images_per_s"] = images_per_s(network, split, batch, device)
        out[f"{who}_params"] = sum(p.numel() for p in network.parameters())
    out["teacher_accuracy"] = scored["accuracy"]
    out["teacher_macro_f1"] = scored["macro_f1"]
    out["student_accuracy"] = ctx.overall["accuracy"]
    out["student_macro_f1"] = ctx.overall["macro_f1"]
    return out


def images_per_s(model: TransferModel, split: SplitTensors, batch_size: int, device: Any) -> float:
    """Inference throughput of ``model`` on ``split``: the best of 3 timed passes after one warm-up.

    The best, not the mean: on a shared machine the other passes measure the neighbours.
    """
    from tlops.models.inference import predict_logits

    predict_logits(model, split, batch_size, device)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        predict_logits(model, split, batch_size, device)
        best = min(best, time.perf_counter() - started)
    return len(split) / best if best > 0 else float("nan")
