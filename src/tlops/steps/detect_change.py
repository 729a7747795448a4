"""Step ``detect_change``: is there reason to retrain the champion on the target data now?

The first step of the ``retraining`` pipeline, after the data is ingested and validated. It
compares the data with what the champion was trained on: the data version (a tag of the
champion's model version), then image by image against the manifest logged with the champion
(added, removed and changed images per class), then in the champion's own feature space. The
drift test compares the new images with the champion's **held-out** images (its val and test
splits): the champion was fitted to its training images, so their features sit tighter than
those of any unseen image, and a test against them would flag drift in data that has none.
Features are cached per image content hash (:mod:`tlops.models.embed`), so a check with
nothing new costs a registry lookup and a manifest read.

The step opens the pipeline's MLflow run and logs the decision, its reasons and the
statistics. With no retrain it closes the run (a reviewer sees why nothing was trained);
otherwise ``train`` continues it. Output (``change``): ``change.json`` and ``summary.md``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.config import UNLABELED_SPLIT, Params
from tlops.data.dataset import ingest_info, load_manifest, require_validated, unlabeled_version
from tlops.evaluate.change import ADAPT, ASK, RETRAIN
from tlops.evaluate.drift import LabelShift, MMDResult, label_shift, mmd_test
from tlops.io import atomic_dir, write_json
from tlops.layout import CHANGE_FILE, IMAGES_DIR, MANIFEST_ARTIFACT, MANIFEST_FILE, SUMMARY_FILE
from tlops.runner.spec import Port, StepIO, StepResult, StepSpec, Tracking
from tlops.serving.monitor import UNTIL_TAG, HeldOut, check_traffic, held_out, last_check
from tlops.steps.ingest_data import dataset_input
from tlops.steps.validate_data import report_input
from tlops.tracking.held import adapted_to, held_on, same_data
from tlops.tracking.registry import CHAMPION, VersionInfo, run_artifact, version_with_alias

if TYPE_CHECKING:
    import pandas as pd

    from tlops.evaluate.change import ChangeCounts, ChangeDecision, TrafficCheck

HELD_OUT = ("val", "test")


def _champion_manifest(params: Params, champion: VersionInfo) -> pd.DataFrame | None:
    with tempfile.TemporaryDirectory() as tmp:
        found = run_artifact(params.tracking, champion.run_id, MANIFEST_ARTIFACT, Path(tmp))
        if found is None:
            return None
        if found.is_dir():
            found = found / MANIFEST_FILE
        return load_manifest(found.parent) if found.is_file() else None


def _drift(
    params: Params,
    held: HeldOut,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    images_root: Path,
) -> tuple[MMDResult | None, dict[str, Any]]:
    """The MMD test of the new images against the champion's held-out ones."""
    cfg = params.detect_change
    usable = current[current["decode_status"] == "ok"]
    new_rows = usable[~usable["sha256"].isin(set(reference["sha256"]))]
    new_pairs = [
        (sha, images_root / path)
        for sha, path in zip(new_rows["sha256"], new_rows["path"], strict=True)
    ]
    info: dict[str, Any] = {
        "reference_images": len(held.pairs),
        "reference_missing": held.missing,
        "new_images": len(new_pairs),
    }
    if len(new_pairs) < cfg.min_drift_images or len(held.pairs) < 2:
        return None, info
    started = time.perf_counter()
    ref_features, ref_embedded = held.embed(held.pairs)
    new_features, new_embedded = held.embed(new_pairs)
    info.update(
        embedded=ref_embedded + new_embedded,
        embed_seconds=time.perf_counter() - started,
    )
    started = time.perf_counter()
    result = mmd_test(ref_features, new_features, cfg.permutations, cfg.seed, cfg.max_samples)
    info["test_seconds"] = time.perf_counter() - started
    return result, info


VERDICTS = {
    "retrain": "RETRAIN",
    "adapt": "ADAPT without labels, and ask for labels",
    "ask": "ASK for labels: no retrain yet",
    "skip": "skip: no retrain",
}


def _summary(payload: dict[str, Any]) -> str:
    verdict = VERDICTS[payload["action"]]
    champion = payload["champion"]
    lines = [
        f"## detect_change: {verdict}",
        "",
        f"data version {payload['data_version']}; champion "
        + (f"v{champion['version']} (data {champion['data_version']})" if champion else "none"),
        "",
        *[f"- {reason}" for reason in payload["reasons"]],
    ]
    counts = payload.get("counts")
    if counts and counts["per_class"]:
        lines += ["", "| class | added | changed | removed |", "|---|---:|---:|---:|"]
        lines += [
            f"| {label} | {c['added']} | {c['changed']} | {c['removed']} |"
            for label, c in counts["per_class"].items()
        ]
    return "\n".join(lines) + "\n"


