"""The params of what follows training: retrain or not, promote or not, and where to register."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from tlops.config.sections import Section


class GatePolicy(Section):
    """When a candidate replaces the champion (see :func:`tlops.evaluate.gate.should_promote`)."""

    primary_metric: str
    min_improvement: float = Field(ge=0.0)
    floor: float = Field(ge=0.0, le=1.0)
    max_class_regression: float = Field(ge=0.0, le=1.0)


class TrafficPolicy(Section):
    """``detect_change.traffic``: when the champion's served traffic calls for a change."""

    check: bool  # read serve.record.uri since the last check
    min_images: int = Field(ge=2)  # fewer answered images since the last check: not tested
    max_confidence_drop: float = Field(ge=0.0, le=1.0)  # held-out mean minus served mean


class DetectChangeConfig(Section):
    """When the ``detect_change`` step asks for a retrain (see :mod:`tlops.evaluate.change`)."""

    min_new_images: int = Field(ge=1)
    alpha: float = Field(gt=0.0, lt=1.0)
    max_label_shift: float = Field(gt=0.0, le=1.0)
    min_drift_images: int = Field(ge=2)
    permutations: int = Field(ge=100)
    max_samples: int = Field(ge=50)
    batch_size: int = Field(ge=1)
    force: bool
    warm_start: bool
    seed: int
    # new content that is all unlabeled (data.target_unlabeled): adapt | ask | skip
    unlabeled: Literal["adapt", "ask", "skip"]
    adapt_strategy: str  # the label-free strategy an adapt run trains (target_labels 0)
    traffic: TrafficPolicy  # the served traffic (drift: alpha; class mix: max_label_shift)


class RegisterConfig(Section):
    """Parameters of the ``register_model`` step."""

    model_name: str
    gate: GatePolicy
    lock_timeout_s: float = Field(gt=0.0)  # wait this long for the promotion lock
    lock_lease_s: float = Field(gt=0.0)  # a lock older than this is stale
    # a release registers into model_name and moves challenger/champion; an experiment
    # registers into experiments_model and moves nothing. auto: the pipeline (tlops run, KFP)
    # releases, DVC (dvc repro, dvc exp run) and tlops step run experiments
    release: Literal["auto", "true", "false"]
    experiments_model: str | None  # None: <model_name>-experiments

    @field_validator("release", mode="before")
    @classmethod
    def _release_words(cls, value: Any) -> Any:
        return str(value).lower() if isinstance(value, bool) else value

    def experiments_name(self) -> str:
        """Where experiments register: ``experiments_model`` or ``<model_name>-experiments``."""
        return self.experiments_model or f"{self.model_name}-experiments"
