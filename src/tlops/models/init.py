"""Where a model's weights come from: a backbone name, a checkpoint path or an MLflow model.

* ``torchvision:<arch>`` / ``timm:<arch>`` - a registered backbone family (see
  :mod:`tlops.models.backbones`), with ImageNet weights when ``pretrained``;
* a path to a tlops checkpoint (``*.pt``) - e.g. a model trained on a source domain;
* ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or ``runs:/<run_id>/<path>`` - an MLflow
  model logged by tlops, e.g. the current champion as a warm start (the tracking URI must be set).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlops.config import AlignConfig
from tlops.models.backbones import build_backbone
from tlops.models.model import (
    CHECKPOINT_ARTIFACT,
    BackboneError,
    TransferModel,
    read_checkpoint,
)


def _checkpoint_from_mlflow(uri: str) -> Path:
    import mlflow

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


def load_trained(spec: str) -> TransferModel:
    """A trained model from a checkpoint path or an MLflow model URI (e.g. a teacher).

    Raises:
        BackboneError: ``spec`` names an architecture (``timm:...``), not a trained model.
    """
    init = resolve_init(spec)
    if init.checkpoint is None:
        raise BackboneError(
            f"{spec!r}: a trained model (a checkpoint or an MLflow model) is needed here, not "
            "an architecture"
        )
    return model_from_checkpoint(init.checkpoint)


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
    align = payload.get("align")
    model.align = AlignConfig.none() if align is None else AlignConfig.model_validate(align)
    return model
