"""Scanning an ImageFolder tree into a manifest: one row per image.

Layouts accepted (``root`` is the data directory):

* ``root/<class>/<image>`` - the split of each image comes from its content hash;
* ``root/<split>/<class>/<image>`` with ``<split>`` in ``train``, ``val``, ``test``.

Images may sit in nested folders below their class folder. Files and folders whose name starts
with a dot are ignored (``.DS_Store``, ``.gitignore``); any other file that is not where an image
belongs is reported as skipped, never silently used.

Images are read one at a time, so memory does not grow with the number of images.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tlops.config import SPLITS, UNLABELED_SPLIT, ImageConfig, SplitFractions
from tlops.data.images import DecodeStatus, ImageDecodeError, decode_bytes

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "label",
    "split",
    "sha256",
    "width",
    "height",
    "mode",
    "frames",
    "bytes",
    "decode_status",
    "error",
)


class DataDirError(ValueError):
    """A data directory that cannot be scanned at all (missing, empty, mixed layout)."""


@dataclass(frozen=True)
class ManifestRow:
    """One image of the data directory."""

    path: str  # POSIX path relative to the data root
    label: str
    split: str
    sha256: str
    width: int | None
    height: int | None
    mode: str | None
    frames: int | None  # > 1: a multi-frame file of which only the first frame is used
    bytes: int
    decode_status: str
    error: str

    def as_dict(self) -> dict[str, Any]:
        """Return the row as a plain dict in :data:`MANIFEST_COLUMNS` order."""
        return asdict(self)


@dataclass(frozen=True)
class Skipped:
    """A file that is not an image of any class, with the reason it was not used."""

    path: str
    reason: str


@dataclass
class ScanResult:
    """Everything ingestion learns from one pass over the data directory."""

    rows: list[ManifestRow]
    classes: list[str]  # every class folder, including empty ones, sorted
    skipped: list[Skipped]
    explicit_splits: bool
    file_md5: dict[str, str] = field(default_factory=dict)  # relpath -> md5, for the DVC hash


def hash_split(sha256: str, fractions: SplitFractions, salt: str) -> str:
    """Assign a split from an image's content hash.

    The split depends only on the content and the salt, so an image keeps its split when new
    images arrive and identical files always land in the same split.

    Args:
        sha256: Hex digest of the file content.
        fractions: Target fractions for train, val and test.
        salt: Changes every assignment at once (a new, independent split).

    Returns:
        ``"train"``, ``"val"`` or ``"test"``.
    """
    digest = hashlib.sha256(f"{salt}:{sha256}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < fractions.train:
        return "train"
    if position < fractions.train + fractions.val:
        return "val"
    return "test"


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


def _walk_files(folder: Path) -> Iterator[Path]:
    """Yield files under ``folder`` in a stable order, without following symlinked folders."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        base = Path(dirpath)
        # A symlinked folder is listed in dirnames but not entered; report it as a file so the
        # outside-root rule applies to it as well.
        links = [d for d in dirnames if (base / d).is_symlink()]
        dirnames[:] = [d for d in dirnames if d not in links]
        for name in sorted([*filenames, *links]):
            if not _is_hidden(name):
                yield base / name


def _class_folders(root: Path) -> tuple[bool, list[tuple[str | None, Path]], list[Path]]:
    """Return (explicit_splits, [(split, class_dir)], stray files at the top levels)."""
    top = sorted(p for p in root.iterdir() if not _is_hidden(p.name))
    top_dirs = [p for p in top if p.is_dir() and not p.is_symlink()]
    strays = [p for p in top if p not in top_dirs]
    split_dirs = [p for p in top_dirs if p.name in SPLITS]
    if split_dirs and len(split_dirs) != len(top_dirs):
        others = [p.name for p in top_dirs if p.name not in SPLITS]
        raise DataDirError(
            f"{root}: mixed layout: split folders {[p.name for p in split_dirs]} stand beside "
            f"class folders {others}; use either <class>/<image> or <split>/<class>/<image>"
        )
    if not split_dirs:
        return False, [(None, d) for d in top_dirs], strays
    folders: list[tuple[str | None, Path]] = []
    for split_dir in split_dirs:
        for entry in sorted(split_dir.iterdir()):
            if _is_hidden(entry.name):
                continue
            if entry.is_dir() and not entry.is_symlink():
                folders.append((split_dir.name, entry))
            else:
                strays.append(entry)
    return True, folders, strays


