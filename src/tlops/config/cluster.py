"""Where the steps run and are tracked: the device, MLflow, and the Kubeflow tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from tlops.config.sections import Section


class RuntimeConfig(Section):
    """Where the model steps compute."""

    device: str  # auto | cpu | cuda | cuda:N; TLOPS_DEVICE overrides


class TrackingConfig(Section):
    """Where runs are tracked; ``MLFLOW_TRACKING_URI`` overrides ``tracking_uri``."""

    experiment: str
    tracking_uri: str
    artifact_location: Path


class Resources(Section):
    """Kubernetes requests and limits of one task."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


class NodeSelector(Section):
    """A node label the GPU tasks require."""

    key: str
    value: str


class Toleration(Section):
    """A taint the GPU tasks tolerate."""

    key: str
    operator: Literal["Equal", "Exists"]
    value: str | None
    effect: Literal["NoExecute", "NoSchedule", "PreferNoSchedule"]


class GpuConfig(Section):
    """The accelerator of the train and extract_features tasks."""

    resource: str
    count: int = Field(ge=0)
    node_selector: NodeSelector
    toleration: Toleration


class KfpConfig(Section):
    """Kubeflow Pipelines compile-time settings."""

    pipeline_name: str
    base_image: str
    gpu: GpuConfig
    resources: dict[str, Resources]
    shm_size: str
    secrets: dict[str, dict[str, str]]
    checkpoint_pvc: str | None
    # every task runs as the image's user; the checkpoint PVC is made writable for its group
    # (infra/k8s: the tlops-checkpoints-fsgroup Job)
    task_uid: int = Field(ge=1)
    task_gid: int = Field(ge=1)
    train_retries: int = Field(ge=0)
    retry_backoff: str

    @field_validator("resources")
    @classmethod
    def _has_default(cls, value: dict[str, Resources]) -> dict[str, Resources]:
        # every task without an entry of its own gets `default`: there is no other fallback
        if "default" not in value:
            raise ValueError("needs a 'default' entry (the resources of every other task)")
        return value

    def resources_for(self, step: str) -> Resources:
        """The resources of ``step`` (``default`` when it has none of its own)."""
        return self.resources.get(step) or self.resources["default"]
