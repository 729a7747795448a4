"""Reading an ``ingest_data`` output: its record, manifest, class list and decoded splits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.config import SPLITS, UNLABELED_SPLIT, AlignConfig, Params
from tlops.io import read_json
from tlops.layout import IMAGES_DIR, INGEST_FILE, MANIFEST_FILE, VALIDATION_FILE

if TYPE_CHECKING:  # torch and pandas are imported only by the steps that read images or rows
    import pandas as pd

    from tlops.data.tensors import SplitTensors


def ingest_info(ingest_dir: Path) -> dict[str, Any]:
    """``ingest.json`` of an ``ingest_data`` output.

    Raises:
        FileNotFoundError: The directory is not an ingest_data output.
    """
    path = ingest_dir / INGEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not an ingest_data output")
    info: dict[str, Any] = read_json(path)
    return info


def require_validated(report_dir: Path, ingest: dict[str, Any]) -> None:
    """Refuse data whose validation did not pass, or that is not the data that was validated.

    Raises:
        FileNotFoundError: ``report_dir`` is not a validate_data output.
        ValueError: The validation failed, or was of another data version.
    """
    path = report_dir / VALIDATION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a validate_data output")
    report = read_json(path)
    if not report["passed"]:
        raise ValueError(f"{path}: the data failed validation; nothing is trained on it")
    if report["data_version"] != ingest["data_version"]:
        raise ValueError(
            f"{path}: validated data version {report['data_version']}, but the dataset is "
            f"{ingest['data_version']}"
        )
    unlabeled = unlabeled_version(ingest)
    if report.get("unlabeled_data_version") != unlabeled:
        raise ValueError(
            f"{path}: validated unlabeled data version {report.get('unlabeled_data_version')}, "
            f"but the dataset's is {unlabeled}"
        )


def unlabeled_version(ingest: dict[str, Any]) -> str | None:
    """The data version of the ``data.target_unlabeled`` images an ingest holds, or None."""
    unlabeled = ingest.get("unlabeled")
    return str(unlabeled["data_version"]) if unlabeled else None


def load_manifest(ingest_dir: Path) -> pd.DataFrame:
    """Read ``manifest.csv`` of an ingest output with stable dtypes (labels stay strings)."""
    import pandas as pd

    path = ingest_dir / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found; run ingest_data first")
    return pd.read_csv(
        path,
        dtype={
            "path": str,
            "label": str,
            "split": str,
            "sha256": str,
            "mode": str,
            "decode_status": str,
            "error": str,
        },
        keep_default_na=False,
        na_values={"width": [""], "height": [""]},
        encoding="utf-8",
    ).replace({"mode": {"": None}})


def class_list(params: Params, ingest: dict[str, Any]) -> list[str]:
    """The target classes, in output order: ``validate_data.classes``, else the class folders."""
    if params.validate_data.classes is not None:
        return list(params.validate_data.classes)
    return sorted(ingest["classes"])


def load_splits(
    params: Params,
    ingest_dir: Path,
    classes: list[str],
    splits: tuple[str, ...] = SPLITS,
    progress: Callable[[int], None] | None = None,
    image_size: int | None = None,
    align: AlignConfig | None = None,
) -> dict[str, SplitTensors]:
    """Decode the requested splits of an ingest output (cached by data version).

    ``image_size`` and ``align`` override ``model.image_size`` and ``model.align`` (a champion
    is scored as it was trained). The split ``unlabeled`` holds the ``data.target_unlabeled``
    images (every label :data:`~tlops.data.budget.UNLABELED`; empty when there are none).
    """
    from tlops.data.tensors import load_split

    ingest = ingest_info(ingest_dir)
    manifest = load_manifest(ingest_dir)

    def version(split: str) -> str:
        if split == UNLABELED_SPLIT:  # its own folder, its own version
            return str(unlabeled_version(ingest) or "none")
        return str(ingest["data_version"])

    return {
        split: load_split(
            ingest_dir / IMAGES_DIR,
            manifest,
            split,
            classes,
            image_size or params.model.image_size,
            params.image,
            params.extract_features.cache_dir / "images",
            version(split),
            progress,
            align or params.model.align,
        )
        for split in splits
    }