def scan_image_folder(
    root: Path,
    image_cfg: ImageConfig,
    fractions: SplitFractions,
    salt: str,
    progress: Callable[[int], None] | None = None,
    sink: Callable[[str, bytes], None] | None = None,
) -> ScanResult:
    """Scan an ImageFolder tree: hash and decode every image, one at a time.

    Args:
        root: The data directory.
        image_cfg: How images are opened and converted.
        fractions: Split fractions for images outside train/val/test folders.
        salt: Salt of the hash split.
        progress: Called with 1 after each file, for progress bars.
        sink: Called with (relative path, bytes) for each decodable image, so a snapshot holds
            exactly the bytes that were hashed and decoded.

    Returns:
        The manifest rows, the class folders (including empty ones) and the skipped files.

    Raises:
        DataDirError: The directory is missing, not a directory, has no class folders, or mixes
            split folders with class folders.
    """
    if not root.exists():
        raise DataDirError(f"{root}: data directory does not exist")
    if not root.is_dir():
        raise DataDirError(f"{root}: not a directory")
    real_root = root.resolve()
    explicit, folders, strays = _class_folders(root)
    if not folders:
        raise DataDirError(
            f"{root}: no class folders found (expected <class>/<image> or "
            f"<split>/<class>/<image>); the directory is empty or holds only loose files"
        )
    skipped = [Skipped(p.relative_to(root).as_posix(), "not inside a class folder") for p in strays]
    classes = sorted({folder.name for _, folder in folders})
    entries = (
        (file, file.relative_to(root).as_posix(), folder.name, split)
        for split, folder in folders
        for file in _walk_files(folder)
    )
    rows, file_md5 = _scan_files(
        entries, real_root, image_cfg, fractions, salt, skipped, progress, sink
    )
    return ScanResult(rows, classes, skipped, explicit, file_md5)


# the fractions of the unlabeled scan: every row there carries its split, so none is hashed
_NEVER_HASHED = SplitFractions(train=1.0, val=0.0, test=0.0)


def scan_unlabeled_folder(
    root: Path,
    image_cfg: ImageConfig,
    prefix: str,
    progress: Callable[[int], None] | None = None,
    sink: Callable[[str, bytes], None] | None = None,
) -> ScanResult:
    """Scan a folder of unlabeled images (any nesting; folder names carry no label).

    Every image becomes a row of split :data:`~tlops.config.UNLABELED_SPLIT` with an empty
    label; its path is ``<prefix>/<path under root>``, so it cannot collide with a labeled one.
    ``file_md5`` stays keyed by the path under ``root`` (the folder's own DVC hash).

    Raises:
        DataDirError: The folder is missing, not a directory, or holds no image file.
    """
    if not root.exists():
        raise DataDirError(f"{root}: unlabeled data directory does not exist")
    if not root.is_dir():
        raise DataDirError(f"{root}: not a directory")
    skipped: list[Skipped] = []
    entries = (
        (file, f"{prefix}/{file.relative_to(root).as_posix()}", "", UNLABELED_SPLIT)
        for file in _walk_files(root)
    )
    rows, prefixed_md5 = _scan_files(
        entries, root.resolve(), image_cfg, _NEVER_HASHED, "", skipped, progress, sink
    )
    file_md5 = {rel.removeprefix(f"{prefix}/"): md5 for rel, md5 in prefixed_md5.items()}
    if not rows:
        raise DataDirError(f"{root}: no images in the unlabeled data directory")
    return ScanResult(rows, [], skipped, False, file_md5)


