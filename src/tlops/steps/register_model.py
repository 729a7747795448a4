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

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.config import Params
from tlops.data.dataset import class_list, ingest_info, load_splits
from tlops.evaluate.gate import Decision, ModelScores, held, should_promote, verdict_of
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
from tlops.runner.spec import Port, StepIO, StepResult, StepSpec, Tracking
from tlops.steps.ingest_data import dataset_input
from tlops.tracking.held import HELD_TAG, HELD_UNLABELED, hold_reason
from tlops.tracking.lifecycle import RunLog, is_release
from tlops.tracking.promotion import Promotion, promote_if_current, promotion_lock
from tlops.tracking.registry import aliases_of, describe
from tlops.tracking.report import (
    DESCRIPTION_TAG,
    KEY_ARTIFACTS,
    run_description,
    version_description,
)
from tlops.tracking.runs import client, git_sha

if TYPE_CHECKING:
    from tlops.data.tensors import SplitTensors
    from tlops.models.model import TransferModel
    from tlops.tracking.serving import Registered


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


@dataclass(frozen=True)
class _Inputs:
    """What ``register_model`` reads before it registers anything."""

    run: RunLog
    ingest_dir: Path
    eval_dir: Path
    evaluation: dict[str, Any]
    candidate: ModelScores
    decision: Decision  # the gate against the champion evaluate compared with
    compared_with: str | None  # that champion's version
    classes: list[str]
    test: SplitTensors
    model: TransferModel
    train_info: dict[str, Any]
    example: bytes
    tags: dict[str, str]
    hold: str | None  # why the gate may not promote, whatever the scores (adapted, unscored)


@dataclass(frozen=True)
class _Registration:
    """What registering (and, in a release, promoting) did."""

    name: str
    release: bool
    registered: Registered
    decision: Decision  # the decision applied (re-gated when the champion had moved)
    promotion: Promotion | None


def run(params: Params, io: StepIO) -> StepResult:
    """Register the trained model and decide on promotion.

    Args:
        params: Resolved params (reads ``register_model``, ``tracking``, ``model``).
        io: Inputs ``dataset`` (a few test images become the input example), ``model`` and
            ``evaluation``; output ``decision`` (replaced). The model is logged into the MLflow
            run of the training that made it.

    Returns:
        The version, its aliases and the decision with reasons: the console line, the
        ``decision`` metadata and the summary view.

    Raises:
        ValueError: The model directory carries no MLflow run (it was not made by ``train``).
    """
    inputs = _resolve(params, io)
    # the training manifest, so detect_change can later tell what is new to this model
    inputs.run.artifacts([inputs.ingest_dir / MANIFEST_FILE], MANIFEST_ARTIFACT.rpartition("/")[0])
    done = _register(params, inputs)
    name, registered, decision = done.name, done.registered, done.decision
    aliases = aliases_of(params.tracking, name, registered.version)
    payload = _payload(params, inputs, done, aliases)
    verdict = verdict_of(decision.promote, done.release)
    reasons = [f"- {reason}" for reason in decision.reasons]
    out_dir = io.outputs["decision"]
    _write(out_dir, payload, f"## {name} version {registered.version}: {verdict}", reasons)
    headline = f"{name} v{registered.version}: {verdict}"
    _describe(params, inputs, done, payload, headline)
    _log(inputs, done, aliases, headline, out_dir)
    return StepResult(
        f"register_model: {name} v{registered.version} {verdict}; aliases: "
        f"{', '.join(aliases) or 'none'}\n" + "\n".join(f"  {reason}" for reason in reasons),
        metadata={
            "decision": {
                "version": registered.version,
                "aliases": list(aliases),
                "promote": decision.promote,
                "released": done.release,
                "model_name": name,
            }
        },
        views={"summary": out_dir / SUMMARY_FILE},
    )


