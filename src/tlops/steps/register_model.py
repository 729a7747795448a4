"""Step ``register_model``: log the model to MLflow, register a version, apply the gate.

The new version always gets the ``challenger`` alias; ``champion`` moves to it only when
:func:`tlops.evaluate.gate.should_promote` says so (the old champion becomes ``previous``).
Output (in ``out_dir``): ``decision.json`` (the decision, its reasons, the version, aliases).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlops.config import Params
from tlops.evaluate.gate import Decision, ModelScores, should_promote
from tlops.io import atomic_dir, read_json, write_json
from tlops.models.backbones import load_model
from tlops.steps.common import class_list, ingest_info, load_splits
from tlops.steps.evaluate import EVALUATION_FILE
from tlops.steps.train import MODEL_FILE, TRAIN_FILE
from tlops.tracking.registry import (
    aliases_of,
    describe,
    log_and_register,
    promote,
    to_pixels,
)
from tlops.tracking.runs import git_sha, log_artifacts, log_metrics, set_tags

DECISION_FILE = "decision.json"
EXAMPLE_IMAGES = 4


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


def run(
    params: Params,
    ingest_dir: Path,
    model_dir: Path,
    eval_dir: Path,
    out_dir: Path,
    run_id: str,
) -> RegisterResult:
    """Register the trained model and decide on promotion.

    Args:
        params: Resolved params (reads ``register_model``, ``tracking``, ``model``).
        ingest_dir: An ``ingest_data`` output (a few test images become the input example).
        model_dir: A ``train`` output.
        eval_dir: An ``evaluate`` output.
        out_dir: Output directory (replaced).
        run_id: The pipeline's MLflow run (required: the model is logged there).

    Returns:
        The version, its aliases and the decision with reasons.
    """
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
    started = time.perf_counter()
    registered = log_and_register(
        params.tracking, run_id, model, cfg.model_name, params.model.image_size, example, tags
    )
    log_metrics(params.tracking, run_id, {"model_logging_seconds": time.perf_counter() - started})
    previous = None
    if decision.promote:
        previous = promote(params.tracking, cfg.model_name, registered.version)
    aliases = aliases_of(params.tracking, cfg.model_name, registered.version)
    payload = {
        **decision.as_dict(),
        "model_name": cfg.model_name,
        "version": registered.version,
        "aliases": list(aliases),
        "previous_champion": previous,
        "model_uri": registered.model_uri,
        "run_id": run_id,
        "primary_metric": cfg.gate.primary_metric,
        "candidate": metrics.get(cfg.gate.primary_metric),
        "champion": (evaluation.get("champion") or {})
        .get("metrics", {})
        .get(cfg.gate.primary_metric),
    }
    with atomic_dir(out_dir) as staging:
        write_json(staging / DECISION_FILE, payload)
    set_tags(
        params.tracking,
        run_id,
        {
            "gate.promote": str(decision.promote).lower(),
            "gate.reasons": " | ".join(decision.reasons),
            "registered.version": registered.version,
            "registered.aliases": ",".join(aliases),
        },
    )
    log_artifacts(params.tracking, run_id, [out_dir / DECISION_FILE], "register_model")
    return RegisterResult(cfg.model_name, registered.version, aliases, decision, previous, out_dir)
