"""The numerics cache: one JSON file of calibrated choices, keyed by what they depend on.

Written atomically (concurrent steps never read half a file); a corrupt file costs a
calibration, never a failed run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_key(parts: dict[str, Any]) -> str:
    """A stable short key of the cache entry's parts."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def read_cache(cache_file: Path | None, key: str) -> dict[str, Any] | None:
    """The cached entry for ``key``, None when absent or unreadable."""
    if cache_file is None or not cache_file.is_file():
        return None
    try:
        entry = json.loads(cache_file.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError):
        return None  # a corrupt cache costs a calibration, never a failed run
    return entry if isinstance(entry, dict) else None


def write_cache(cache_file: Path | None, key: str, entry: dict[str, Any]) -> None:
    """Add or replace one entry (atomically: concurrent steps never read half a file)."""
    if cache_file is None:
        return
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        entries = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        entries = {}
    entries[key] = entry
    tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(cache_file)
