"""Step ``ingest_data``: an ImageFolder tree -> snapshot, manifest and data version.

Outputs (in the ``dataset`` directory, written all at once or not at all):

* ``manifest.csv`` - one row per image (see :data:`tlops.data.manifest.MANIFEST_COLUMNS`);
* ``ingest.json`` - data version, class folders, counts per class and split, skipped files;
* ``images/`` - the decodable images under their original relative paths, written from the very
  bytes that were hashed and decoded, so later steps and other runners read exactly the snapshot
  that was validated, not whatever the data directory holds by then.

With ``data.target_unlabeled`` set, the target's ingest also scans that folder: its images are
manifest rows of split ``unlabeled`` (no label) under ``images/_unlabeled/``, and ``ingest.json``
records the folder's own data version under ``unlabeled``. With ``data.target_labeled`` set
(labeled drops, ``tlops labels pull``), their images join the target's under ``_labeled/``,
each in its folder's split; ``ingest.json`` records their version under ``labeled``, and the
data version becomes ``<folder md5>+<drops md5>`` (the folder's own stays
``folder_data_version``, what a pinned ``data_version`` is checked against).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlops.config import SPLITS, Params
from tlops.data.images import DecodeStatus
from tlops.data.location import LocalCopy, local_copy
from tlops.data.manifest import (
    MANIFEST_COLUMNS,
    DataDirError,
    ManifestRow,
    ScanResult,
    scan_image_folder,
    scan_labeled_drop,
    scan_unlabeled_folder,
)
from tlops.data.version import DataVersion, data_version
from tlops.io import atomic_dir, write_json
from tlops.layout import IMAGES_DIR, INGEST_FILE, LABELED_DIR, MANIFEST_FILE, UNLABELED_DIR
from tlops.runner.spec import Arg, Port, StepIO, StepResult, StepSpec


def _counts(rows: list[ManifestRow], classes: list[str]) -> dict[str, dict[str, int]]:
    counter = Counter((row.label, row.split) for row in rows)
    return {label: {split: counter[(label, split)] for split in SPLITS} for label in classes}


def write_manifest(path: Path, rows: list[ManifestRow]) -> None:
    """Write manifest rows as UTF-8 CSV with a header of :data:`MANIFEST_COLUMNS`."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_dict())


def run(params: Params, io: StepIO) -> StepResult:
    """Scan ``data.<domain>`` and write the manifest, the data version and the snapshot.

    Args:
        params: Resolved parameters (reads ``data``, ``image`` and ``ingest_data``).
        io: Output ``dataset`` (replaced on success, untouched on failure); arguments
            ``domain`` (an entry of params ``data``) and ``data_version`` (expected, if set).

    Returns:
        The data version and counts: the console line and the ``dataset`` metadata.

    Raises:
        tlops.data.manifest.DataDirError: The directory is missing, empty or of mixed layout.
        ValueError: An unknown domain, or the data is not the expected version.
    """
    domain = io.args["domain"]
    location = params.data.location(domain)
    out_dir = io.outputs["dataset"]
    cfg = params.ingest_data
    with local_copy(location) as copy, atomic_dir(out_dir) as staging:
        data_dir = copy.root
        images = staging / IMAGES_DIR
        images.mkdir()

        def sink(rel: str, data: bytes) -> None:
            target = images / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

        try:
            scan: ScanResult = scan_image_folder(
                data_dir, params.image, cfg.split, cfg.salt, progress=io.progress, sink=sink
            )
        except DataDirError as exc:  # name the location, not the scratch copy of it
            raise DataDirError(str(exc).replace(str(data_dir), copy.name)) from exc
        unlabeled, labeled = (
            _extras(params, scan, copy.name, io.progress, sink)
            if domain == "target"
            else (None, None)
        )
        summary = _finish(params, domain, copy, staging, scan, unlabeled, labeled)
        expected = io.args.get("data_version")
        if expected and summary["folder_data_version"] != expected:
            raise ValueError(
                f"{copy.name}: data version {summary['data_version']} differs from the expected "
                f"{expected} (the data changed after the run was started)"
            )
    unlabeled_info: dict[str, Any] = summary["unlabeled"] or {}
    extra = (
        f" + {unlabeled_info['n_images']} unlabeled images from {params.data.target_unlabeled} "
        f"(data version {unlabeled_info['data_version']})"
        if unlabeled_info.get("data_version")
        else ""
    )
    return StepResult(
        f"ingest_data: {domain} {copy.name}: {summary['n_images']} images, "
        f"{len(summary['classes'])} classes, {summary['n_failed_decode']} undecodable, "
        f"data version {summary['data_version']} ({summary['version_source']}){extra} "
        f"-> {out_dir}",
        metadata={
            "dataset": {
                "data_version": summary["data_version"],
                "domain": domain,
                "classes": summary["classes"],
                "n_images": summary["n_images"],
                "version_source": summary["version_source"],
                "unlabeled_data_version": unlabeled_info.get("data_version"),
                "n_unlabeled": unlabeled_info.get("n_images", 0),
            }
        },
    )


