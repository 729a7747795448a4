"""The root model: every section of ``params.yaml``."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from tlops import plugins
from tlops.config.cluster import KfpConfig, RuntimeConfig, TrackingConfig
from tlops.config.data import DataConfig, DemoConfig, ImageConfig, IngestConfig, ValidateConfig
from tlops.config.model import EvaluateConfig, ExtractConfig, ModelConfig
from tlops.config.release import DetectChangeConfig, RegisterConfig
from tlops.config.sections import Section
from tlops.config.train import TrainConfig


class Params(Section):
    """Every section of ``params.yaml``."""

    # modules to import before the params are validated: strategies of your own register there
    plugins: tuple[str, ...]

    data: DataConfig
    demo: DemoConfig
    image: ImageConfig
    ingest_data: IngestConfig
    validate_data: ValidateConfig
    model: ModelConfig
    extract_features: ExtractConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    detect_change: DetectChangeConfig
    register_model: RegisterConfig
    tracking: TrackingConfig
    runtime: RuntimeConfig
    kfp: KfpConfig

    @model_validator(mode="before")
    @classmethod
    def _load_plugins(cls, raw: Any) -> Any:
        # the strategies' sections of `train` are validated by the models their modules register
        if isinstance(raw, dict):
            plugins.load_plugins(raw.get("plugins") or ())
        return raw

    def to_flat_dict(self) -> dict[str, Any]:
        """Return the resolved parameters as ``{"section.key": value}`` for logging."""
        flat: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, inner in value.items():
                    walk(f"{prefix}.{key}" if prefix else str(key), inner)
            else:
                flat[prefix] = value

        walk("", self.model_dump(mode="json"))
        return flat
