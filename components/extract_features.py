"""KFP component ``extract_features``: the step's declaration as a typed KFP signature.

Generated from the step declarations (src/tlops/steps) by `tlops generate`; do not edit.
"""

from kfp.dsl import Dataset, Input, Output


def extract_features(
    params: str,
    dataset: Input[Dataset],
    features: Output[Dataset],
) -> None:
    """Run step ``extract_features`` in a KFP task.

    Run the frozen backbone over every split and save the features.

    Args:
        params: The resolved params.yaml as JSON (a pipeline parameter).
        dataset: Output of ingest_data.
        features: <split>.npy, <split>_index.csv, features.json
    """
    from tlops.runner.execute import run_component
    from tlops.steps.extract_features import STEP

    run_component(
        STEP,
        params,
        {
            "dataset": dataset,
            "features": features,
        },
    )
