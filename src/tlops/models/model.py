"""The transfer model and its checkpoint format.

A :class:`TransferModel` is a backbone without its classifier (pooled features), a new linear
head for the target classes, the class names, the normalisation it was trained with, and its
*stages* (groups of parameter-name prefixes from input to output) that freezing works on. Its
checkpoint holds plain tensors, strings and numbers, so it is read with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlops.config import AlignConfig

CHECKPOINT_FORMAT = "tlops-model-v1"
# The name of the weights-only checkpoint inside an MLflow model logged by tlops.
CHECKPOINT_ARTIFACT = "tlops_model.pt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneError(ValueError):
    """A backbone spec or checkpoint that names nothing tlops can build."""


@dataclass
class Backbone:
    """A feature extractor and what is needed to fine-tune it."""

    module: nn.Module  # images (N, 3, H, W) -> pooled features (N, num_features)
    num_features: int
    stages: list[list[str]]  # parameter-name prefixes, input stage first
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    fixed_input_size: int | None = None  # e.g. ViT-B/16 only takes 224x224
    weights: str = "none"  # what initialised it: "imagenet:<source>", "random", a checkpoint


class TransferModel(nn.Module):
    """Backbone + linear head over the target classes."""

    def __init__(
        self,
        backbone: Backbone,
        spec: str,
        classes: Sequence[str],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone.module
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.num_features, len(classes))
        self.spec = spec
        self.classes = list(classes)
        self.num_features = backbone.num_features
        self.stages = [list(stage) for stage in backbone.stages]
        self.mean = tuple(backbone.mean)
        self.std = tuple(backbone.std)
        self.fixed_input_size = backbone.fixed_input_size
        self.weights = backbone.weights
        self.image_size: int | None = None  # the resolution it was trained at (set by train)
        # the label-free input alignment it was trained with (set by train; inactive: none)
        self.align = AlignConfig.none()
        self._frozen_prefixes: list[str] = []

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features of normalised images."""
        out: torch.Tensor = self.backbone(images)
        return out.flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits of normalised images."""
        out: torch.Tensor = self.head(self.dropout(self.features(images)))
        return out

    # -- freezing -----------------------------------------------------------------------------
    def freeze(self, trainable_stages: int | None) -> None:
        """Train only the top ``trainable_stages`` backbone stages (None: all) and the head.

        Batch-norm layers inside frozen stages stay in eval mode, also after ``train()``, so
        their running statistics are those of the pretrained model.
        """
        n_stages = len(self.stages)
        keep = n_stages if trainable_stages is None else max(0, min(trainable_stages, n_stages))
        frozen = [p for stage in self.stages[: n_stages - keep] for p in stage]
        self._frozen_prefixes = frozen
        for name, param in self.backbone.named_parameters():
            param.requires_grad = not _matches(name, frozen)
        for param in self.head.parameters():
            param.requires_grad = True
        self.train(self.training)

    def train(self, mode: bool = True) -> TransferModel:
        """Set train/eval mode, keeping batch-norm of frozen stages in eval mode."""
        super().train(mode)
        if mode and self._frozen_prefixes:
            for name, module in self.backbone.named_modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and _matches(
                    name + ".", self._frozen_prefixes
                ):
                    module.eval()
        return self

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        """A weights-only checkpoint: plain tensors, strings and numbers (``weights_only`` safe)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "spec": self.spec,
            "classes": list(self.classes),
            "state_dict": self.state_dict(),
            "mean": list(self.mean),
            "std": list(self.std),
            "weights": self.weights,
            "image_size": self.image_size,
            # None when inactive: the checkpoints of unaligned models stay as they were
            "align": self.align.model_dump(mode="json") if self.align.active else None,
        }


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(
        name == p.rstrip(".") or name.startswith(p if p.endswith(".") else p + ".")
        for p in prefixes
    )


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a tlops checkpoint with ``weights_only=True`` (no code from the file runs)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise BackboneError(f"{path}: not a tlops checkpoint (format {CHECKPOINT_FORMAT})")
    return payload