def _resolve(params: Params, io: StepIO) -> _Inputs:
    """Read the evaluation, the model and the data; the first gate decision and the tags."""
    from tlops.models.init import load_model

    ingest_dir, model_dir = io.inputs["dataset"], io.inputs["model"]
    eval_dir = io.inputs["evaluation"]
    if not isinstance(io.run, RunLog):
        raise ValueError(f"{model_dir}: no MLflow run recorded there; train it with tlops")
    cfg = params.register_model
    evaluation = read_json(eval_dir / EVALUATION_FILE)
    candidate = scores(evaluation)
    assert candidate is not None
    hold = hold_reason(io.inputs.get("change"))
    decision = held(should_promote(candidate, scores(evaluation, "champion"), cfg.gate), hold)
    ingest = ingest_info(ingest_dir)
    classes = class_list(params, ingest)
    model = load_model(model_dir / MODEL_FILE)
    train_info = read_json(model_dir / TRAIN_FILE)
    test = load_splits(params, ingest_dir, classes, ("test",))["test"]
    # the input example is what a client sends: the file of a test image, as it was ingested
    example = (ingest_dir / IMAGES_DIR / test.paths[0]).read_bytes()
    primary = cfg.gate.primary_metric
    # a handful of tags to filter versions by; the decision and its reasons are the description
    tags = {
        "data_version": str(ingest["data_version"]),
        "git_sha": git_sha(),
        "strategy": str(train_info["strategy"]),
        "backbone": params.model.backbone,
        "classes": ",".join(classes),
        "gate.promote": str(decision.promote).lower(),
        f"test.{primary}": describe(evaluation["overall"].get(primary)),
    }
    if ingest.get("unlabeled"):  # detect_change tells data trained on from new data by both
        tags["unlabeled_data_version"] = str(ingest["unlabeled"]["data_version"])
    if hold is not None:
        tags[HELD_TAG] = HELD_UNLABELED
    if train_info.get("tuned"):  # the tune step's best params it was trained with
        tags["tuned"] = json.dumps(train_info["tuned"]["params"], sort_keys=True)
    champion_info = evaluation.get("champion") or {}
    compared_with = evaluation.get("champion_version", champion_info.get("version"))
    return _Inputs(
        run=io.run,
        ingest_dir=ingest_dir,
        eval_dir=eval_dir,
        evaluation=evaluation,
        candidate=candidate,
        decision=decision,
        compared_with=compared_with,
        classes=classes,
        test=test,
        model=model,
        train_info=train_info,
        example=example,
        tags=tags,
        hold=hold,
    )


def _regate(params: Params, inputs: _Inputs, found: str | None) -> Decision:
    """The gate against the champion in place now (it moved since evaluate)."""
    gate = params.register_model.gate
    if found is None:
        return held(should_promote(inputs.candidate, None, gate), inputs.hold)
    # here only: the champion moved since evaluate, so it is scored again on the test split
    from tlops.evaluate.scoring import champion_scores

    fresh, _, _note = champion_scores(params, inputs.ingest_dir, inputs.classes, inputs.test, found)
    champion = None if fresh is None else scores({"champion": fresh}, "champion")
    return held(should_promote(inputs.candidate, champion, gate), inputs.hold)


def _register(params: Params, inputs: _Inputs) -> _Registration:
    """Log and register the model; in a release, move the champion if the gate says so."""
    from tlops.tracking.serving import log_and_register

    cfg = params.register_model
    release = is_release(params)
    name = cfg.model_name if release else cfg.experiments_name()
    decision, promotion = inputs.decision, None
    run_id = inputs.run.run_id
    log_args = (params.tracking, run_id, inputs.model, name, params.image, inputs.example)
    started = time.perf_counter()
    if release:
        # registration and promotion under one lock: a run that cannot get it registers nothing
        with promotion_lock(params.tracking, name, cfg.lock_timeout_s, cfg.lock_lease_s):
            registered = log_and_register(*log_args, inputs.tags)
            promotion = promote_if_current(
                params.tracking,
                name,
                registered.version,
                inputs.compared_with,
                decision,
                functools.partial(_regate, params, inputs),
            )
        decision = promotion.decision
        if promotion.regated:  # the version's gate tag says what was decided in the end
            client(params.tracking).set_model_version_tag(
                name, registered.version, "gate.promote", str(decision.promote).lower()
            )
    else:  # an experiment: its own registered model, no alias moves
        registered = log_and_register(*log_args, inputs.tags, alias=None)
    inputs.run.metrics({"model_logging_seconds": time.perf_counter() - started})
    return _Registration(name, release, registered, decision, promotion)


