"""The params of the data steps: where the data is, how images are read, split and checked."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_serializer, model_validator

from tlops.config.sections import DOMAINS, Section


class DvcData(Section):
    """Data in a DVC repository at a git revision, pulled from that repository's DVC remote.

    What a pod uses: it has no checkout, so it reads the directory the way ``dvc get`` would
    (``repo`` may be any git URL or a local repository).
    """

    repo: str = Field(min_length=1)  # git URL (https, ssh) or a path to a repository
    path: str = Field(min_length=1)  # the directory inside it, e.g. data/target
    # The only defaults of a params model: a DVC location is a value the user writes in place
    # of a directory, and its optional parts mean "the repository's own"; params.yaml cannot
    # hold them (its data locations are directories).
    rev: str | None = None  # branch, tag or commit; None: the default branch
    remote: str | None = None  # the DVC remote to pull from; None: the repository's default

    def __str__(self) -> str:
        return f"{self.repo}@{self.rev or 'HEAD'}:{self.path}"


# object stores a data location may name (DVC's S3 support, s3fs, is installed)
OBJECT_STORE_SCHEMES = ("s3",)


class ObjectPrefix(Section):
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


class DataConfig(Section):
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
    # labeled drops (tlops labels pull): <split>/<class>/<image>, ingested with the target,
    # each image in its folder's split (the audit is test); an unlabeled copy reads as labeled
    target_labeled: Path | None

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


class DemoConfig(Section):
    """How the embedded demo data is written."""

    drops: int = Field(ge=1, le=3)
    seed: int


class ImageConfig(Section):
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


class SplitFractions(Section):
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


class IngestConfig(Section):
    """Parameters of the ``ingest_data`` step."""

    split: SplitFractions
    salt: str


class ValidateConfig(Section):
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
