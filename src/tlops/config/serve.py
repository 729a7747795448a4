"""The params of the predictor (``tlops serve``, the InferenceService) and its traffic record."""

from __future__ import annotations

from pydantic import Field

from tlops.config.sections import Section


class RecordConfig(Section):
    """Where and how the predictor records what it is asked (``serve.record``)."""

    uri: str | None  # a folder or an object store prefix (s3://bucket/prefix); None: off
    batch_size: int = Field(ge=1)  # records per file written
    flush_s: float = Field(gt=0.0)  # a partial batch is written after this long
    max_pending: int = Field(ge=1)  # records held in memory at most; past it, dropped and counted
    keep_images: bool  # also write each image (content-addressed), for select_labels


class ServeConfig(Section):
    """``serve``: the predictor's address, its request limits and its traffic record."""

    host: str
    http_port: int = Field(ge=0, le=65535)
    grpc_port: int | None = Field(ge=0, le=65535)  # None: no gRPC server
    max_request_bytes: int = Field(ge=1024)  # a larger request body is refused (413)
    max_images: int = Field(ge=1)  # images per request at most (400 past it)
    record: RecordConfig
