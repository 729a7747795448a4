"""The root model: every section of ``params.yaml``."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, model_validator

from tlops import plugins
from tlops.config.cluster import KfpConfig, RuntimeConfig, TrackingConfig
from tlops.config.data import DataConfig, DemoConfig, ImageConfig, IngestConfig, ValidateConfig
from tlops.config.model import EvaluateConfig, ExtractConfig, ModelConfig
from tlops.config.release import DetectChangeConfig, RegisterConfig
from tlops.config.sections import Section, declared_section, suggest, validated_section
from tlops.config.serve import ServeConfig
from tlops.config.train import TrainConfig


class Params(Section):
    """Every section of ``params.yaml``.

    Beside the sections below, a step may declare a section of its own in its module (read by
    that step alone): it is validated by the model the step registered (:mod:`tlops.plugins`).
    """

    model_config = ConfigDict(frozen=True, extra="allow")

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
    serve: ServeConfig
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

    @model_validator(mode="after")
    def _step_sections(self) -> Params:
        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        declared = plugins.step_sections()
        for name, raw in list(extra.items()):
            if name not in declared:
                keys = [*type(self).model_fields, *declared]
                raise ValueError(f"{name}: not a section of params.yaml{suggest(name, keys)}")
            extra[name] = validated_section(name, declared[name], raw)
        for name, model in declared.items():
            if name not in extra:
                extra[name] = validated_section(name, model, None)
        return self

    def section(self, name: str) -> Any:
        """The validated section ``name`` a step declared in its own module.

        Raises:
            KeyError: The params have no such section.
        """
        return declared_section(self, name, name)

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
