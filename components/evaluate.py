"""KFP component ``evaluate``: test metrics, confusion matrix, calibration, vs the champion."""

from kfp.dsl import (
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)


def evaluate(
    params: str,
    dataset: Input[Dataset],
    model: Input[Model],
    mlflow_run_id: str,
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    evaluation: Output[Artifact],
    summary: Output[Markdown],
) -> float:
    """Evaluate on the test split; returns the primary metric.

    Args:
        params: The resolved params.yaml as JSON.
        dataset: Output of ingest_data.
        model: Output of train.
        mlflow_run_id: The pipeline's MLflow run.
        metrics: Output: scalar test metrics.
        confusion: Output: the confusion matrix (rendered by the KFP UI).
        evaluation: Output: metrics.json, evaluation.json, per_class.csv, plots.
        summary: Output: candidate vs champion table (Markdown).
    """
    from tlops.components_runtime import assess

    return assess(params, dataset, model, mlflow_run_id, metrics, confusion, evaluation, summary)
