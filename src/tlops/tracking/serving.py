"""Logging a trained model to MLflow as a model that serves images, and registering it.

The logged model is a :class:`ServingModel` (pixels in, probabilities out) with its signature,
an input example, pinned requirements, the class names in its metadata and the weights-only
tlops checkpoint as an extra file (what tlops itself reads back: :data:`CHECKPOINT_ARTIFACT`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tlops.config import TrackingConfig
from tlops.models.model import CHECKPOINT_ARTIFACT, TransferModel
from tlops.tracking.registry import CHALLENGER
from tlops.tracking.runs import active_run, client


class ServingModel(nn.Module):
    """What the scoring server runs: raw pixels in, class probabilities out.

    Input: float32 (N, S, S, 3) pixel values in 0..255, S = the model's image size (the
    ``input_example`` logged with the model shows the shape). Output: (N, C) probabilities in the
    order of the ``classes`` in the model's metadata.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: TransferModel) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(model.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(model.std).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalise (N, S, S, 3) pixels and return softmax probabilities."""
        x = pixels.permute(0, 3, 1, 2).float().div(255.0)
        x = (x - self.mean) / self.std
        return torch.softmax(self.model(x), dim=1)


@dataclass(frozen=True)
class Registered:
    """A registered model version and the aliases it holds."""

    name: str
    version: str
    aliases: tuple[str, ...]
    model_uri: str


def _requirements() -> list[str]:
    # Explicit pins: MLflow would otherwise spend seconds inferring them by importing the model.
    from importlib.metadata import version

    names = [
        "torch",
        "torchvision",
        "timm",
        "mlflow",
        "numpy",
        "pillow",
        "scikit-learn",
        "pydantic",
        "pyyaml",
        "pandas",
    ]
    return [f"{name}=={version(name)}" for name in names]


def log_and_register(
    cfg: TrackingConfig,
    run_id: str,
    model: TransferModel,
    model_name: str,
    image_size: int,
    sample_pixels: np.ndarray,
    tags: dict[str, str],
) -> Registered:
    """Log the model with ``mlflow.pytorch`` and register it as a new version (``challenger``).

    Args:
        cfg: Tracking params.
        run_id: The pipeline's run.
        model: The trained model (CPU).
        model_name: Registered model name.
        image_size: Square input size of the model.
        sample_pixels: A few target images, float32 (N, S, S, 3) in 0..255 (input example).
        tags: Tags for the version (data version, git sha, metrics, decision...).

    Returns:
        The registered version.
    """
    import mlflow
    from mlflow.models import infer_signature

    import tlops

    model = model.cpu().eval()
    serving = ServingModel(model).eval()
    with torch.no_grad():
        output = serving(torch.from_numpy(sample_pixels)).numpy()
    signature = infer_signature(sample_pixels, output)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / CHECKPOINT_ARTIFACT
        torch.save(model.checkpoint(), checkpoint)
        with active_run(cfg, run_id):
            info = mlflow.pytorch.log_model(
                serving,
                name="model",
                # "pt2" (MLflow 3's default) runs torch.export: ~5 s on 2 cores, against < 1 s
                # for a pickle of the module; tlops itself never reads it (it reads the
                # weights-only checkpoint in extra_files), only the scoring server does.
                serialization_format="pickle",
                signature=signature,
                input_example=sample_pixels,
                pip_requirements=_requirements(),
                extra_files=[str(checkpoint)],
                code_paths=[str(Path(tlops.__file__).parent)],
                metadata={
                    "classes": model.classes,
                    "image_size": image_size,
                    "input": "float32 (N, S, S, 3) pixels 0..255"
                    + (", aligned as `align` says" if model.align.active else ""),
                    "align": model.align.model_dump(mode="json") if model.align.active else None,
                    "backbone": model.spec,
                },
            )
    mlflow_client = client(cfg)
    try:
        mlflow_client.create_registered_model(model_name)
    except mlflow.exceptions.MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    version = mlflow_client.create_model_version(
        model_name, info.model_uri, run_id=run_id, tags=tags
    )
    mlflow_client.set_registered_model_alias(model_name, CHALLENGER, version.version)
    return Registered(model_name, str(version.version), (CHALLENGER,), info.model_uri)


def to_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (N, C, S, S) -> the serving input, float32 (N, S, S, 3) in 0..255."""
    x = images.astype(np.float32).transpose(0, 2, 3, 1)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(x)
