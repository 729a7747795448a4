"""KFP component ``extract_features``: the step's declaration as a typed KFP signature.

Generated from src/tlops/steps/declarations.py by `tlops generate`; do not edit.
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

    run_component(
        "extract_features",
        params,
        {
            "dataset": dataset,
            "features": features,
        },
    )
