"""KFP component ``extract_features``: frozen backbone features of every split (GPU task)."""

from kfp.dsl import Dataset, Input, Output


def extract_features(
    params: str,
    dataset: Input[Dataset],
    mlflow_run_id: str,
    features: Output[Dataset],
) -> float:
    """Extract features; returns images per second.

    Args:
        params: The resolved params.yaml as JSON.
        dataset: Output of ingest_data (validated).
        mlflow_run_id: The pipeline's MLflow run.
        features: Output: <split>.npy, <split>_index.csv, features.json.
    """
    from tlops.components_runtime import extract

    return extract(params, dataset, mlflow_run_id, features)
