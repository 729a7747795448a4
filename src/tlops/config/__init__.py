"""Typed, frozen models of the sections of ``params.yaml``.

``params.yaml`` is the single source of truth for every default, and their only copy: the
models declare types and rules, never a default, so every key must be in the file (a missing one
is an error naming it) and no value here can drift from the file's. It is read once per process
by :func:`load_params`, validated here, and handed to the steps as frozen objects so a step can
never change the configuration another step sees.

The models live by job (:mod:`~tlops.config.data`, :mod:`~tlops.config.model`,
:mod:`~tlops.config.train`, :mod:`~tlops.config.release`, :mod:`~tlops.config.cluster`, the root
:mod:`~tlops.config.params`), reading in :mod:`~tlops.config.load`; import them from here.
"""

from tlops.config.cluster import (
    GpuConfig,
    KfpConfig,
    NodeSelector,
    Resources,
    RuntimeConfig,
    Toleration,
    TrackingConfig,
)
from tlops.config.data import (
    OBJECT_STORE_SCHEMES,
    DataConfig,
    DataLocation,
    DemoConfig,
    DvcData,
    ImageConfig,
    IngestConfig,
    ObjectPrefix,
    SplitFractions,
    ValidateConfig,
)
from tlops.config.load import apply_overrides, load_params, params_from_json, parse_overrides
from tlops.config.model import AlignConfig, EvaluateConfig, ExtractConfig, ModelConfig
from tlops.config.params import Params
from tlops.config.release import DetectChangeConfig, GatePolicy, RegisterConfig
from tlops.config.sections import (
    DOMAINS,
    MISSING,
    NUMERICS_FORMS,
    SPLITS,
    UNLABELED_SPLIT,
    ConfigError,
    NumericsSetting,
    StrategyParams,
)
from tlops.config.serve import RecordConfig, ServeConfig
from tlops.config.train import (
    AugmentConfig,
    DistributedConfig,
    EarlyStopping,
    TargetLabels,
    TrainConfig,
)

__all__ = [
    "DOMAINS",
    "MISSING",
    "NUMERICS_FORMS",
    "OBJECT_STORE_SCHEMES",
    "SPLITS",
    "UNLABELED_SPLIT",
    "AlignConfig",
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "DataLocation",
    "DemoConfig",
    "DetectChangeConfig",
    "DistributedConfig",
    "DvcData",
    "EarlyStopping",
    "EvaluateConfig",
    "ExtractConfig",
    "GatePolicy",
    "GpuConfig",
    "ImageConfig",
    "IngestConfig",
    "KfpConfig",
    "ModelConfig",
    "NodeSelector",
    "NumericsSetting",
    "ObjectPrefix",
    "Params",
    "RecordConfig",
    "RegisterConfig",
    "Resources",
    "RuntimeConfig",
    "ServeConfig",
    "SplitFractions",
    "StrategyParams",
    "TargetLabels",
    "Toleration",
    "TrackingConfig",
    "TrainConfig",
    "ValidateConfig",
    "apply_overrides",
    "load_params",
    "params_from_json",
    "parse_overrides",
]
