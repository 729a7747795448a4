"""KFP component ``train``: fit the model with the configured strategy (GPU task, retried)."""

from kfp.dsl import Dataset, Input, Model, Output


def train(
    params: str,
    dataset: Input[Dataset],
    features: Input[Dataset],
    mlflow_run_id: str,
    checkpoint_root: str,
    model: Output[Model],
) -> float:
    """Train; a retried task resumes from the last checkpoint under ``checkpoint_root``.

    Args:
        params: The resolved params.yaml as JSON.
        dataset: Output of ingest_data.
        features: Output of extract_features.
        mlflow_run_id: The pipeline's MLflow run.
        checkpoint_root: Persistent folder for per-epoch checkpoints (a PVC on a cluster).
        model: Output: model.pt, history, training curves.
    """
    from tlops.components_runtime import fit

    return fit(params, dataset, features, mlflow_run_id, checkpoint_root, model)
