"""The ``retraining`` pipeline: retrain on new target data only when it calls for it.

ingest_data target -> validate_data target -> detect_change -> if it says retrain (``dsl.If``):
[ingest_data and validate_data source, when the strategy uses it ->] [extract_features ->]
train (warm-started from the champion detect_change names) -> evaluate (candidate and the
champion on the same, updated test split) -> register_model (the gate; champion moved as a
compare-and-set). A run that does not retrain still leaves an MLflow run with the decision,
its reasons and the drift statistics (detect_change opens and closes it).

It is built for recurring runs, which cannot know the version of the data they will find: the
data steps are never cached, and ``data_version_target`` may be left empty.
"""

from typing import Any

from pipelines.training import (
    CHECKPOINT_MOUNT,
    cluster_settings,
    domains_used,
    ingest_and_validate,
    train_evaluate_register,
)
from pipelines.wiring import Tasks
from tlops.config import Params

RETRAIN = "true"  # what detect_change returns when the data calls for a retrain


def pipeline_name(cfg: Params) -> str:
    """``<kfp.pipeline_name>-retraining`` (``tlops-training`` -> ``tlops-retraining``)."""
    base = cfg.kfp.pipeline_name
    return base.replace("training", "retraining") if "training" in base else f"{base}-retraining"


def build_retraining_pipeline(cfg: Params) -> Any:
    """The retraining pipeline for these params (defaults, strategy and cluster settings).

    Args:
        cfg: Resolved params; their values become the pipeline's defaults.

    Returns:
        A KFP pipeline function; its output is detect_change's ``change`` (the decision).
    """
    import json

    from components import build_components
    from kfp import dsl
    from kfp.dsl import Artifact

    steps = build_components(cfg.kfp.base_image)
    defaults = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    domains = domains_used(cfg)

    def retraining(
        params: str = defaults,
        checkpoint_root: str = CHECKPOINT_MOUNT,
        data_version_target: str = "",
        data_version_source: str = "",
    ) -> Artifact:
        tasks = Tasks(steps, params)
        checked = ingest_and_validate(tasks, "target", data_version_target)
        check = tasks.add("detect_change")
        with dsl.If(check.outputs["Output"] == RETRAIN, name="retrain"):
            after = [check]
            if "source" in domains:
                after.append(ingest_and_validate(tasks, "source", data_version_source, after=check))
            train_evaluate_register(tasks, cfg, checkpoint_root, after)
        for step, task in tasks.added:
            cluster_settings(task, step, cfg, cache=False)
        assert checked is not None
        change: Artifact = check.outputs["change"]
        return change

    return dsl.pipeline(  # type: ignore[untyped-decorator]
        name=pipeline_name(cfg),
        description="Retraining: detect change and drift, retrain warm-started from the "
        "champion, promote safely.",
    )(retraining)
