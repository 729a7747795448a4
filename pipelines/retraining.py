"""The ``retraining`` pipeline: retrain on new target data only when it calls for it.

ingest_data target -> validate_data target -> detect_change, then by its action (``dsl.If``):

- ``retrain``: [ingest_data and validate_data source, when the strategy uses it ->]
  [extract_features ->] train (warm-started from the champion detect_change names) ->
  evaluate (candidate and the champion on the same, updated test split) -> register_model
  (the gate; champion moved as a compare-and-set) -> deploy (a new champion served as a
  canary, where a cluster is configured);
- ``adapt`` (the new images are unlabeled): the same, with ``detect_change.adapt_strategy`` and
  no target label (register_model holds the model as a challenger: it was not scored on
  labeled images of the new data), and select_labels beside it;
- ``ask``: select_labels only;
- ``skip``: nothing.

A run that trains nothing still leaves an MLflow run with the decision, its reasons and the
drift statistics (detect_change opens and closes it).

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
from tlops.evaluate.change import ADAPT, ASK, RETRAIN


def adapted(cfg: Params) -> Params:
    """The params an ``adapt`` run trains with (what detect_change's overrides will say)."""
    from tlops.config.load import apply_overrides

    overrides = {"train.strategy": cfg.detect_change.adapt_strategy, "train.target_labels": 0}
    return apply_overrides(cfg, overrides, "detect_change.adapt_strategy")


def pipeline_name(cfg: Params) -> str:
    """``<kfp.pipeline_name>-retraining`` (``tlops-training`` -> ``tlops-retraining``)."""
    base = cfg.kfp.pipeline_name
    return base.replace("training", "retraining") if "training" in base else f"{base}-retraining"


def _train_branch(
    tasks: Tasks, check: Any, cfg: Params, checkpoint_root: Any, source_version: Any
) -> None:
    """[source data ->] the model steps of one branch, after detect_change."""
    after = [check]
    if "source" in domains_used(cfg):
        after.append(ingest_and_validate(tasks, "source", source_version, after=check))
    train_evaluate_register(tasks, cfg, checkpoint_root, after)


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
    adapt_cfg = adapted(cfg)

    def retraining(
        params: str = defaults,
        checkpoint_root: str = CHECKPOINT_MOUNT,
        data_version_target: str = "",
        data_version_source: str = "",
    ) -> Artifact:
        tasks = Tasks(steps, params)
        checked = ingest_and_validate(tasks, "target", data_version_target)
        check = tasks.add("detect_change")
        action = check.outputs["Output"]
        pipeline_args = (checkpoint_root, data_version_source)
        with dsl.If(action == RETRAIN, name="retrain"):
            _train_branch(tasks.branch(), check, cfg, *pipeline_args)
        with dsl.If(action == ADAPT, name="adapt"):
            branch = tasks.branch()
            _train_branch(branch, check, adapt_cfg, *pipeline_args)
            branch.add("select_labels")
        with dsl.If(action == ASK, name="ask-labels"):
            tasks.branch().add("select_labels")
        for step, task in tasks.added:
            cluster_settings(task, step, cfg, cache=False)
        assert checked is not None
        change: Artifact = check.outputs["change"]
        return change

    return dsl.pipeline(  # type: ignore[untyped-decorator]
        name=pipeline_name(cfg),
        description="Retraining: detect change and drift; retrain warm-started from the "
        "champion, or adapt to unlabeled images and ask for labels; promote safely.",
    )(retraining)
