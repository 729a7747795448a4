"""Where a domain's images come from: a local directory, a DVC repository or an object store.

A pod has no checkout, so ``ingest_data`` may read its data from a DVC repository at a revision
(through DVC's own file system, which clones the git repository and pulls the files from its
DVC remote) or from an object-store prefix, as well as from a local directory. Whatever the
location, the step scans a local copy, and the data version is the DVC md5 of that copy's
content: the same value ``dvc add`` records for the same files, so one data set has one version
however it was reached.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlops.config import DvcData, ObjectPrefix
from tlops.data.manifest import DataDirError

Location = Path | ObjectPrefix | DvcData


@dataclass(frozen=True)
class LocalCopy:
    """A location's images as a local directory, and what DVC records for them."""

    root: Path  # the directory to scan
    name: str  # the location as the messages and ingest.json name it
    recorded_md5: str | None = None  # the md5 the DVC repository records (DvcData only)
    recorded_in: str | None = None  # where that md5 is recorded


def _dvc_fs(location: DvcData) -> Any:
    from dvc.api import DVCFileSystem

    try:
        return DVCFileSystem(location.repo, rev=location.rev, remote=location.remote)
    except Exception as exc:  # dvc raises many kinds (SCM, clone, rev) for an unusable repo
        raise DataDirError(f"{location}: cannot open the DVC repository: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    """The error and its causes in one line (DVC wraps the network error that matters)."""
    parts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip() or type(current).__name__
        if text not in parts:
            parts.append(text)
        current = current.__cause__ or current.__context__
    return ": ".join(parts)


def _remote_name(fs: Any, location: DvcData) -> str:
    """``name (url)`` of the DVC remote a pull from ``location`` uses."""
    config = fs.repo.config
    name = location.remote or config.get("core", {}).get("remote")
    url = config.get("remote", {}).get(name, {}).get("url") if name else None
    if not name:
        return "(the repository has no default DVC remote)"
    return f"{name!r} ({url})" if url else repr(name)


def tracked_md5(location: DvcData) -> str:
    """The md5 the DVC repository records for ``location.path`` at ``location.rev``.

    Reads the git side only (the ``.dvc`` file or ``dvc.lock``), downloads no data.

    Raises:
        DataDirError: The repository, revision or path cannot be found, or DVC does not track
            the path.
    """
    return _tracked_md5(_dvc_fs(location), location)


def _tracked_md5(fs: Any, location: DvcData) -> str:
    try:
        info = fs.info(location.path)
    except FileNotFoundError as exc:
        raise DataDirError(f"{location}: no such path in the repository at that revision") from exc
    except Exception as exc:  # the clone happens here: unreachable repository, unknown rev
        raise DataDirError(f"{location}: cannot open the DVC repository: {_reason(exc)}") from exc
    md5 = info.get("md5") or (info.get("dvc_info") or {}).get("md5")
    if info.get("type") != "directory" or not md5:
        raise DataDirError(f"{location}: not a directory tracked by DVC (dvc add it)")
    return str(md5)


@contextlib.contextmanager
def local_copy(location: Location, scratch: Path | None = None) -> Iterator[LocalCopy]:
    """The images of ``location`` as a local directory, for as long as the context lasts.

    A local directory is used in place. A DVC repository's directory is pulled from the
    repository's DVC remote (credentials from the environment, as DVC reads them), an
    object-store prefix is downloaded; both into a scratch directory that is removed after.

    Args:
        location: Where the images are.
        scratch: Parent of the scratch directory (default: the system's temporary directory).

    Raises:
        DataDirError: The location cannot be read; the message names it and, for a DVC
            repository, the remote the pull went to.
    """
    if isinstance(location, Path):
        yield LocalCopy(location, str(location))
        return
    with tempfile.TemporaryDirectory(prefix="tlops-data-", dir=scratch) as tmp:
        target = Path(tmp) / "data"
        if isinstance(location, DvcData):
            yield _pull_dvc(location, target)
        else:
            yield _download_prefix(location, target)


def _pull_dvc(location: DvcData, target: Path) -> LocalCopy:
    # one file system for both: a second one would re-fetch the clone it caches
    fs = _dvc_fs(location)
    md5 = _tracked_md5(fs, location)
    try:
        fs.get(location.path, str(target), recursive=True)
    except Exception as exc:  # network, credentials, missing objects: all end the ingest here
        raise DataDirError(
            f"{location}: pulling the data from DVC remote {_remote_name(fs, location)} failed: "
            f"{_reason(exc)}"
        ) from exc
    return LocalCopy(target, str(location), md5, f"{location}.dvc")


def _download_prefix(location: ObjectPrefix, target: Path) -> LocalCopy:
    import fsspec

    scheme, _, key = location.url.partition("://")
    try:
        fs = fsspec.filesystem(scheme)
        files = fs.find(key)
        if not files:
            raise DataDirError(f"{location}: no objects under this prefix")
        target.mkdir(parents=True)
        for name in files:
            rel = Path(name).relative_to(key) if name != key else Path(Path(name).name)
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(name, str(dest))
    except DataDirError:
        raise
    except Exception as exc:  # endpoint down, credentials, permissions
        raise DataDirError(f"{location}: reading the object store failed: {_reason(exc)}") from exc
    return LocalCopy(target, str(location))
