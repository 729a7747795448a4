"""The params of the model steps: the backbone, its input alignment, features, evaluation."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from tlops.config.sections import NumericsSetting, Section


class AlignConfig(Section):
    """Label-free input alignment of every image (see :mod:`tlops.data.align`)."""

    content_crop: bool  # crop to the content's box, pad to a square with the background
    threshold: float = Field(gt=0.0, lt=1.0)  # of the largest background difference
    margin: float = Field(ge=0.0, le=1.0)  # of the square's side, on every side
    resolution: int | None = Field(ge=2)  # area-average down to at most this
    autocontrast: bool  # stretch each channel to 0..255

    @classmethod
    def none(cls) -> AlignConfig:
        """No alignment: what a model or checkpoint that records none carries.

        A value, not a default (params.yaml gives ``model.align``): every part is off, and the
        threshold and margin, which nothing reads then, are params.yaml's, so the record of an
        unaligned model stays what it was.
        """
        return cls(
            content_crop=False, threshold=0.1, margin=0.0, resolution=None, autocontrast=False
        )

    @property
    def active(self) -> bool:
        """True when any part of the alignment changes an image."""
        return self.content_crop or self.resolution is not None or self.autocontrast


class ModelConfig(Section):
    """The backbone every model-related step uses."""

    backbone: str
    pretrained: bool
    image_size: int = Field(ge=8, le=1024)
    dropout: float = Field(ge=0.0, lt=1.0)
    align: AlignConfig


class ExtractConfig(Section):
    """Parameters of the ``extract_features`` step."""

    batch_size: int = Field(ge=1)
    cache_dir: Path
    numerics: NumericsSetting


class EvaluateConfig(Section):
    """Parameters of the ``evaluate`` step."""

    batch_size: int = Field(ge=1)
    calibration_bins: int = Field(ge=2)
    numerics: NumericsSetting
