"""Typed, frozen models of the sections of ``params.yaml``.

``params.yaml`` is the single source of truth for every default, and their only copy: the
models declare types and rules, never a default, so every key must be in the file (a missing one
is an error naming it) and no value here can drift from the file's. It is read once per process
by :func:`load_params`, validated here, and handed to the steps as frozen objects so a step can
never change the configuration another step sees.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from tlops import plugins

SPLITS: tuple[str, ...] = ("train", "val", "test")
# the manifest split of the images of data.target_unlabeled: training data without a label
UNLABELED_SPLIT = "unlabeled"
DOMAINS: tuple[str, ...] = ("source", "target")  # the data domains (params.yaml data.<domain>)


class ConfigError(ValueError):
    """A params file that is missing, unreadable or breaks a rule."""


NUMERICS_FORMS = (
    "auto | fp32 | bf16 | fp16 | <fp32|bf16|fp16>+<channels_last|contiguous>+<eager|compile>"
)
_NUMERICS = re.compile(
    r"auto|fp32|bf16|fp16|(fp32|bf16|fp16)\+(channels_last|contiguous)\+(eager|compile)"
)


def _numerics(value: str) -> str:
    if not _NUMERICS.fullmatch(value):
        raise ValueError(f"{value!r} is not a numerics setting: expected {NUMERICS_FORMS}")
    return value


# How a model step computes (see tlops.models.numerics): auto measures, the rest pin.
NumericsSetting = Annotated[str, AfterValidator(_numerics)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StrategyParams(_Section):
    """The base of a strategy's section of ``train`` (declared in the strategy's file).

    Its fields have no defaults: params.yaml holds every strategy's section, the one copy.
    """


class DvcData(_Section):
    """Data in a DVC repository at a git revision, pulled from that repository's DVC remote.

    What a pod uses: it has no checkout, so it reads the directory the way ``dvc get`` would
    (``repo`` may be any git URL or a local repository).
    """

    repo: str = Field(min_length=1)  # git URL (https, ssh) or a path to a repository
    path: str = Field(min_length=1)  # the directory inside it, e.g. data/target
    rev: str | None = None  # branch, tag or commit; None: the default branch
    remote: str | None = None  # the DVC remote to pull from; None: the repository's default

    def __str__(self) -> str:
        return f"{self.repo}@{self.rev or 'HEAD'}:{self.path}"


# object stores a data location may name (DVC's S3 support, s3fs, is installed)
OBJECT_STORE_SCHEMES = ("s3",)


class ObjectPrefix(_Section):
    """Every object under a prefix of an object store: ``s3://bucket/some/prefix``.

    Written in params.yaml as the URL itself; credentials and endpoint come from the usual
    environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_ENDPOINT_URL``).
    """

    url: str

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in OBJECT_STORE_SCHEMES or not rest.strip("/"):
            raise ValueError(
                f"{value!r}: expected an object-store prefix "
                f"{' or '.join(s + '://bucket/prefix' for s in OBJECT_STORE_SCHEMES)}"
            )
        return value.rstrip("/")

    @model_serializer
    def _as_url(self) -> str:
        return self.url

    def __str__(self) -> str:
        return self.url


def _data_location(value: Any) -> Any:
    """A local directory, an object-store URL or a mapping naming a DVC repository."""
    if isinstance(value, str) and "://" in value:
        return ObjectPrefix(url=value)
    if isinstance(value, dict):
        return DvcData.model_validate(value)
    return value


# Where the images of a domain are: one value, so one pipeline parameter says it
DataLocation = Annotated[Path | ObjectPrefix | DvcData, BeforeValidator(_data_location)]


class DataConfig(_Section):
    """Where the images of the two domains are (and unlabeled target images, if any).

    A domain's data is a local directory (``data/target``), an object-store prefix
    (``s3://bucket/digits/target``) or a directory of a DVC repository at a revision
    (``{repo: URL, rev: v3, path: data/target}``), which is what a pod without a checkout uses.
    """

    source: DataLocation
    target: DataLocation
    # a folder of target-domain images without class folders: ingested with the target, used
    # as unlabeled training data by the strategies that learn from unlabeled images
    target_unlabeled: Path | None

    def location(self, domain: str) -> Path | ObjectPrefix | DvcData:
        """Where the data of ``domain`` (``target`` or ``source``) is.

        Raises:
            ValueError: No such domain.
        """
        if domain not in DOMAINS:
            raise ValueError(f"data domain {domain!r}: expected target or source")
        location: Path | ObjectPrefix | DvcData = getattr(self, domain)
        return location

    def directory(self, domain: str) -> Path:
        """The local directory of ``domain`` (what the demo writes and DVC tracks).

        Raises:
            ValueError: No such domain, or its data is not a local directory.
        """
        location = self.location(domain)
        if not isinstance(location, Path):
            raise ValueError(
                f"data.{domain} = {location}: not a local directory (this command needs one)"
            )
        return location


class DemoConfig(_Section):
    """How the embedded demo data is written."""

    drops: int = Field(ge=1, le=3)
    seed: int


class ImageConfig(_Section):
    """How every step opens and converts an image."""

    extensions: tuple[str, ...]
    max_pixels: int = Field(gt=0)
    mode: str
    background: tuple[int, int, int]

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

    train: float = Field(ge=0.0, le=1.0)
    val: float = Field(ge=0.0, le=1.0)
    test: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        return self


class IngestConfig(_Section):
    """Parameters of the ``ingest_data`` step."""

    split: SplitFractions
    salt: str


class ValidateConfig(_Section):
    """Parameters of the ``validate_data`` step (the Great Expectations suite)."""

    classes: tuple[str, ...] | None
    min_images_per_class: int = Field(ge=0)
    min_images_per_split_class: int = Field(ge=0)
    min_width: int = Field(ge=1)
    max_width: int = Field(ge=1)
    min_height: int = Field(ge=1)
    max_height: int = Field(ge=1)
    modes: tuple[str, ...]
    max_imbalance_ratio: float = Field(ge=1.0)
    fail_on_duplicates: bool
    # an animated GIF/WebP or multi-page TIFF: only its first frame is used (warn) or it fails
    multi_frame: Literal["warn", "fail"]
    # False: once a champion exists, the data must have its classes (a changed class set fails);
    # True: validate against `classes` and let a retrain change the class map (new head)
    allow_class_change: bool

    @model_validator(mode="after")
    def _ordered_bounds(self) -> ValidateConfig:
        if self.min_width > self.max_width:
            raise ValueError("min_width is larger than max_width")
        if self.min_height > self.max_height:
            raise ValueError("min_height is larger than max_height")
        return self


class AlignConfig(_Section):
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


class ModelConfig(_Section):
    """The backbone every model-related step uses."""

    backbone: str
    pretrained: bool
    image_size: int = Field(ge=8, le=1024)
    dropout: float = Field(ge=0.0, lt=1.0)
    align: AlignConfig


class ExtractConfig(_Section):
    """Parameters of the ``extract_features`` step."""

    batch_size: int = Field(ge=1)
    cache_dir: Path
    numerics: NumericsSetting


class AugmentConfig(_Section):
    """Per-sample random affine augmentation (applied to training batches only)."""

    rotation_deg: float = Field(ge=0.0, le=180.0)
    scale: tuple[float, float]
    translate: float = Field(ge=0.0, le=0.5)
    hflip: bool


class EarlyStopping(_Section):
    """Stop when the validation metric has not improved for ``patience`` epochs."""

    metric: Literal["val_accuracy", "val_loss", "val_macro_f1"]
    patience: int = Field(ge=1)


TargetLabels = Literal["all"] | Annotated[int, Field(ge=0)]


class DistributedConfig(_Section):
    """Data-parallel ``train`` (DDP under torchrun; a Kubeflow Trainer TrainJob on a cluster)."""

    # > 1: the pipeline's train task creates a TrainJob of this many nodes (a cluster only)
    nodes: int = Field(ge=1)
    # processes per node: torchrun --nproc-per-node (one per GPU on a cluster)
    procs_per_node: int = Field(ge=1)
    backend: Literal["auto", "gloo", "nccl"]  # auto: nccl on CUDA, gloo on CPU
    # batch-norm statistics: batch (each process's own batch: its shard under DDP) | sync
    # (SyncBatchNorm, the global batch; NCCL only) | frozen (the pretrained running statistics,
    # so the result does not depend on the number of processes) | auto (batch for one process,
    # sync on NCCL, frozen on gloo)
    batchnorm: Literal["auto", "batch", "sync", "frozen"]
    runtime: str  # the ClusterTrainingRuntime (infra/k8s)
    namespace: str | None  # where the TrainJob is created; None: the task's own namespace
    timeout_s: float = Field(gt=0.0)  # the TrainJob fails the task after this
    poll_s: float = Field(gt=0.0)  # how often its status is read

    @property
    def world_size(self) -> int:
        """Processes in all (nodes x processes per node)."""
        return self.nodes * self.procs_per_node


class TrainConfig(_Section):
    """Parameters of the ``train`` step.

    Beside the keys below, ``train`` holds the sections the strategies declare
    (``train.<section>``, see :mod:`tlops.plugins`): each is validated by the model its strategy
    registered, and the chosen strategy's sections must be there.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    # a registered strategy (tlops.plugins): a file of tlops/train/strategies or of a plug-in
    strategy: str
    # the label budget: all | k labeled target images per class (drawn reproducibly from the
    # train split; the others are unlabeled) | 0 (unsupervised domain adaptation)
    target_labels: TargetLabels
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0.0)
    backbone_lr_mult: float = Field(ge=0.0)
    weight_decay: float = Field(ge=0.0)
    warmup_epochs: float = Field(ge=0.0)
    label_smoothing: float = Field(ge=0.0, lt=1.0)
    trainable_stages: int | None  # top backbone stages trained by finetune; null = all
    unfreeze_milestones: dict[int, int | None]  # epoch -> trainable stages from then on
    early_stopping: EarlyStopping
    class_weights: Literal["none", "balanced"]
    augment: AugmentConfig
    eval_batch_size: int = Field(ge=1)  # validation batches each epoch
    numerics: NumericsSetting
    seed: int
    distributed: DistributedConfig

    @model_validator(mode="after")
    def _strategy_sections(self) -> TrainConfig:
        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        for name, raw in list(extra.items()):
            if not plugins.is_section(name):
                keys = [*type(self).model_fields, *plugins.sections()]
                raise ValueError(f"train.{name}: not a key of params.yaml{_suggest(name, keys)}")
            model = plugins.section_model(name)
            extra[name] = _validated_section(name, model, raw)
        try:
            decl = plugins.declaration(self.strategy)
        except ValueError as exc:
            raise ValueError(str(exc).replace("train.strategy ", "train.strategy: ", 1)) from None
        for name, model in decl.sections.items():
            if name not in extra:
                extra[name] = _validated_section(name, model, None, decl.name)
        return self

    def section(self, name: str) -> Any:
        """The validated section ``train.<name>`` of a strategy.

        Raises:
            KeyError: The params have no such section.
        """
        extra = self.__pydantic_extra__ or {}
        if name not in extra:
            raise KeyError(f"train.{name}: not in these params")
        return extra[name]


