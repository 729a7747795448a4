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
from tlops.evaluate.gate import Decision, ModelScores, should_promote, verdict_of
from tlops.io import atomic_dir, read_json, write_json
from tlops.layout import (
    DECISION_FILE,
    EVALUATION_FILE,
    IMAGES_DIR,
    MANIFEST_ARTIFACT,
    MANIFEST_FILE,
    MODEL_FILE,
    SUMMARY_FILE,
    TRAIN_FILE,
)
from tlops.models.init import load_model
from tlops.runner.spec import StepIO, StepResult
from tlops.tracking.lifecycle import RunLog, runner
from tlops.tracking.promotion import Promotion, promote_if_current, promotion_lock
from tlops.tracking.registry import aliases_of, describe
from tlops.tracking.report import (
    DESCRIPTION_TAG,
    KEY_ARTIFACTS,
    run_description,
    version_description,
)
from tlops.tracking.runs import client, git_sha
from tlops.tracking.serving import log_and_register


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


def is_release(params: Params) -> bool:
    """Whether this run is a release (``register_model.release``; auto: the KFP pipeline)."""
    setting = params.register_model.release
    return setting == "true" or (setting == "auto" and runner() == "kfp")


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
    # the input example is what a client sends: the file of a test image, as it was ingested
    example = (ingest_dir / IMAGES_DIR / test.paths[0]).read_bytes()
    metrics = evaluation["overall"]
    primary = cfg.gate.primary_metric
    # a handful of tags to filter versions by; the decision and its reasons are the description
    tags = {
        "data_version": str(ingest["data_version"]),
        "git_sha": git_sha(),
        "strategy": str(train_info["strategy"]),
        "backbone": params.model.backbone,
        "classes": ",".join(classes),
        "gate.promote": str(decision.promote).lower(),
        f"test.{primary}": describe(metrics.get(primary)),
    }
    # the training manifest, so detect_change can later tell what is new to this model
    io.run.artifacts([ingest_dir / MANIFEST_FILE], MANIFEST_ARTIFACT.rpartition("/")[0])
    champion_info = evaluation.get("champion") or {}
    compared_with = evaluation.get("champion_version", champion_info.get("version"))

    def regate(found: str | None) -> Decision:
        """The gate against the champion in place now (it moved since evaluate)."""
        if found is None:
            return should_promote(candidate, None, cfg.gate)
        # here only: the champion moved since evaluate, so it is scored again on the test split
        from tlops.steps.evaluate import champion_scores

        fresh, _, _note = champion_scores(params, ingest_dir, classes, test, found)
        if fresh is None:
            return should_promote(candidate, None, cfg.gate)
        return should_promote(candidate, scores({"champion": fresh}, "champion"), cfg.gate)

    release = is_release(params)
    name = cfg.model_name if release else cfg.experiments_name()
    promotion: Promotion | None = None
    started = time.perf_counter()
    if release:
        # registration and promotion under one lock: a run that cannot get it registers nothing
        with promotion_lock(params.tracking, name, cfg.lock_timeout_s, cfg.lock_lease_s):
            registered = log_and_register(
                params.tracking, run_id, model, name, params.image, example, tags
            )
            promotion = promote_if_current(
                params.tracking, name, registered.version, compared_with, decision, regate
            )
        decision = promotion.decision
        if promotion.regated:  # the version's gate tag says what was decided in the end
            client(params.tracking).set_model_version_tag(
                name, registered.version, "gate.promote", str(decision.promote).lower()
            )
    else:  # an experiment: its own registered model, no alias moves
        registered = log_and_register(
            params.tracking, run_id, model, name, params.image, example, tags, alias=None
        )
    io.run.metrics({"model_logging_seconds": time.perf_counter() - started})
    previous = promotion.previous if promotion is not None else None
    aliases = aliases_of(params.tracking, name, registered.version)
    payload = {
        **decision.as_dict(),
        "released": release,
        "model_name": name,
        "version": registered.version,
        "aliases": list(aliases),
        "previous_champion": previous,
        "compared_with": compared_with,
        "champion_at_promotion": promotion.found if promotion is not None else None,
        "regated": promotion.regated if promotion is not None else False,
        "model_uri": registered.model_uri,
        "run_id": run_id,
        # where the run is in the UI: the caller's summary links it without opening the store
        "experiment_id": str(client(params.tracking).get_run(run_id).info.experiment_id),
        "primary_metric": primary,
        "candidate": metrics.get(primary),
        "champion": (evaluation.get("champion") or {}).get("metrics", {}).get(primary),
    }
    verdict = verdict_of(decision.promote, release)
    reasons = [f"- {reason}" for reason in decision.reasons]
    with atomic_dir(out_dir) as staging:
        write_json(staging / DECISION_FILE, payload)
        (staging / SUMMARY_FILE).write_text(
            "\n".join([f"## {name} version {registered.version}: {verdict}", "", *reasons])
            + f"\n\naliases: {', '.join(aliases) or 'none'}\n",
            encoding="utf-8",
        )
    headline = f"{name} v{registered.version}: {verdict}"
    client(params.tracking).update_model_version(
        name,
        registered.version,
        description=version_description(
            headline, decision.reasons, primary, payload["candidate"], payload["champion"]
        )
        + (
            f"\nre-gated: champion {compared_with} -> {promotion.found}\n"
            if promotion is not None and promotion.regated
            else ""
        ),
    )
    plots = [a for a in KEY_ARTIFACTS if a.endswith(".png") and (eval_dir / a).is_file()]
    io.run.tags(
        {
            "gate.promote": str(decision.promote).lower(),
            "gate.reasons": " | ".join(decision.reasons),
            "registered.model": name,
            "registered.version": registered.version,
            "registered.aliases": ",".join(aliases),
            "release": str(release).lower(),
            DESCRIPTION_TAG: run_description(
                headline=headline,
                reasons=decision.reasons,
                evaluation=evaluation,
                trained=train_info,
                run_id=run_id,
                plots=plots,
            ),
        }
    )
    io.run.artifacts([out_dir / DECISION_FILE], None)  # at the root: the compare view shows it
    result = RegisterResult(name, registered.version, aliases, decision, previous, out_dir)
    return StepResult(
        f"register_model: {name} v{registered.version} {verdict}; aliases: "
        f"{', '.join(aliases) or 'none'}\n" + "\n".join(f"  {reason}" for reason in reasons),
        metadata={
            "decision": {
                "version": registered.version,
                "aliases": list(aliases),
                "promote": decision.promote,
                "released": release,
                "model_name": name,
            }
        },
        views={"summary": out_dir / SUMMARY_FILE},
        details=result,
    )