@dataclass
class _Found:
    """What the comparison with the champion's data found (nothing without a champion)."""

    counts: ChangeCounts | None = None
    drift: MMDResult | None = None
    shift: LabelShift | None = None
    drift_info: dict[str, Any] = field(default_factory=dict)
    same_version: bool = False


def _warm_start(
    params: Params, decision: ChangeDecision, unlabeled: str | None
) -> dict[str, Any] | None:
    """Where a retrain starts when not from the champion: the model adapted to these images.

    Once labels of the images a challenger was adapted to arrive, the retrain fine-tunes that
    model on them (adapt, then fine-tune), and the gate scores it on the labeled audit.
    """
    name = params.register_model.model_name
    adapted = adapted_to(params.tracking, name, unlabeled) if decision.action == RETRAIN else None
    if adapted is None:
        return None
    return {
        "version": adapted.version,
        "uri": adapted.uri,
        "reason": f"starts from v{adapted.version}, adapted without labels to these images and "
        "held for their labels, which have arrived",
    }


def _compare(
    params: Params,
    champion: VersionInfo,
    data_version: str,
    unlabeled: str | None,
    current: pd.DataFrame,
    ingest_dir: Path,
    reference: pd.DataFrame | None,
    held: HeldOut | None,
) -> _Found:
    """The data against the champion's: its version, the images per class, labels, drift."""
    from tlops.evaluate.change import compare_manifests

    found = _Found(same_version=same_data(champion, data_version, unlabeled))
    if found.same_version or reference is None or held is None:
        return found
    found.counts = compare_manifests(reference, current)
    new = current[
        (current["decode_status"] == "ok") & ~current["sha256"].isin(set(reference["sha256"]))
    ]
    ok = reference[reference["decode_status"] == "ok"]
    ok = ok[ok["split"] != UNLABELED_SPLIT]  # images without a label shift no label
    labeled = new[new["split"] != UNLABELED_SPLIT]
    classes = sorted(set(ok["label"]) | set(labeled["label"]))
    found.shift = label_shift(list(ok["label"]), list(labeled["label"]), classes)
    if found.counts.new_content:
        found.drift, found.drift_info = _drift(
            params, held, reference, current, ingest_dir / IMAGES_DIR
        )
    return found


def _served(params: Params, champion: VersionInfo, held: HeldOut | None) -> TrafficCheck | None:
    """The champion's served traffic since the last check (None: not checked)."""
    if not params.detect_change.traffic.check or held is None:
        return None
    return check_traffic(params, held, last_check(params, champion))


def _payload(
    params: Params,
    data_version: str,
    champion: VersionInfo | None,
    found: _Found,
    decision: ChangeDecision,
) -> dict[str, Any]:
    """``change.json`` (without ``seconds``): the decision, its reasons and statistics."""
    return {
        "retrain": decision.retrain,
        "action": decision.action,
        "reasons": list(decision.reasons),
        "triggers": decision.triggers,
        "data_version": data_version,
        "model_name": params.register_model.model_name,
        "champion": (
            {
                "version": champion.version,
                "run_id": champion.run_id,
                "data_version": champion.tags.get("data_version"),
                "uri": champion.uri,
            }
            if champion
            else None
        ),
        "counts": found.counts.as_dict() if found.counts else None,
        # what an adapt run trains instead of train.strategy (tlops.training.start.for_change)
        "overrides": (
            {"train.strategy": params.detect_change.adapt_strategy, "train.target_labels": 0}
            if decision.action == ADAPT
            else {}
        ),
        "drift": found.drift.as_dict() if found.drift else None,
        "drift_info": found.drift_info,
        "label_shift": found.shift.as_dict() if found.shift else None,
        "policy": params.detect_change.model_dump(mode="json"),
    }