class RuntimeConfig(_Section):
    """Where the model steps compute."""

    device: str  # auto | cpu | cuda | cuda:N; TLOPS_DEVICE overrides


class EvaluateConfig(_Section):
    """Parameters of the ``evaluate`` step."""

    batch_size: int = Field(ge=1)
    calibration_bins: int = Field(ge=2)
    numerics: NumericsSetting


class GatePolicy(_Section):
    """When a candidate replaces the champion (see :func:`tlops.evaluate.gate.should_promote`)."""

    primary_metric: str
    min_improvement: float = Field(ge=0.0)
    floor: float = Field(ge=0.0, le=1.0)
    max_class_regression: float = Field(ge=0.0, le=1.0)


class DetectChangeConfig(_Section):
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


class RegisterConfig(_Section):
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


class TrackingConfig(_Section):
    """Where runs are tracked; ``MLFLOW_TRACKING_URI`` overrides ``tracking_uri``."""

    experiment: str
    tracking_uri: str
    artifact_location: Path


class Resources(_Section):
    """Kubernetes requests and limits of one task."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


class NodeSelector(_Section):
    """A node label the GPU tasks require."""

    key: str
    value: str


class Toleration(_Section):
    """A taint the GPU tasks tolerate."""

    key: str
    operator: Literal["Equal", "Exists"]
    value: str | None
    effect: Literal["NoExecute", "NoSchedule", "PreferNoSchedule"]


class GpuConfig(_Section):
    """The accelerator of the train and extract_features tasks."""

    resource: str
    count: int = Field(ge=0)
    node_selector: NodeSelector
    toleration: Toleration


class KfpConfig(_Section):
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


class Params(_Section):
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


def _validated_section(
    name: str, model: type[BaseModel], raw: Any, strategy: str | None = None
) -> BaseModel:
    """``raw`` validated as ``train.<name>``; None: the section is missing.

    Raises:
        ValueError: One line per broken rule, each naming its key.
    """
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        if raw is None:
            raise ValueError(
                f"train.{name}: missing (train.strategy {strategy} reads it; params.yaml "
                "holds every strategy's section)"
            ) from None
        lines = [
            f"train.{name}.{'.'.join(str(p) for p in item['loc'])}: {_message(item)}"
            for item in exc.errors()
        ]
        raise ValueError("; ".join(lines)) from None


# what a key the models require but the params lack gets: the models have no defaults
MISSING = "missing (params.yaml holds every default: give this key)"


def _message(item: Any) -> str:
    """What is wrong, as a line of the error: pydantic's message, or :data:`MISSING`."""
    return MISSING if item["type"] == "missing" else str(item["msg"])


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys params.yaml allows beside ``loc`` (a validation error's location)."""
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = None if field is None else field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _suggest(name: str, keys: list[str]) -> str:
    """`` (did you mean 'lr'?)`` for a typo of one of ``keys``, else nothing."""
    import difflib

    close = difflib.get_close_matches(name, keys, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _error_lines(error: ValidationError) -> list[str]:
    """One line per broken rule: the dotted key, and what is wrong with it."""
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        where = ".".join(str(part) for part in loc)
        if item["type"] == "extra_forbidden":
            hint = _suggest(str(loc[-1]), _keys_at(loc))
            lines.append(f"  - {where}: not a key of params.yaml{hint}")
        else:
            lines += [f"  - {key}: {why}" for key, why in _broken_rules_of(item)]
    return lines


def _format_errors(path: Path, error: ValidationError) -> str:
    return "\n".join([f"{path}: invalid parameters", *_error_lines(error)])


def parse_overrides(items: list[str] | None, flag: str = "--set") -> dict[str, Any]:
    """The one ``key=value`` parser: dotted params keys to YAML-typed values.

    Args:
        items: Strings like ``train.lr=0.001`` (the value is read as YAML: numbers, booleans,
            lists and ``null`` keep their type).
        flag: The option the items came from, for the error message.

    Returns:
        ``{"train.lr": 0.001, ...}`` in the order given.

    Raises:
        ConfigError: An item is not ``key=value`` or its value is not YAML.
    """
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected key=value, e.g. train.lr=0.001")
        try:
            result[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{flag} {item!r}: the value is not valid YAML: {exc}") from exc
    return result


def load_params(
    path: Path, overrides: dict[str, Any] | None = None, source: str = "override"
) -> Params:
    """Read and validate a params file.

    Args:
        path: The YAML file (normally ``params.yaml`` at the repository root).
        overrides: Dotted keys to replace after reading, e.g. ``{"ingest_data.salt": "x"}``;
            every key must exist in :class:`Params` (an unknown key is named in the error).
        source: Where the overrides came from, for the errors (``-S``, a pipeline parameter).

    Returns:
        The frozen, validated parameters.

    Raises:
        ConfigError: The file is missing, is not YAML, a value breaks a rule or an override
            names an unknown key; the message names the file (or the override) and every
            offending key.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from exc
    return apply_overrides(params, overrides or {}, source)


def apply_overrides(params: Params, overrides: dict[str, Any], source: str = "override") -> Params:
    """A copy of ``params`` with dotted keys replaced, validated again.

    Args:
        params: The params to start from.
        overrides: Dotted keys and their new values.
        source: Where the overrides came from (``-S``, ``--param``, a pipeline parameter):
            every error names it with the offending ``key=value``.

    Raises:
        ConfigError: A key is not a key of params.yaml (the message names it, the nearest key
            and the keys that exist there) or a new value breaks a rule (the message names
            the key and the value).
    """
    if not overrides:
        return params
    tree = params.model_dump(mode="json")
    if "plugins" in overrides:  # their strategies' sections may be what the others set
        try:
            plugins.load_plugins(overrides["plugins"] or ())
        except ValueError as exc:
            raise ConfigError(f"{source} plugins={_shown(overrides['plugins'])}: {exc}") from None
    for dotted, value in overrides.items():
        try:
            _set_dotted(tree, dotted, value)
        except ConfigError as exc:
            raise ConfigError(f"{source} {dotted}={_shown(value)}: {exc}") from None
    try:
        return Params.model_validate(tree)
    except ValidationError as exc:
        lines = [
            _override_line(source, overrides, where, message)
            for where, message in _broken_rules(exc)
        ]
        raise ConfigError("\n".join(lines)) from exc


def _broken_rules(error: ValidationError) -> list[tuple[str, str]]:
    """``(dotted key, what is wrong)`` per broken rule, a strategy section's rules one each."""
    return [rule for item in error.errors() for rule in _broken_rules_of(item)]


def _broken_rules_of(item: Any) -> list[tuple[str, str]]:
    where = ".".join(str(part) for part in item["loc"])
    message = _message(item)
    if item["type"] != "value_error" or where != "train":
        return [(where, message)]
    # the rules TrainConfig checked for the strategies' sections, each naming its own key
    rules = []
    for line in message.removeprefix("Value error, ").split("; "):
        key, _, why = line.partition(": ")
        rules.append((key, why) if key.startswith("train.") else (where, line))
    return rules


def _override_line(source: str, overrides: dict[str, Any], where: str, message: str) -> str:
    given = [k for k in overrides if where == k or where.startswith(k + ".")]
    what = f"{given[0]}={_shown(overrides[given[0]])}" if given else where
    return f"{source} {what}: {where}: {message}"


def params_from_json(text: str, source: str = "the pipeline parameter 'params'") -> Params:
    """Params from the JSON a pipeline carries (KFP components receive them so).

    Raises:
        ConfigError: The JSON is not params (naming ``source`` and every offending key).
    """
    try:
        return Params.model_validate_json(text)
    except ValidationError as exc:
        raise ConfigError("\n".join([f"{source}: invalid parameters", *_error_lines(exc)])) from exc


def _shown(value: Any) -> str:
    """An override's value as the user typed it (YAML), for messages."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text.removesuffix("\n...").removesuffix(" ...").strip()


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    seen: list[str] = []
    for part in parents:
        child = node.get(part)
        if child is None and seen == ["train"] and plugins.is_section(part):
            child = node[part] = {}  # a strategy's section that params.yaml does not hold
        seen.append(part)
        if not isinstance(child, dict):
            where = ".".join(seen[:-1]) or "params.yaml"
            known = sorted(node) if isinstance(node, dict) else []
            raise ConfigError(
                f"unknown key {dotted!r}: {part!r} is not a section of {where}"
                f"{_suggest(part, known)} (sections there: {', '.join(known)})"
            )
        node = child
    if leaf not in node and not _is_open_mapping(parents) and not _in_section(parents, leaf):
        where = ".".join(parents) or "params.yaml"
        raise ConfigError(
            f"unknown key {dotted!r}: {where} has no key {leaf!r}{_suggest(leaf, sorted(node))} "
            f"(keys there: {', '.join(sorted(node))})"
        )
    node[leaf] = value


def _in_section(parents: list[str], leaf: str) -> bool:
    """True when ``parents.leaf`` is a strategy's section, or a key of one, under ``train``."""
    if parents == ["train"]:
        return plugins.is_section(leaf)
    if len(parents) == 2 and parents[0] == "train" and plugins.is_section(parents[1]):
        return leaf in plugins.section_model(parents[1]).model_fields
    return False


def _is_open_mapping(parents: list[str]) -> bool:
    """True when ``parents`` names a dict field of :class:`Params` (its keys are free)."""
    model: type[BaseModel] = Params
    for depth, part in enumerate(parents):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        return depth == len(parents) - 1 and get_origin(annotation) is dict
    return False
