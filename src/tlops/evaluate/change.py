"""What changed in the target data since the champion's, and whether that calls for a retrain.

:func:`compare_manifests` counts added, removed and changed images per class between the
champion's manifest and the current one; :func:`decide` applies the policy of params.yaml
``detect_change`` to those counts and to the drift statistics of :mod:`tlops.evaluate.drift`.
Both are pure functions, so the policy is unit-tested without data, models or a registry.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tlops.config import UNLABELED_SPLIT, DetectChangeConfig
from tlops.evaluate.drift import LabelShift, MMDResult

if TYPE_CHECKING:
    import pandas as pd

NO_NEW_DATA = "no new data"
# What detect_change decides (its return value in the retraining pipeline): retrain on labeled
# data; adapt without labels (and ask for labels); only ask for labels; do nothing.
RETRAIN, ADAPT, ASK, SKIP = "retrain", "adapt", "ask", "skip"


@dataclass(frozen=True)
class ChangeCounts:
    """Images added, removed and changed (same path, other content) between two manifests."""

    added: int
    removed: int
    changed: int
    unchanged: int
    new_content: int  # images whose content the reference never had (added or changed)
    per_class: dict[str, dict[str, int]] = field(default_factory=dict)
    new_unlabeled: int = 0  # of new_content: images without a label (the unlabeled split)

    @property
    def any(self) -> bool:
        """True when anything differs."""
        return bool(self.added or self.removed or self.changed)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def _usable(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest[manifest["decode_status"] == "ok"]


def compare_manifests(reference: pd.DataFrame, current: pd.DataFrame) -> ChangeCounts:
    """Count what changed from ``reference`` (the champion's data) to ``current``.

    Images are matched by relative path; an image is *new content* when its sha256 is not
    anywhere in the reference (a renamed copy of a known image is not new), or when it has a
    label now and the reference held it only unlabeled (its label is what is new).
    """
    ref, cur = _usable(reference), _usable(current)
    ref_by_path = dict(zip(ref["path"], zip(ref["sha256"], ref["label"], strict=True), strict=True))
    cur_by_path = dict(zip(cur["path"], zip(cur["sha256"], cur["label"], strict=True), strict=True))
    known = set(ref["sha256"])
    per_class: dict[str, dict[str, int]] = {}

    def bump(label: str, kind: str) -> None:
        counts = per_class.setdefault(label, {"added": 0, "removed": 0, "changed": 0})
        counts[kind] += 1

    added = removed = changed = unchanged = 0
    for path, (sha, label) in cur_by_path.items():
        before = ref_by_path.get(path)
        if before is None:
            added += 1
            bump(label, "added")
        elif before[0] != sha:
            changed += 1
            bump(label, "changed")
        else:
            unchanged += 1
    for path, (_, label) in ref_by_path.items():
        if path not in cur_by_path:
            removed += 1
            bump(label, "removed")
    # an image the reference held only unlabeled is new once it has a label (labels arrived)
    known_labeled = set(ref[ref["split"] != UNLABELED_SPLIT]["sha256"])
    is_unlabeled = cur["split"] == UNLABELED_SPLIT
    new = (is_unlabeled & ~cur["sha256"].isin(known)) | (
        ~is_unlabeled & ~cur["sha256"].isin(known_labeled)
    )
    new_unlabeled = int((new & (cur["split"] == UNLABELED_SPLIT)).sum())
    return ChangeCounts(
        added,
        removed,
        changed,
        unchanged,
        int(new.sum()),
        dict(sorted(per_class.items())),
        new_unlabeled,
    )


@dataclass(frozen=True)
class TrafficCheck:
    """The champion's served traffic since the last check, against its held-out images."""

    images: int  # answered images of the champion's version in the window
    since: float  # unix seconds
    until: float
    drift: MMDResult | None = None  # None: too few images to test
    confidence_reference: float = math.nan  # mean top-class probability on held-out images
    confidence_served: float = math.nan
    class_mix: float = math.nan  # total variation of the predicted classes
    error: str | None = None  # why the traffic could not be read

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        out = asdict(self)
        out["drift"] = self.drift.as_dict() if self.drift else None
        return out


def _traffic(cfg: DetectChangeConfig, check: TrafficCheck | None) -> tuple[list[str], list[str]]:
    """The traffic's triggers and passed checks (each with its figure)."""
    if check is None:
        return [], []
    if check.error:
        return [], [f"served traffic not read: {check.error}"]
    if check.drift is None:
        return [], [
            f"served traffic: {check.images} images since the last check < "
            f"{cfg.traffic.min_images} (detect_change.traffic.min_images): not tested"
        ]
    triggers: list[str] = []
    checks: list[str] = []
    drift, n = check.drift, check.images
    text = (
        f"served traffic drift: p-value {drift.p_value:.4f} ({n} served vs "
        f"{drift.n_reference} held-out images)"
    )
    (triggers if drift.p_value < cfg.alpha else checks).append(
        f"{text} {'<' if drift.p_value < cfg.alpha else '>='} alpha {cfg.alpha}"
    )
    drop = check.confidence_reference - check.confidence_served
    text = (
        f"served mean confidence {check.confidence_served:.3f} vs held-out "
        f"{check.confidence_reference:.3f}: drop {drop:+.3f}"
    )
    limit = cfg.traffic.max_confidence_drop
    (triggers if drop > limit else checks).append(f"{text} {'>' if drop > limit else '<='} {limit}")
    if not math.isnan(check.class_mix):
        text = f"served class mix shift {check.class_mix:.3f} (total variation)"
        shifted = check.class_mix > cfg.max_label_shift
        (triggers if shifted else checks).append(
            f"{text} {'>' if shifted else '<='} {cfg.max_label_shift}"
        )
    return triggers, checks


def _served_only(served: list[str], checks: list[str]) -> ChangeDecision:
    """Traffic that moved while the data did not: nothing to train on, the images need labels."""
    note = (
        "the served images moved away from what the champion was trained on, and the data "
        "holds nothing new to retrain on: label what it is asked about (keep the served "
        "images, serve.record.keep_images, and export them for select_labels: tlops data "
        "traffic --out <a folder of data.target_unlabeled>)"
    )
    return ChangeDecision(False, [*served, note, *checks], len(served), SKIP)


@dataclass(frozen=True)
class ChangeDecision:
    """Whether to retrain, and every check that was made (the first reasons decided it)."""

    retrain: bool  # a model is trained (action retrain or adapt)
    reasons: list[str]
    triggers: int = 0  # the first ``triggers`` reasons are what called for the retrain
    action: str = ""  # retrain | adapt | ask | skip; "" reads as retrain or skip

    def __post_init__(self) -> None:
        if not self.action:  # frozen: set once, here
            object.__setattr__(self, "action", RETRAIN if self.retrain else SKIP)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def decide(
    cfg: DetectChangeConfig,
    champion: str | None,
    counts: ChangeCounts | None,
    drift: MMDResult | None,
    shift: LabelShift | None,
    same_version: bool = False,
    held: str | None = None,
    traffic: TrafficCheck | None = None,
) -> ChangeDecision:
    """Apply the retraining policy.

    Args:
        cfg: The policy (params.yaml ``detect_change``).
        champion: The champion's version, or None when there is none.
        counts: What changed since the champion's data (None: the champion's manifest is not
            known, only whether the data version differs).
        drift: The MMD test of new against reference images (None: not run).
        shift: The label-distribution shift (None: not measurable).
        same_version: The data version is the one the champion was trained on.
        held: A challenger already adapted to exactly this data and held for labels (its
            version): no second adaptation while it waits.
        traffic: The champion's served traffic since the last check (None: not checked).
            When it calls for a change and the data holds nothing new, nothing is trained
            (the triggers lead the reasons): the images the model is asked about need labels.

    Returns:
        The decision; ``reasons`` lists the triggers first (drift before counts: it is the
        stronger signal), then the checks that passed.
    """
    triggers: list[str] = []
    checks: list[str] = []
    if cfg.force:
        triggers.append("forced (detect_change.force)")
    if champion is None:
        triggers.append("no champion yet")
        return ChangeDecision(True, triggers, len(triggers))
    served, served_checks = _traffic(cfg, traffic)  # its passed checks go last
    if same_version or (counts is not None and not counts.any):
        checks.append(f"{NO_NEW_DATA}: the data is what champion v{champion} was trained on")
        checks += served_checks
        if served and not triggers:  # the traffic moved, the data did not: labels are needed
            return _served_only(served, checks)
        return ChangeDecision(bool(triggers), triggers + served + checks, len(triggers + served))
    if served and not triggers and counts is not None and not counts.new_content:
        return _served_only(served, checks + served_checks)  # only removals: nothing to learn
    triggers = served + triggers
    if drift is not None:
        text = f"p-value {drift.p_value:.4f}"
        sizes = (
            f"(MMD^2 {drift.mmd2:.4g}, {drift.n_new} new vs {drift.n_reference} reference images)"
        )
        if drift.p_value < cfg.alpha:
            triggers.append(f"drift detected: {text} < alpha {cfg.alpha} {sizes}")
        else:
            checks.append(f"no drift: {text} >= alpha {cfg.alpha} {sizes}")
    elif counts is not None and counts.new_content:
        checks.append(f"drift not tested: {counts.new_content} new images < {cfg.min_drift_images}")
    if counts is None:
        triggers.append(
            f"data version differs from champion v{champion}'s (its image list is unknown)"
        )
    else:
        summary = f"{counts.added} added, {counts.changed} changed, {counts.removed} removed"
        if counts.new_content >= cfg.min_new_images:
            triggers.append(f"{counts.new_content} new images >= {cfg.min_new_images} ({summary})")
        else:
            checks.append(f"{counts.new_content} new images < {cfg.min_new_images} ({summary})")
    if shift is not None and (counts is None or counts.new_content > counts.new_unlabeled):
        text = f"label shift {shift.total_variation:.3f} (total variation)"
        if shift.total_variation > cfg.max_label_shift:
            triggers.append(f"{text} > {cfg.max_label_shift}")
        else:
            checks.append(f"{text} <= {cfg.max_label_shift}")
    checks += served_checks
    decision = ChangeDecision(bool(triggers), triggers + checks, len(triggers))
    return _for_labels(cfg, counts, decision, held)


def _for_labels(
    cfg: DetectChangeConfig,
    counts: ChangeCounts | None,
    decision: ChangeDecision,
    held: str | None = None,
) -> ChangeDecision:
    """The action when what called for a retrain holds no label: params ``unlabeled``.

    A forced run, a run without a champion and new content with labels retrain as before
    (strategies that learn from unlabeled images use the unlabeled part there too).
    """
    if not decision.retrain or counts is None or not counts.new_content:
        return decision
    if cfg.force or counts.new_unlabeled < counts.new_content:
        return decision
    action = cfg.unlabeled
    if action == ADAPT and held is not None:
        waiting = (
            f"v{held} was adapted to these {counts.new_content} unlabeled images and is held: "
            "it waits for their labels (select_labels, tlops labels pull); nothing is trained "
            "again on the same data"
        )
        return ChangeDecision(False, [waiting, *decision.reasons], 0, SKIP)
    plan = {
        ADAPT: f"adapt without labels ({cfg.adapt_strategy}, target_labels 0; held from "
        "promotion until scored on labeled images of the new data) and pick images to label",
        ASK: "pick the images a person should label (select_labels); train nothing yet",
        SKIP: "nothing is done with them",
    }[action]
    note = (
        f"the {counts.new_content} new images are unlabeled: {plan} (detect_change.unlabeled: "
        f"{action})"
    )
    cut = decision.triggers
    reasons = [*decision.reasons[:cut], note, *decision.reasons[cut:]]
    return ChangeDecision(action == ADAPT, reasons, decision.triggers, action)
