"""The params of ``train``: its own keys, and the strategies' sections it validates."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from tlops import plugins
from tlops.config.sections import (
    NumericsSetting,
    Section,
    declared_section,
    suggest,
    validated_section,
)


class AugmentConfig(Section):
    """Per-sample random affine augmentation (applied to training batches only)."""

    rotation_deg: float = Field(ge=0.0, le=180.0)
    scale: tuple[float, float]
    translate: float = Field(ge=0.0, le=0.5)
    hflip: bool


class EarlyStopping(Section):
    """Stop when the validation metric has not improved for ``patience`` epochs."""

    metric: Literal["val_accuracy", "val_loss", "val_macro_f1"]
    patience: int = Field(ge=1)


class Selection(Section):
    """``train.selection``: what "best" means when no target label may be read.

    With ``train.target_labels: 0`` the best epoch (and the ``tune`` step's best trial) is
    picked by ``criterion``: ``source`` (the source validation split's
    ``early_stopping.metric``: the source risk) or a label-free criterion of
    :mod:`tlops.evaluate.criteria` (``entropy``, ``snd``, ``iwv``, ``dev``). With target labels
    the target validation split decides, whatever this says.
    """

    criterion: Literal["source", "entropy", "snd", "iwv", "dev"]
    # target training images (and source validation images) the criterion reads each epoch, a
    # seeded draw: its cost per epoch stays bounded on a large target set
    max_images: int = Field(ge=2)


TargetLabels = Literal["all"] | Annotated[int, Field(ge=0)]


class DistributedConfig(Section):
    """Data-parallel ``train`` (DDP under torchrun; a Kubeflow Trainer TrainJob on a cluster)."""

    # > 1: the pipeline's train task creates a TrainJob of this many nodes (a cluster only)
    nodes: int = Field(ge=1)
    # processes per node: torchrun --nproc-per-node (one per GPU on a cluster)
    procs_per_node: int = Field(ge=1)
    backend: Literal["auto", "gloo", "nccl"]  # auto: nccl on CUDA, gloo on CPU
    # batch-norm statistics: batch (each process's own batch: its shard under DDP) | sync
    # (SyncBatchNorm, the global batch; NCCL only) | frozen (the pretrained running statistics,
    # so the result does not depend on the number of processes) | auto (batch for one process,
    # sync on NCCL, frozen on gloo)
    batchnorm: Literal["auto", "batch", "sync", "frozen"]
    runtime: str  # the ClusterTrainingRuntime (infra/k8s)
    namespace: str | None  # where the TrainJob is created; None: the task's own namespace
    timeout_s: float = Field(gt=0.0)  # the TrainJob fails the task after this
    poll_s: float = Field(gt=0.0)  # how often its status is read

    @property
    def world_size(self) -> int:
        """Processes in all (nodes x processes per node)."""
        return self.nodes * self.procs_per_node


class TrainConfig(Section):
    """Parameters of the ``train`` step.

    Beside the keys below, ``train`` holds the sections the strategies declare
    (``train.<section>``, see :mod:`tlops.plugins`): each is validated by the model its strategy
    registered, and the chosen strategy's sections must be there.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    # a registered strategy (tlops.plugins): a file of tlops/training/strategies or of a plug-in
    strategy: str
    # the label budget: all | k labeled target images per class (drawn reproducibly from the
    # train split; the others are unlabeled) | 0 (unsupervised domain adaptation)
    target_labels: TargetLabels
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0.0)
    backbone_lr_mult: float = Field(ge=0.0)
    weight_decay: float = Field(ge=0.0)
    warmup_epochs: float = Field(ge=0.0)
    label_smoothing: float = Field(ge=0.0, lt=1.0)
    trainable_stages: int | None  # top backbone stages trained by finetune; null = all
    unfreeze_milestones: dict[int, int | None]  # epoch -> trainable stages from then on
    early_stopping: EarlyStopping
    selection: Selection
    class_weights: Literal["none", "balanced"]
    augment: AugmentConfig
    eval_batch_size: int = Field(ge=1)  # validation batches each epoch
    numerics: NumericsSetting
    seed: int
    distributed: DistributedConfig

    @model_validator(mode="after")
    def _strategy_sections(self) -> TrainConfig:
        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        for name, raw in list(extra.items()):
            if not plugins.is_section(name):
                keys = [*type(self).model_fields, *plugins.sections()]
                raise ValueError(f"train.{name}: not a key of params.yaml{suggest(name, keys)}")
            model = plugins.section_model(name)
            extra[name] = validated_section(f"train.{name}", model, raw)
        try:
            decl = plugins.declaration(self.strategy)
        except ValueError as exc:
            raise ValueError(str(exc).replace("train.strategy ", "train.strategy: ", 1)) from None
        for name, model in decl.sections.items():
            if name not in extra:
                why = f"train.strategy {decl.name} reads it, and params.yaml holds its sections"
                extra[name] = validated_section(f"train.{name}", model, None, why)
        return self

    def section(self, name: str) -> Any:
        """The validated section ``train.<name>`` of a strategy.

        Raises:
            KeyError: The params have no such section.
        """
        return declared_section(self, name, f"train.{name}")