def run(params: Params, io: StepIO) -> StepResult:
    """Decide whether the target data calls for a retrain.

    Args:
        params: Resolved params (reads ``detect_change``, ``register_model.model_name``,
            ``image``, ``tracking``, ``runtime``, ``extract_features.cache_dir``).
        io: Inputs ``dataset`` and ``report`` (the target's ingest and passed validation);
            output ``change`` (replaced).

    Returns:
        The action (``value``: retrain, adapt, ask or skip); ``change.json`` holds the payload.
    """
    from tlops.evaluate.change import decide

    started = time.perf_counter()
    cfg = params.detect_change
    ingest_dir = io.inputs["dataset"]
    ingest = ingest_info(ingest_dir)
    require_validated(io.inputs["report"], ingest)
    current = load_manifest(ingest_dir)
    name = params.register_model.model_name
    champion = version_with_alias(params.tracking, name, CHAMPION)
    versions = (ingest["data_version"], unlabeled_version(ingest))
    found, traffic = _Found(), None
    if champion is not None:
        reference = _champion_manifest(params, champion)
        # one reference for the drift test and the traffic check: the champion loads once
        held = None
        if reference is not None:
            held = held_out(params, champion, reference, current, ingest_dir / IMAGES_DIR)
        found = _compare(params, champion, *versions, current, ingest_dir, reference, held)
        traffic = _served(params, champion, held)
    decision = decide(
        cfg,
        champion.version if champion else None,
        found.counts,
        found.drift,
        found.shift,
        found.same_version,
        held_on(params.tracking, name, *versions) if champion is not None else None,
        traffic,
    )
    payload = _payload(params, ingest["data_version"], champion, found, decision)
    payload["traffic"] = traffic.as_dict() if traffic is not None else None
    payload["warm_start"] = _warm_start(params, decision, versions[1]) if champion else None
    if payload["warm_start"]:
        payload["reasons"].append(f"the retrain {payload['warm_start']['reason']}")
    payload["seconds"] = time.perf_counter() - started
    out_dir = io.outputs["change"]
    with atomic_dir(out_dir) as staging:
        write_json(staging / CHANGE_FILE, payload)
        (staging / SUMMARY_FILE).write_text(_summary(payload), encoding="utf-8")
    if io.run is not None:
        _log(io, payload, decision.retrain)
    return StepResult(
        f"detect_change: {VERDICTS[decision.action]}\n"
        + "\n".join(f"  - {r}" for r in payload["reasons"]),
        metadata={
            "change": {
                "retrain": decision.retrain,
                "action": decision.action,
                "reasons": payload["reasons"],
            }
        },
        views={"summary": out_dir / SUMMARY_FILE},
        value=decision.action,
        finished=not decision.retrain,
    )


def _log(io: StepIO, payload: dict[str, Any], retrain: bool) -> None:
    """The decision and its statistics on the pipeline's MLflow run."""
    champion = payload["champion"]
    tags: dict[str, Any] = {
        "detect_change.retrain": str(retrain).lower(),
        "detect_change.action": payload["action"],
        "detect_change.reasons": " | ".join(payload["reasons"]),
        "detect_change.champion": champion["version"] if champion else "none",
    }
    if not retrain:
        what = "labels asked" if payload["action"] == ASK else "skipped"
        tags["mlflow.runName"] = f"retraining check: {what} ({payload['reasons'][0]})"[:250]
    metrics: dict[str, float] = {"detect_change.seconds": payload["seconds"]}
    if payload["counts"]:
        counts = payload["counts"]
        metrics.update(
            {
                f"detect_change.{k}": counts[k]
                for k in ("added", "removed", "changed", "new_content")
            }
        )
    if payload["drift"]:
        metrics["detect_change.drift_p_value"] = payload["drift"]["p_value"]
        metrics["detect_change.mmd2"] = payload["drift"]["mmd2"]
    if payload["label_shift"]:
        metrics["detect_change.label_shift_tv"] = payload["label_shift"]["total_variation"]
    traffic = payload.get("traffic")
    if traffic and not traffic["error"]:
        metrics["detect_change.traffic_images"] = traffic["images"]
        if traffic["drift"]:
            tags[UNTIL_TAG] = repr(traffic["until"])  # a tested window: the next reads on
            metrics["detect_change.traffic_p_value"] = traffic["drift"]["p_value"]
            metrics["detect_change.traffic_confidence"] = traffic["confidence_served"]
            metrics["detect_change.traffic_class_mix"] = traffic["class_mix"]
    io.run.tags(tags)
    io.run.metrics(metrics)
    io.run.artifacts(
        [io.outputs["change"] / CHANGE_FILE, io.outputs["change"] / SUMMARY_FILE], "detect_change"
    )


# The step's declaration: what every runner (tlops step, dvc.yaml, KFP) is derived from.
STEP = StepSpec(
    name="detect_change",
    run=run,
    help="Compare the target data with the champion's: new, removed and changed images per "
    "class, drift in the champion's feature space (MMD permutation test), label shift; "
    "decide whether to retrain (params detect_change).",
    params=(
        "detect_change",
        "image",
        "register_model.model_name",
        "extract_features.cache_dir",
        "serve.record.uri",
        "runtime",
        "tracking",
    ),
    inputs=(
        dataset_input(),
        report_input(),
    ),
    outputs=(
        Port("change", "Artifact", "change.json (decision, reasons, statistics), summary.md"),
        Port("summary", "Markdown", "The decision and its reasons.", view=True),
    ),
    code=(
        "tlops.evaluate.change",
        "tlops.evaluate.drift",
        "tlops.models.embed",
        "tlops.serving.monitor",
        "tlops.tracking.registry",
    ),
    tracking=Tracking.OPENS,
    returns='The action: "retrain", "adapt" (without labels), "ask" (for labels) or "skip".',
    dvc=False,
)