def _payload(
    params: Params, inputs: _Inputs, done: _Registration, aliases: tuple[str, ...]
) -> dict[str, Any]:
    """``decision.json``: the decision, where the version is, what it was compared with."""
    promotion, evaluation, run_id = done.promotion, inputs.evaluation, inputs.run.run_id
    primary = params.register_model.gate.primary_metric
    return {
        **done.decision.as_dict(),
        "released": done.release,
        "model_name": done.name,
        "version": done.registered.version,
        "aliases": list(aliases),
        "previous_champion": promotion.previous if promotion is not None else None,
        "compared_with": inputs.compared_with,
        "champion_at_promotion": promotion.found if promotion is not None else None,
        "regated": promotion.regated if promotion is not None else False,
        "model_uri": done.registered.model_uri,
        "run_id": run_id,
        # where the run is in the UI: the caller's summary links it without opening the store
        "experiment_id": str(client(params.tracking).get_run(run_id).info.experiment_id),
        "primary_metric": primary,
        "candidate": evaluation["overall"].get(primary),
        "champion": (evaluation.get("champion") or {}).get("metrics", {}).get(primary),
    }


def _write(out_dir: Path, payload: dict[str, Any], title: str, reasons: list[str]) -> None:
    """The ``decision`` output: ``decision.json`` and ``summary.md``."""
    with atomic_dir(out_dir) as staging:
        write_json(staging / DECISION_FILE, payload)
        (staging / SUMMARY_FILE).write_text(
            "\n".join([title, "", *reasons])
            + f"\n\naliases: {', '.join(payload['aliases']) or 'none'}\n",
            encoding="utf-8",
        )


def _describe(
    params: Params,
    inputs: _Inputs,
    done: _Registration,
    payload: dict[str, Any],
    headline: str,
) -> None:
    """The version's description in the registry: the verdict, its reasons, the figures."""
    promotion = done.promotion
    client(params.tracking).update_model_version(
        done.name,
        done.registered.version,
        description=version_description(
            headline,
            done.decision.reasons,
            payload["primary_metric"],
            payload["candidate"],
            payload["champion"],
        )
        + (
            f"\nre-gated: champion {inputs.compared_with} -> {promotion.found}\n"
            if promotion is not None and promotion.regated
            else ""
        ),
    )


def _log(
    inputs: _Inputs, done: _Registration, aliases: tuple[str, ...], headline: str, out_dir: Path
) -> None:
    """The decision on the run: gate and registration tags, its description, decision.json."""
    decision = done.decision
    plots = [a for a in KEY_ARTIFACTS if a.endswith(".png") and (inputs.eval_dir / a).is_file()]
    inputs.run.tags(
        {
            "gate.promote": str(decision.promote).lower(),
            "gate.reasons": " | ".join(decision.reasons),
            "registered.model": done.name,
            "registered.version": done.registered.version,
            "registered.aliases": ",".join(aliases),
            "release": str(done.release).lower(),
            DESCRIPTION_TAG: run_description(
                headline=headline,
                reasons=decision.reasons,
                evaluation=inputs.evaluation,
                trained=inputs.train_info,
                run_id=inputs.run.run_id,
                plots=plots,
            ),
        }
    )
    inputs.run.artifacts([out_dir / DECISION_FILE], None)  # at the root: the compare view shows it


# The step's declaration: what every runner (tlops step, dvc.yaml, KFP) is derived from.
STEP = StepSpec(
    name="register_model",
    run=run,
    help="Register the model in MLflow (alias challenger) and promote it to champion if "
    "the gate allows.",
    params=(
        "register_model",
        "model.image_size",
        "image",
        "validate_data.classes",
        "tracking",
    ),
    inputs=(
        dataset_input(
            "dataset",
            "Output of ingest_data (test images for the input example).",
        ),
        Port("model", "Model", "Output of train.", producer=("train", "model")),
        Port("evaluation", "Artifact", "Output of evaluate.", producer=("evaluate", "evaluation")),
        Port(
            "change",
            "Artifact",
            "Output of detect_change (retraining): a model adapted without labels is held.",
            optional=True,
            producer=("detect_change", "change"),
        ),
    ),
    outputs=(
        Port(
            "decision",
            "Artifact",
            "decision.json, summary.md",
            files={"decision.json": "uncached", "summary.md": "uncached"},
        ),
        Port("summary", "Markdown", "The decision and its reasons.", view=True),
    ),
    code=("tlops.evaluate.gate", "tlops.evaluate.scoring", "tlops.tracking.registry"),
    tracking=Tracking.CLOSES,
)
