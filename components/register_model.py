"""KFP component ``register_model``: MLflow model version, aliases and the promotion decision."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output


def register_model(
    params: str,
    dataset: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Artifact],
    mlflow_run_id: str,
    decision: Output[Artifact],
    summary: Output[Markdown],
) -> str:
    """Register the model, apply the gate, close the MLflow run; returns the version.

    Args:
        params: The resolved params.yaml as JSON.
        dataset: Output of ingest_data (a few test images are the input example).
        model: Output of train.
        evaluation: Output of evaluate.
        mlflow_run_id: The pipeline's MLflow run (closed as FINISHED here).
        decision: Output: decision.json.
        summary: Output: the decision and its reasons (Markdown).
    """
    from tlops.components_runtime import register

    return register(params, dataset, model, evaluation, mlflow_run_id, decision, summary)