def _extras(
    params: Params,
    scan: ScanResult,
    name: str,
    progress: Callable[[int], None] | None,
    sink: Callable[[str, bytes], None],
) -> tuple[ScanResult | None, ScanResult | None]:
    """The target's unlabeled folder and labeled drops, when params name them.

    An image of the unlabeled folder that a labeled drop holds (it was labeled since) is read
    as labeled only: the same image in two splits would be leakage.
    """
    data = params.data
    for folder, setting in (
        (UNLABELED_DIR, data.target_unlabeled),
        (LABELED_DIR, data.target_labeled),
    ):
        if setting is not None and folder in scan.classes:
            raise DataDirError(
                f"{name}: a class folder may not be named {folder!r} when data.target_"
                f"{'un' if folder == UNLABELED_DIR else ''}labeled is set (its images are kept "
                "under that name)"
            )
    unlabeled = labeled = None
    if data.target_labeled is not None:
        labeled = scan_labeled_drop(data.target_labeled, params.image, LABELED_DIR, progress, sink)
    if data.target_unlabeled is not None:
        unlabeled = scan_unlabeled_folder(
            data.target_unlabeled, params.image, UNLABELED_DIR, progress, sink
        )
        if labeled is not None:
            known = {row.sha256 for row in labeled.rows}
            unlabeled.rows[:] = [row for row in unlabeled.rows if row.sha256 not in known]
    return unlabeled, labeled


def _unlabeled_summary(folder: Path, scan: ScanResult) -> dict[str, Any]:
    version = data_version(folder, scan.file_md5)
    return {
        "data_dir": str(folder),
        "data_version": version.md5,
        "version_source": version.source,
        "version_note": version.note,
        "dvc_file": version.dvc_file,
        "n_images": len(scan.rows),
        "n_failed_decode": sum(row.decode_status != DecodeStatus.OK.value for row in scan.rows),
    }


def _finish(
    params: Params,
    domain: str,
    copy: LocalCopy,
    staging: Path,
    scan: ScanResult,
    unlabeled: ScanResult | None,
    labeled: ScanResult | None = None,
) -> dict[str, Any]:
    """Write the manifest and ``ingest.json`` into ``staging``; return what ingest.json holds.

    With labeled drops, the data version is the folder's and the drops' (``<md5>+<md5>``):
    every cache and comparison keyed by it sees the new labels.
    """
    cfg = params.ingest_data
    version: DataVersion = data_version(
        copy.root, scan.file_md5, copy.recorded_md5, copy.recorded_in
    )
    rows = [*scan.rows, *(labeled.rows if labeled else [])]
    classes = sorted(set(scan.classes) | set(labeled.classes if labeled else []))
    counts = _counts(rows, classes)
    failed = [row for row in rows if row.decode_status != DecodeStatus.OK.value]
    extra: dict[str, Any] | None = None
    if unlabeled is not None:
        assert params.data.target_unlabeled is not None
        extra = _unlabeled_summary(params.data.target_unlabeled, unlabeled)
        failed += [row for row in unlabeled.rows if row.decode_status != DecodeStatus.OK.value]
    drops: dict[str, Any] | None = None
    if labeled is not None:
        assert params.data.target_labeled is not None
        drops = _unlabeled_summary(params.data.target_labeled, labeled)
    summary: dict[str, Any] = {
        "data_dir": copy.name,
        "domain": domain,
        "data_version": version.md5 + (f"+{drops['data_version']}" if drops else ""),
        "folder_data_version": version.md5,
        "version_source": version.source,
        "version_note": version.note,
        "dvc_file": version.dvc_file,
        "n_images": len(rows),
        "n_failed_decode": len(failed),
        "classes": classes,
        "explicit_splits": scan.explicit_splits,
        "counts": counts,
        "skipped": [
            {"path": s.path, "reason": s.reason}
            for s in [
                *scan.skipped,
                *(unlabeled.skipped if unlabeled else []),
                *(labeled.skipped if labeled else []),
            ]
        ],
        "unlabeled": extra,
        "labeled": drops,
        "params": {
            "image": params.image.model_dump(mode="json"),
            "ingest_data": cfg.model_dump(mode="json"),
        },
    }
    write_manifest(staging / MANIFEST_FILE, [*rows, *(unlabeled.rows if unlabeled else [])])
    write_json(staging / INGEST_FILE, summary)
    return summary


# The step's declaration: what every runner (tlops step, dvc.yaml, KFP) is derived from.
STEP = StepSpec(
    name="ingest_data",
    run=run,
    help="Scan an ImageFolder (params `data.<domain>`) into a manifest, a data version and "
    "a snapshot of the images.",
    params=(
        "data.{domain}",
        "data.target_unlabeled",
        "data.target_labeled",
        "image",
        "ingest_data",
    ),
    args=(
        Arg(
            "domain",
            "Which entry of params.yaml `data` to ingest (target or source).",
            "target",
        ),
        Arg(
            "data_version",
            "Expected data version (DVC md5); the step fails if the data "
            "differs. On a cluster it is also the task's cache key.",
        ),
    ),
    inputs=(),
    outputs=(Port("dataset", "Dataset", "manifest.csv, ingest.json, images/"),),
    code=(
        "tlops.data.manifest",
        "tlops.data.images",
        "tlops.data.version",
        "tlops.data.location",
        "tlops.io",
    ),
    cacheable=True,
    per_domain=True,
)


def dataset_input(
    name: str = "dataset",
    help: str = "Output of ingest_data.",
    domain: str | None = "target",
    optional: bool = False,
) -> Port:
    """An input of another step that reads this step's ``dataset``.

    Args:
        name: The input's name in the reading step.
        help: One line on what the reader takes from it.
        domain: Which domain's ingest (None: the reader's own, for a per-domain reader).
        optional: The reader can do without it.
    """
    return Port(name, "Dataset", help, ("ingest_data", "dataset"), domain, optional)
