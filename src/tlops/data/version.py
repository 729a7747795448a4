"""The data version: the DVC md5 of a data directory.

DVC identifies a directory by the md5 of a JSON listing of its files (relative path and md5 of
each, sorted). Computing the same value here gives one definition of "data version" for every
runner: it equals the ``md5`` in ``<dir>.dvc`` when DVC tracks the directory and the working
tree matches it, and it is still a content hash when DVC is not used at all. A directory changed
since ``dvc add`` therefore gets a new version instead of silently reusing the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class DataVersion:
    """The version of a data directory and how it relates to its ``.dvc`` file."""

    md5: str  # "<hex>.dir", the DVC directory hash
    source: str  # "dvc" when <dir>.dvc records this exact hash, else "content"
    dvc_file: str | None  # the .dvc file that tracks the directory, if any
    note: str


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def directory_md5(root: Path, known: Mapping[str, str] | None = None) -> str:
    """Compute DVC's ``.dir`` md5 of ``root``.

    Args:
        root: The directory.
        known: md5 of files already hashed (relative POSIX path -> hex), to avoid reading twice.

    Returns:
        The hash as DVC writes it, e.g. ``"3f2a...e1.dir"``.
    """
    known = known or {}
    entries = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = Path(dirpath)
        for name in filenames:
            path = base / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() and not path.exists():
                continue  # dangling link: DVC cannot hash it either
            md5 = known.get(rel)
            if md5 is None:
                md5 = _md5_file(path)
            entries.append({"md5": md5, "relpath": rel})
    entries.sort(key=lambda entry: entry["relpath"])
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(listing, usedforsecurity=False).hexdigest() + ".dir"


def tracked_md5(dvc_file: Path) -> str | None:
    """Return the directory md5 recorded in a ``.dvc`` file, or None if it records none."""
    try:
        content = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
        outs = content.get("outs") or []
        md5 = outs[0].get("md5") if outs else None
    except (OSError, yaml.YAMLError, AttributeError, IndexError):
        return None
    return str(md5) if md5 else None


def data_version(
    root: Path,
    known: Mapping[str, str] | None = None,
    recorded: str | None = None,
    recorded_in: str | None = None,
) -> DataVersion:
    """Compute the data version of ``root`` and compare it with what DVC recorded for it.

    Args:
        root: The data directory.
        known: md5 of files already hashed during the scan.
        recorded: The md5 DVC records for this data elsewhere (a directory pulled from a DVC
            repository, which has no ``.dvc`` file beside it); None: read ``<root>.dvc``.
        recorded_in: Where ``recorded`` comes from, for the note.

    Returns:
        The version, with ``source="dvc"`` when DVC records exactly this content.

    Raises:
        ValueError: ``recorded`` is given and the content differs from it (a corrupt pull).
    """
    md5 = directory_md5(root, known)
    if recorded is not None:
        where = recorded_in or "the DVC repository"
        if recorded != md5:
            raise ValueError(
                f"{where}: DVC records {recorded}, but the pulled data hashes to {md5} "
                "(a corrupt or incomplete pull)"
            )
        return DataVersion(md5, "dvc", where, f"matches {where}")
    dvc_file = root.with_name(root.name + ".dvc")
    if not dvc_file.is_file():
        return DataVersion(md5, "content", None, "not tracked by DVC: content hash")
    recorded = tracked_md5(dvc_file)
    if recorded == md5:
        return DataVersion(md5, "dvc", str(dvc_file), f"matches {dvc_file}")
    return DataVersion(
        md5,
        "content",
        str(dvc_file),
        f"the directory differs from {dvc_file} (recorded {recorded}); run `dvc add {root}` "
        "to record this version",
    )
