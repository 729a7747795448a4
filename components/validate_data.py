"""KFP component ``validate_data``: the Great Expectations suite; fails the pipeline on bad data."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Output


def validate_data(
    params: str,
    dataset: Input[Dataset],
    mlflow_run_id: str,
    report: Output[Artifact],
    data_docs: Output[HTML],
    summary: Output[Markdown],
) -> bool:
    """Validate the dataset; raise (stopping the pipeline) when a critical rule fails.

    Args:
        params: The resolved params.yaml as JSON.
        dataset: Output of ingest_data.
        mlflow_run_id: The pipeline's MLflow run (marked FAILED when validation fails).
        report: Output: GX results, Data Docs site, validation.json, summary.md.
        data_docs: Output: the Data Docs page of this validation (rendered by the KFP UI).
        summary: Output: the human summary (Markdown).
    """
    from tlops.components_runtime import validate

    return validate(params, dataset, mlflow_run_id, report, data_docs, summary)
