"""Step ``register_model``: log the model to MLflow, register a version, apply the gate.

The new version always gets the ``challenger`` alias; ``champion`` moves to it only when
:func:`tlops.evaluate.gate.should_promote` says so (the old champion becomes ``previous``), as a
compare-and-set under the registry's promotion lock (:mod:`tlops.tracking.promotion`): when
another run moved the champion since ``evaluate``, the gate is re-run against the new one on the
same test split. The training manifest is logged with the model (``data/manifest.csv``), so
``detect_change`` can later tell what is new to it.
Output (in the ``decision`` directory): ``decision.json`` (the decision, its reasons, the
version, aliases) and ``summary.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlops.config import Params
from tlops.data.dataset import class_list, ingest_info, load_splits
from tlops.evaluate.gate import Decision, ModelScores, should_promote
from tlops.io import atomic_dir, read_json, write_json
from tlops.layout import (
    DECISION_FILE,
    EVALUATION_FILE,
    MANIFEST_ARTIFACT,
    MANIFEST_FILE,
    MODEL_FILE,
    SUMMARY_FILE,
    TRAIN_FILE,
)
from tlops.models.init import load_model
from tlops.steps.evaluate import champion_scores
from tlops.steps.spec import StepIO, StepResult
from tlops.tracking.lifecycle import RunLog
from tlops.tracking.promotion import promote_if_current, promotion_lock
from tlops.tracking.registry import aliases_of, describe
from tlops.tracking.runs import client, git_sha
from tlops.tracking.serving import log_and_register, to_pixels

EXAMPLE_IMAGES = 1  # the input example is JSON: each 64 px image adds ~100 KB to write and validate


@dataclass(frozen=True)
class RegisterResult:
    """What ``register_model`` returns."""

    model_name: str
    version: str
    aliases: tuple[str, ...]
    decision: Decision
    previous_champion: str | None
    out_dir: Path


def scores(evaluation: dict[str, Any], key: str = "candidate") -> ModelScores | None:
    """Gate inputs from an ``evaluation.json`` (``key``: candidate or champion)."""
    if key == "champion":
        champion = evaluation.get("champion")
        if not champion:
            return None
        return ModelScores(
            champion["metrics"], {row["class"]: row["f1"] for row in champion["per_class"]}
        )
    return ModelScores(
        evaluation["overall"], {row["class"]: row["f1"] for row in evaluation["per_class"]}
    )


def run(params: Params, io: StepIO) -> StepResult:
    """Register the trained model and decide on promotion.

    Args:
        params: Resolved params (reads ``register_model``, ``tracking``, ``model``).
        io: Inputs ``dataset`` (a few test images become the input example), ``model`` and
            ``evaluation``; output ``decision`` (replaced). The model is logged into the MLflow
            run of the training that made it.

    Returns:
        The version, its aliases and the decision with reasons (``details``: a
        :class:`RegisterResult`).

    Raises:
        ValueError: The model directory carries no MLflow run (it was not made by ``train``).
    """
    ingest_dir, model_dir = io.inputs["dataset"], io.inputs["model"]
    eval_dir, out_dir = io.inputs["evaluation"], io.outputs["decision"]
    if not isinstance(io.run, RunLog):
        raise ValueError(f"{model_dir}: no MLflow run recorded there; train it with tlops")
    run_id = io.run.run_id
    cfg = params.register_model
    evaluation = read_json(eval_dir / EVALUATION_FILE)
    candidate = scores(evaluation)
    assert candidate is not None
    decision = should_promote(candidate, scores(evaluation, "champion"), cfg.gate)
    ingest = ingest_info(ingest_dir)
    classes = class_list(params, ingest)
    model = load_model(model_dir / MODEL_FILE)
    train_info = read_json(model_dir / TRAIN_FILE)
    test = load_splits(params, ingest_dir, classes, ("test",))["test"]
    example = to_pixels(test.images[:EXAMPLE_IMAGES])
    metrics = evaluation["overall"]
    tags = {
        "data_version": str(ingest["data_version"]),
        "git_sha": git_sha(),
        "backbone": params.model.backbone,
        "strategy": str(train_info["strategy"]),
        "init": str(train_info["init"]),
        "classes": ",".join(classes),
        "gate.promote": str(decision.promote).lower(),
        "gate.reasons": " | ".join(decision.reasons),
        **{f"test_{k}": describe(v) for k, v in metrics.items() if v is not None},
    }
    # the training manifest, so detect_change can later tell what is new to this model
    io.run.artifacts([ingest_dir / MANIFEST_FILE], MANIFEST_ARTIFACT.rpartition("/")[0])
    champion_info = evaluation.get("champion") or {}
    compared_with = evaluation.get("champion_version", champion_info.get("version"))

    def regate(found: str | None) -> Decision:
        """The gate against the champion in place now (it moved since evaluate)."""
        if found is None:
            return should_promote(candidate, None, cfg.gate)
        fresh, _, _note = champion_scores(params, ingest_dir, classes, test, found)
        if fresh is None:
            return should_promote(candidate, None, cfg.gate)
        return should_promote(candidate, scores({"champion": fresh}, "champion"), cfg.gate)

    # registration and promotion under one lock: a run that cannot get it registers nothing
    with promotion_lock(params.tracking, cfg.model_name, cfg.lock_timeout_s, cfg.lock_lease_s):
        started = time.perf_counter()
        registered = log_and_register(
            params.tracking, run_id, model, cfg.model_name, params.model.image_size, example, tags
        )
        io.run.metrics({"model_logging_seconds": time.perf_counter() - started})
        promotion = promote_if_current(
            params.tracking, cfg.model_name, registered.version, compared_with, decision, regate
        )
    decision, previous = promotion.decision, promotion.previous
    if promotion.regated:  # the version's gate tags say what was decided in the end
        final = {
            "gate.promote": str(decision.promote).lower(),
            "gate.reasons": " | ".join(decision.reasons),
            "gate.regated": f"champion {compared_with} -> {promotion.found}",
        }
        for key, value in final.items():
            client(params.tracking).set_model_version_tag(
                cfg.model_name, registered.version, key, value
            )
    aliases = aliases_of(params.tracking, cfg.model_name, registered.version)
    payload = {
        **decision.as_dict(),
        "model_name": cfg.model_name,
        "version": registered.version,
        "aliases": list(aliases),
        "previous_champion": previous,
        "compared_with": compared_with,
        "champion_at_promotion": promotion.found,
        "regated": promotion.regated,
        "model_uri": registered.model_uri,
        "run_id": run_id,
        "primary_metric": cfg.gate.primary_metric,
        "candidate": metrics.get(cfg.gate.primary_metric),
        "champion": (evaluation.get("champion") or {})
        .get("metrics", {})
        .get(cfg.gate.primary_metric),
    }
    verdict = "PROMOTED to champion" if decision.promote else "not promoted"
    reasons = [f"- {reason}" for reason in decision.reasons]
    with atomic_dir(out_dir) as staging:
        write_json(staging / DECISION_FILE, payload)
        (staging / SUMMARY_FILE).write_text(
            "\n".join(
                [f"## {cfg.model_name} version {registered.version}: {verdict}", "", *reasons]
            )
            + f"\n\naliases: {', '.join(aliases)}\n",
            encoding="utf-8",
        )
    io.run.tags(
        {
            "gate.promote": str(decision.promote).lower(),
            "gate.reasons": " | ".join(decision.reasons),
            "registered.version": registered.version,
            "registered.aliases": ",".join(aliases),
        }
    )
    io.run.artifacts([out_dir / DECISION_FILE], "register_model")
    result = RegisterResult(
        cfg.model_name, registered.version, aliases, decision, previous, out_dir
    )
    return StepResult(
        f"register_model: {cfg.model_name} v{registered.version} {verdict}; aliases: "
        f"{', '.join(aliases)}\n" + "\n".join(f"  {reason}" for reason in reasons),
        metadata={
            "decision": {
                "version": registered.version,
                "aliases": list(aliases),
                "promote": decision.promote,
                "model_name": cfg.model_name,
            }
        },
        views={"summary": out_dir / SUMMARY_FILE},
        details=result,
    )
