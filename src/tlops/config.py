"""Typed, frozen models of the sections of ``params.yaml``.

``params.yaml`` is the single source of truth for every default. It is read once per process
by :func:`load_params`, validated here, and handed to the steps as frozen objects so a step can
never change the configuration another step sees.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SPLITS: tuple[str, ...] = ("train", "val", "test")


class ConfigError(ValueError):
    """A params file that is missing, unreadable or breaks a rule."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Section):
    """The data directories of the two domains."""

    source: Path = Path("data/source")
    target: Path = Path("data/target")


class DemoConfig(_Section):
    """How the embedded demo data is written."""

    drops: int = Field(default=3, ge=1, le=3)
    seed: int = 0


class ImageConfig(_Section):
    """How every step opens and converts an image."""

    extensions: tuple[str, ...] = (
        ".png",
        ".jpg",
        ".jpeg",
        ".bmp",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
    )
    max_pixels: int = Field(default=50_000_000, gt=0)
    mode: str = "RGB"
    background: tuple[int, int, int] = (255, 255, 255)

    @field_validator("extensions")
    @classmethod
    def _lower_dotted(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one extension is required")
        bad = [ext for ext in value if not ext.startswith(".")]
        if bad:
            raise ValueError(f"extensions must start with '.': {bad}")
        return tuple(ext.lower() for ext in value)

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in ("RGB", "L"):
            raise ValueError(f"mode must be RGB or L, got {value!r}")
        return value

    @field_validator("background")
    @classmethod
    def _byte_range(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 0 <= channel <= 255 for channel in value):
            raise ValueError(f"background channels must be in 0..255, got {value}")
        return value


class SplitFractions(_Section):
    """Fractions of images that hash into each split."""

    train: float = Field(default=0.7, ge=0.0, le=1.0)
    val: float = Field(default=0.15, ge=0.0, le=1.0)
    test: float = Field(default=0.15, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        return self


class IngestConfig(_Section):
    """Parameters of the ``ingest_data`` step."""

    split: SplitFractions = SplitFractions()
    salt: str = "tlops-split-v1"


class ValidateConfig(_Section):
    """Parameters of the ``validate_data`` step (the Great Expectations suite)."""

    classes: tuple[str, ...] | None = None
    min_images_per_class: int = Field(default=20, ge=0)
    min_images_per_split_class: int = Field(default=2, ge=0)
    min_width: int = Field(default=8, ge=1)
    max_width: int = Field(default=4096, ge=1)
    min_height: int = Field(default=8, ge=1)
    max_height: int = Field(default=4096, ge=1)
    modes: tuple[str, ...] = ("1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I;16", "I")
    max_imbalance_ratio: float = Field(default=5.0, ge=1.0)
    fail_on_duplicates: bool = False

    @model_validator(mode="after")
    def _ordered_bounds(self) -> ValidateConfig:
        if self.min_width > self.max_width:
            raise ValueError("min_width is larger than max_width")
        if self.min_height > self.max_height:
            raise ValueError("min_height is larger than max_height")
        return self


class Params(_Section):
    """Every section of ``params.yaml``."""

    data: DataConfig = DataConfig()
    demo: DemoConfig = DemoConfig()
    image: ImageConfig = ImageConfig()
    ingest_data: IngestConfig = IngestConfig()
    validate_data: ValidateConfig = ValidateConfig()

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


def _format_errors(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid parameters"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        lines.append(f"  - {where}: {item['msg']}")
    return "\n".join(lines)


def load_params(path: Path, overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate a params file.

    Args:
        path: The YAML file (normally ``params.yaml`` at the repository root).
        overrides: Dotted keys to replace after reading, e.g. ``{"ingest_data.salt": "x"}``.

    Returns:
        The frozen, validated parameters.

    Raises:
        ConfigError: The file is missing, is not YAML, or a value breaks a rule; the message
            names the file and every offending key.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from exc


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node = child
    node[leaf] = value
