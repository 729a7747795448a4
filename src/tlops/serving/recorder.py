"""The served traffic, recorded: what the predictor was asked and what it answered.

Per image of each request the predictor hands a record to :class:`TrafficRecorder`: the
image's content hash, its embedding in the served model's feature space (not the image, unless
``serve.record.keep_images``), the predicted class, its probability, every class's probability,
the request's latency and whether it was answered. ``record`` only appends to a bounded buffer
under a lock, so a response never waits for the object store; a background thread writes the
buffer as one ``.npz`` file per batch (at ``batch_size`` records, or after ``flush_s``):

``<uri>/<YYYY-MM-DD>/<unix ms>-<pid>-<seq>.npz`` (no pickle: plain numeric and text arrays)

When the buffer is full, or a write fails (the store is down), the records are dropped and
counted; the first drop and then one line a minute are logged, with the total so far. Nothing
is retried: memory stays bounded whatever the store does. :mod:`tlops.serving.traffic` reads
the files back.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlops.config.serve import RecordConfig

log = logging.getLogger("tlops.serving")
IMAGES = "images"  # <uri>/images/<sha256>: the kept images, content-addressed
SUFFIX = ".npz"
WARN_EVERY_S = 60.0


@dataclass(frozen=True)
class Served:
    """One image of one request: what the predictor saw and answered."""

    time: float  # unix seconds, when the request arrived
    request_id: str
    version: str  # the model version that answered
    sha256: str
    predicted: str  # the class ('' when the request failed)
    confidence: float  # the predicted class's probability (NaN when it failed)
    probabilities: np.ndarray  # (classes,), NaN when it failed
    embedding: np.ndarray  # (D,) pooled features, NaN when it failed
    latency_ms: float
    status: str = "ok"  # ok | error (the request was refused or failed)
    image: bytes | None = None  # kept only with keep_images


def batch_arrays(records: Sequence[Served]) -> dict[str, np.ndarray]:
    """The arrays of one file (every record of a batch has the same model, so equal widths)."""
    width = max((r.embedding.size for r in records), default=0)
    classes = max((r.probabilities.size for r in records), default=0)

    def padded(rows: list[np.ndarray], size: int) -> np.ndarray:
        out = np.full((len(rows), size), np.nan, dtype=np.float32)
        for i, row in enumerate(rows):
            out[i, : row.size] = row
        return out

    return {
        "time": np.array([r.time for r in records], dtype=np.float64),
        "request_id": np.array([r.request_id for r in records], dtype=str),
        "version": np.array([r.version for r in records], dtype=str),
        "sha256": np.array([r.sha256 for r in records], dtype=str),
        "predicted": np.array([r.predicted for r in records], dtype=str),
        "confidence": np.array([r.confidence for r in records], dtype=np.float32),
        "latency_ms": np.array([r.latency_ms for r in records], dtype=np.float32),
        "status": np.array([r.status for r in records], dtype=str),
        "probabilities": padded([r.probabilities for r in records], classes),
        "embedding": padded([r.embedding for r in records], width),
    }


class ObjectSink:
    """Writes record files (and kept images) under a folder or an object store prefix."""

    def __init__(self, uri: str) -> None:
        import fsspec

        self.uri = uri.rstrip("/")
        # a fresh client: fsspec's cached one would keep the endpoint of an earlier environment
        self.fs, self.root = fsspec.core.url_to_fs(self.uri, skip_instance_cache=True)
        self._seq = 0

    def write(self, records: Sequence[Served]) -> str:
        """One file of ``records``; returns its path. Raises whatever the store raises.

        Kept images go first: a record file never names an image that is not there.
        """
        kept = [r for r in records if r.image is not None]
        if kept:
            self.fs.makedirs(f"{self.root}/{IMAGES}", exist_ok=True)
        for record in kept:
            assert record.image is not None
            self.fs.pipe_file(f"{self.root}/{IMAGES}/{record.sha256}", record.image)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **batch_arrays(records))  # type: ignore[arg-type]
        self._seq += 1
        day = time.strftime("%Y-%m-%d", time.gmtime(records[0].time))
        stamp = int(time.time() * 1000)
        path = f"{self.root}/{day}/{stamp:013d}-{os.getpid()}-{self._seq:06d}{SUFFIX}"
        self.fs.makedirs(f"{self.root}/{day}", exist_ok=True)
        self.fs.pipe_file(path, buffer.getvalue())
        return str(path)


@dataclass
class RecorderStats:
    """What the recorder did so far."""

    recorded: int = 0
    dropped: int = 0
    files: int = 0
    last_error: str | None = None


@dataclass
class TrafficRecorder:
    """Buffers records in memory (bounded) and writes them in batches from a thread of its own.

    Args:
        cfg: ``serve.record``.
        sink: Where batches go (an :class:`ObjectSink`, or anything with ``write``).
    """

    cfg: RecordConfig
    sink: Any
    stats: RecorderStats = field(default_factory=RecorderStats)
    _pending: list[Served] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _warned_at: float = -WARN_EVERY_S

    def start(self) -> TrafficRecorder:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._loop, name="tlops-traffic", daemon=True)
        self._thread.start()
        return self

    def record(self, records: Sequence[Served]) -> None:
        """Hand records over; never blocks on I/O. Past ``max_pending`` they are dropped."""
        with self._lock:
            room = self.cfg.max_pending - len(self._pending)
            taken = list(records[: max(room, 0)])
            self._pending.extend(taken)
            full = len(self._pending) >= self.cfg.batch_size
        if len(taken) < len(records):
            self._drop(len(records) - len(taken), f"buffer full ({self.cfg.max_pending} records)")
        if full:
            self._wake.set()

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is pending and stop the thread (waits at most ``timeout_s``)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.cfg.flush_s)
            self._wake.clear()
            stopping = self._stop.is_set()
            while True:
                with self._lock:
                    batch = self._pending[: self.cfg.batch_size]
                    del self._pending[: len(batch)]
                if not batch:
                    break
                self._write(batch)
                if not stopping and len(batch) < self.cfg.batch_size:
                    break
            if stopping:
                return

    def _write(self, batch: list[Served]) -> None:
        try:
            self.sink.write(batch)
        except Exception as exc:  # the store is down or refuses: answers go on, records drop
            self.stats.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            self._drop(len(batch), f"writing to {self.cfg.uri} failed: {self.stats.last_error}")
            return
        with self._lock:
            self.stats.recorded += len(batch)
            self.stats.files += 1

    def _drop(self, count: int, why: str) -> None:
        with self._lock:
            self.stats.dropped += count
            total = self.stats.dropped
            now = time.monotonic()
            warn = now - self._warned_at >= WARN_EVERY_S
            if warn:
                self._warned_at = now
        if warn:
            log.warning("traffic: dropped %d records (%d so far): %s", count, total, why)
