"""File output helpers shared by every step: all-or-nothing directories and JSON files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """Build a directory in a staging folder and move it into place only on success.

    A step that fails part-way leaves ``out_dir`` as it was before (absent, or the previous
    complete output), never half written.

    Args:
        out_dir: The final directory; replaced if it exists.

    Yields:
        The staging directory to write into (a sibling of ``out_dir``, same filesystem).
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield staging
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing what is there with two renames."""
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        new.rename(target)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        new.rename(target)


def write_json(path: Path, payload: Any) -> None:
    """Write JSON with stable key order and a trailing newline (diff- and DVC-friendly)."""
    path.write_text(
        json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def read_json(path: Path) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(path.read_text(encoding="utf-8"))


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (a cache or checkpoint key)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