def _scan_files(
    entries: Iterable[tuple[Path, str, str, str | None]],
    real_root: Path,
    image_cfg: ImageConfig,
    fractions: SplitFractions,
    salt: str,
    skipped: list[Skipped],
    progress: Callable[[int], None] | None,
    sink: Callable[[str, bytes], None] | None,
) -> tuple[list[ManifestRow], dict[str, str]]:
    """Scan (file, relative path, label, split) entries: the rows and the md5 of each file.

    A file whose extension is not an image's is appended to ``skipped``.
    """
    rows: list[ManifestRow] = []
    file_md5: dict[str, str] = {}
    for file, rel, label, split in entries:
        scanned = _scan_file(file, rel, label, split, real_root, image_cfg, fractions, salt)
        if scanned is None:
            skipped.append(
                Skipped(rel, f"extension not in image.extensions {list(image_cfg.extensions)}")
            )
        else:
            row, md5, data = scanned
            rows.append(row)
            if md5:
                file_md5[rel] = md5
            if sink is not None and row.decode_status == DecodeStatus.OK.value:
                sink(rel, data)
        if progress is not None:
            progress(1)
    return rows, file_md5


def _scan_file(
    file: Path,
    rel: str,
    label: str,
    split: str | None,
    real_root: Path,
    image_cfg: ImageConfig,
    fractions: SplitFractions,
    salt: str,
) -> tuple[ManifestRow, str, bytes] | None:
    if file.suffix.lower() not in image_cfg.extensions and not file.is_symlink():
        return None

    def failed(status: DecodeStatus, error: str, sha: str = "", size: int = 0) -> ManifestRow:
        return ManifestRow(
            path=rel,
            label=label,
            split=split or (hash_split(sha, fractions, salt) if sha else "train"),
            sha256=sha,
            width=None,
            height=None,
            mode=None,
            frames=None,
            bytes=size,
            decode_status=status.value,
            error=error,
        )

    if file.is_symlink() and not _inside(file, real_root):
        # Never read through it: the data version and the snapshot must only contain files
        # that belong to the data directory.
        target = os.readlink(file)
        return (
            failed(
                DecodeStatus.SYMLINK_OUTSIDE_ROOT, f"symlink points outside the data root: {target}"
            ),
            "",
            b"",
        )
    if file.is_dir():
        return None
    try:
        data = file.read_bytes()
    except OSError as exc:
        return failed(DecodeStatus.UNREADABLE, str(exc)), "", b""
    sha = hashlib.sha256(data).hexdigest()
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if not data:
        return failed(DecodeStatus.EMPTY_FILE, "the file has 0 bytes", sha, 0), md5, b""
    try:
        _, info = decode_bytes(data, file, image_cfg)
    except ImageDecodeError as exc:
        return failed(exc.status, exc.detail, sha, len(data)), md5, b""
    return (
        ManifestRow(
            path=rel,
            label=label,
            split=split or hash_split(sha, fractions, salt),
            sha256=sha,
            width=info.width,
            height=info.height,
            mode=info.mode,
            frames=info.frames,
            bytes=len(data),
            decode_status=DecodeStatus.OK.value,
            error="",
        ),
        md5,
        data,
    )


def scan_labeled_drop(
    root: Path,
    image_cfg: ImageConfig,
    prefix: str,
    progress: Callable[[int], None] | None = None,
    sink: Callable[[str, bytes], None] | None = None,
) -> ScanResult:
    """Scan a labeled drop (``tlops labels pull``): ``<split>/<class>/<image>``, splits kept.

    Its rows' paths are ``<prefix>/<path under root>``; ``file_md5`` stays keyed by the path
    under ``root`` (the drop's own DVC hash). Its audit images are its ``test`` split and stay
    there: a drop without split folders is refused, never hash-split.

    Raises:
        DataDirError: The folder is missing, holds no image, or has no split folders.
    """
    if not root.is_dir():
        raise DataDirError(f"{root}: labeled drop directory does not exist")
    inner = None if sink is None else lambda rel, data: sink(f"{prefix}/{rel}", data)
    never = SplitFractions(train=1.0, val=0.0, test=0.0)  # every row has its split folder
    scan = scan_image_folder(root, image_cfg, never, "", progress, inner)
    if not scan.explicit_splits:
        raise DataDirError(
            f"{root}: a labeled drop keeps its splits: <split>/<class>/<image> "
            "(tlops labels pull writes test/ for the audit and train/ for the rest)"
        )
    rows = [replace(row, path=f"{prefix}/{row.path}") for row in scan.rows]
    skipped = [replace(s, path=f"{prefix}/{s.path}") for s in scan.skipped]
    return ScanResult(rows, scan.classes, skipped, True, scan.file_md5)
