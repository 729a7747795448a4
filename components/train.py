"""KFP component ``train``: the step's declaration as a typed KFP signature.

Generated from the step declarations (src/tlops/steps) by `tlops generate`; do not edit.
"""

from typing import Optional

from kfp.dsl import Artifact, Dataset, Input, Model, Output


def train(
    params: str,
    dataset: Input[Dataset],
    report: Input[Artifact],
    model: Output[Model],
    checkpoint_root: str = "",
    features: Optional[Input[Dataset]] = None,
    source_dataset: Optional[Input[Dataset]] = None,
    source_report: Optional[Input[Artifact]] = None,
    change: Optional[Input[Artifact]] = None,
    tuned: Optional[Input[Artifact]] = None,
) -> None:
    """Run step ``train`` in a KFP task.

    Train with the strategy train.strategy names; resumes a killed run from its last checkpoint.

    Args:
        params: The resolved params.yaml as JSON (a pipeline parameter).
        dataset: Output of ingest_data.
        report: Output of validate_data (it must have passed).
        model: model.pt, history, training curves, train.json
        checkpoint_root: Folder for per-epoch checkpoints (a PVC on a cluster; default: under
            extract_features.cache_dir).
        features: Output of extract_features (strategies that train on features).
        source_dataset: Output of ingest_data for the source domain (strategies that train on it).
        source_report: Output of validate_data for the source domain (it must have passed).
        change: Output of detect_change (retraining): warm start from the champion it names, logging
            into the run it opened.
        tuned: Output of tune (tune.trials > 0): its best params override train's.
    """
    from tlops.runner.execute import run_component
    from tlops.steps.train import STEP

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
            "model": model,
        },
        checkpoint_root=checkpoint_root,
    )
