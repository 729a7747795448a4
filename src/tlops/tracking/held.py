"""Models held for labels: the challenger adapted to unlabeled images, waiting for their labels.

:func:`hold_reason` says why a model adapted without labels may not be promoted;
``register_model`` tags it ``gate.held=unlabeled`` (it is never promoted before labeled images
of the new data score it) with the data it saw
(``data_version``, ``unlabeled_data_version``). ``detect_change`` asks here whether such a model
already waits on exactly this data (no second adaptation), or on the unlabeled folder whose
labels arrive now (the retrain starts from it).
"""

from __future__ import annotations

from pathlib import Path

from tlops.config import TrackingConfig
from tlops.io import read_json
from tlops.layout import CHANGE_FILE
from tlops.tracking.registry import CHALLENGER, VersionInfo, version_with_alias

HELD_TAG, HELD_UNLABELED = "gate.held", "unlabeled"


def same_data(version: VersionInfo, data_version: str, unlabeled: str | None) -> bool:
    """The registered version was trained on this data: labeled and unlabeled versions."""
    tags = version.tags
    return tags.get("data_version") == data_version and (
        tags.get("unlabeled_data_version") == unlabeled
    )


def held_challenger(cfg: TrackingConfig, model_name: str) -> VersionInfo | None:
    """The challenger, if it is held for labels."""
    found = version_with_alias(cfg, model_name, CHALLENGER)
    if found is None or found.tags.get(HELD_TAG) != HELD_UNLABELED:
        return None
    return found


def held_on(
    cfg: TrackingConfig, model_name: str, data_version: str, unlabeled: str | None
) -> str | None:
    """The version of the held challenger adapted to exactly this data, if there is one."""
    found = held_challenger(cfg, model_name)
    return found.version if found and same_data(found, data_version, unlabeled) else None


def adapted_to(cfg: TrackingConfig, model_name: str, unlabeled: str | None) -> VersionInfo | None:
    """The held challenger adapted to this unlabeled folder (whose labels may arrive now)."""
    found = held_challenger(cfg, model_name) if unlabeled is not None else None
    if found is None or found.tags.get("unlabeled_data_version") != unlabeled:
        return None
    return found


def hold_reason(change_dir: Path | None) -> str | None:
    """Why a retrain's model may not be promoted yet: it was adapted to unlabeled images.

    Its test split is the old data's: nothing says how it does on the new images until a
    uniform audit sample of them is labeled (``select_labels``, ``tlops labels pull``) and a
    retrain scores it there.
    """
    if change_dir is None:
        return None
    change = read_json(change_dir / CHANGE_FILE)
    if change.get("action") != "adapt":
        return None
    counts = change.get("counts") or {}
    strategy = (change.get("overrides") or {}).get("train.strategy", "a label-free strategy")
    return (
        f"adapted without labels ({strategy}) to {counts.get('new_unlabeled', '?')} unlabeled "
        "new images and not scored on labeled images of them; label the audit sample "
        "(select_labels, tlops labels) and retrain to gate it there"
    )
