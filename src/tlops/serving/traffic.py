"""The recorded traffic, read back (:mod:`tlops.serving.recorder` writes it).

``detect_change`` reads what was served since its last check; ``deploy`` reads what a canary
answered since it went live. Both ask for a time window; files are found by their day folder
and name (the unix ms they were written at), so a check reads only the days it covers.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tlops.serving.recorder import IMAGES, SUFFIX

if TYPE_CHECKING:
    from tlops.evaluate.rollout import ServedFigures


class TrafficError(RuntimeError):
    """The traffic record cannot be read (the store is down, a file is not a record)."""


@dataclass(frozen=True)
class Traffic:
    """Every recorded image of a window, one row each (arrays of equal length)."""

    time: np.ndarray
    request_id: np.ndarray
    version: np.ndarray
    sha256: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    latency_ms: np.ndarray
    status: np.ndarray
    probabilities: np.ndarray  # (N, classes)
    embedding: np.ndarray  # (N, D)
    files: int  # how many files were read

    def __len__(self) -> int:
        return int(self.time.size)

    def where(self, mask: np.ndarray) -> Traffic:
        """The rows of ``mask``."""
        fields = {name: getattr(self, name)[mask] for name in _ARRAYS}
        return Traffic(**fields, files=self.files)

    @property
    def ok(self) -> Traffic:
        """The answered rows."""
        return self.where(self.status == "ok")


_ARRAYS = (
    "time",
    "request_id",
    "version",
    "sha256",
    "predicted",
    "confidence",
    "latency_ms",
    "status",
    "probabilities",
    "embedding",
)


def _in_window(name: str, since: float, until: float) -> bool:
    """Whether a day folder (``YYYY-MM-DD``) may hold records of ``[since, until)``.

    A file lies in the folder of its first record's day, so the day before ``since`` counts.
    """
    try:
        start = calendar.timegm(time.strptime(name, "%Y-%m-%d"))
    except ValueError:
        return False  # images/ and anything else
    return since - 86400 < start + 86400 and start <= until


def _written_ms(path: str) -> int:
    """The unix ms a record file was written at (its name's first field)."""
    return int(path.rsplit("/", 1)[-1].split("-", 1)[0])


def read_traffic(
    uri: str, since: float, until: float | None = None, written: bool = False
) -> Traffic:
    """The records of ``[since, until)`` under ``uri`` (a folder or a prefix).

    Args:
        uri: ``serve.record.uri``.
        since: Unix seconds.
        until: Unix seconds (None: now).
        written: Select by when the files were written, not by when the requests arrived:
            checks that follow one another (``detect_change``) then miss no record that was
            still in a predictor's buffer when the previous one read.

    Raises:
        TrafficError: The store cannot be listed or a file cannot be read.
    """
    import fsspec

    until = time.time() if until is None else until
    try:
        fs, root = fsspec.core.url_to_fs(uri.rstrip("/"), skip_instance_cache=True)
        days = []
        if fs.exists(root):
            days = [
                d
                for d in fs.ls(root, detail=False)
                if _in_window(d.rsplit("/", 1)[-1], since, until)
            ]
        paths = [p for day in sorted(days) for p in fs.ls(day, detail=False) if p.endswith(SUFFIX)]
        if written:
            paths = [p for p in paths if since * 1000 <= _written_ms(p) < until * 1000]
        parts = [_read(fs, path) for path in sorted(paths)]
    except TrafficError:
        raise
    except Exception as exc:  # endpoint down, credentials
        raise TrafficError(f"{uri}: reading the traffic record failed: {exc}") from exc
    rows = _concat(parts)
    if written:
        return rows
    keep = (rows.time >= since) & (rows.time < until)
    return Traffic(**{n: getattr(rows, n)[keep] for n in _ARRAYS}, files=len(parts))


def _read(fs: object, path: str) -> dict[str, np.ndarray]:
    import io

    with fs.open(path, "rb") as handle:  # type: ignore[attr-defined]
        data = handle.read()
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in _ARRAYS}
    except (ValueError, KeyError, OSError) as exc:
        raise TrafficError(f"{path}: not a traffic record file ({exc})") from exc


def _concat(parts: list[dict[str, np.ndarray]]) -> Traffic:
    if not parts:
        empty = {n: np.zeros(0, dtype=np.float64) for n in _ARRAYS}
        for name in ("request_id", "version", "sha256", "predicted", "status"):
            empty[name] = np.zeros(0, dtype=str)
        empty["probabilities"] = np.zeros((0, 0), dtype=np.float32)
        empty["embedding"] = np.zeros((0, 0), dtype=np.float32)
        return Traffic(**empty, files=0)
    out: dict[str, np.ndarray] = {}
    for name in _ARRAYS:
        arrays = [p[name] for p in parts]
        if arrays[0].ndim == 2:  # files of different models may differ in width: pad
            width = max(a.shape[1] for a in arrays)
            arrays = [
                np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=np.nan) for a in arrays
            ]
        out[name] = np.concatenate(arrays)
    return Traffic(**out, files=len(parts))


def kept_image(uri: str, sha256: str) -> bytes | None:
    """A kept image's bytes (``serve.record.keep_images``), or None when it was not kept."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri.rstrip("/"), skip_instance_cache=True)
    path = f"{root}/{IMAGES}/{sha256}"
    return bytes(fs.cat_file(path)) if fs.exists(path) else None


def figures(traffic: Traffic, version: str) -> ServedFigures:
    """What ``version`` answered in ``traffic``: requests, errors, p99 latency, confidence."""
    from tlops.evaluate.rollout import ServedFigures

    mine = traffic.where(traffic.version == version)
    ok = mine.ok
    return ServedFigures(
        version=version,
        requests=len(mine),
        errors=len(mine) - len(ok),
        p99_latency_ms=float(np.percentile(ok.latency_ms, 99)) if len(ok) else float("nan"),
        mean_confidence=float(np.mean(ok.confidence)) if len(ok) else float("nan"),
    )


def export_kept(uri: str, out: Path, since: float, version: str | None = None) -> tuple[int, int]:
    """Write each distinct kept image served since ``since`` to ``out`` as ``<sha256>.<ext>``.

    Returns:
        ``(images written, images recorded but not kept)``.
    """
    import io

    from PIL import Image

    traffic = read_traffic(uri, since).ok
    if version is not None:
        traffic = traffic.where(traffic.version == version)
    written = missing = 0
    out.mkdir(parents=True, exist_ok=True)
    for sha in sorted(set(traffic.sha256)):
        data = kept_image(uri, sha)
        if data is None:
            missing += 1
            continue
        with Image.open(io.BytesIO(data)) as image:
            ext = (image.format or "img").lower().replace("jpeg", "jpg")
        (out / f"{sha}.{ext}").write_bytes(data)
        written += 1
    return written, missing
