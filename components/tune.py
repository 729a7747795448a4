"""KFP component ``tune``: the step's declaration as a typed KFP signature.

Generated from the step declarations (src/tlops/steps) by `tlops generate`; do not edit.
"""

from typing import Optional

from kfp.dsl import Artifact, Dataset, Input, Output


def tune(
    params: str,
    dataset: Input[Dataset],
    report: Input[Artifact],
    tuned: Output[Artifact],
    checkpoint_root: str = "",
    features: Optional[Input[Dataset]] = None,
    source_dataset: Optional[Input[Dataset]] = None,
    source_report: Optional[Input[Artifact]] = None,
    change: Optional[Input[Artifact]] = None,
) -> None:
    """Run step ``tune`` in a KFP task.

    Search the strategy's hyperparameters (params tune) with the figure that picks train's best
    epoch; writes the best params as train's overrides.

    Args:
        params: The resolved params.yaml as JSON (a pipeline parameter).
        dataset: Output of ingest_data.
        report: Output of validate_data (it must have passed).
        tuned: tuned.json (the best params as train overrides, every trial), trials.csv, study.png
        checkpoint_root: Folder for per-epoch checkpoints (a PVC on a cluster; default: under
            extract_features.cache_dir).
        features: Output of extract_features (strategies that train on features).
        source_dataset: Output of ingest_data for the source domain (strategies that train on it).
        source_report: Output of validate_data for the source domain (it must have passed).
        change: Output of detect_change (retraining): warm start from the champion it names, logging
            into the run it opened.
    """
    from tlops.runner.execute import run_component
    from tlops.steps.tune import STEP

    run_component(
        STEP,
        params,
        {
            "dataset": dataset,
            "report": report,
            "features": features,
            "source_dataset": source_dataset,
            "source_report": source_report,
            "change": change,
            "tuned": tuned,
        },
        checkpoint_root=checkpoint_root,
    )
