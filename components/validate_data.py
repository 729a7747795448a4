"""KFP component ``validate_data``: the step's declaration as a typed KFP signature.

Generated from the step declarations (src/tlops/steps) by `tlops generate`; do not edit.
"""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Output


def validate_data(
    params: str,
    dataset: Input[Dataset],
    report: Output[Artifact],
    data_docs: Output[HTML],
    summary: Output[Markdown],
) -> None:
    """Run step ``validate_data`` in a KFP task.

    Validate an ingested dataset with Great Expectations (against the champion's classes once there
    is one); fails listing every broken rule.

    Args:
        params: The resolved params.yaml as JSON (a pipeline parameter).
        dataset: Output of ingest_data.
        report: GX results, Data Docs, validation.json, summary.md
        data_docs: The Data Docs page of this validation.
        summary: The validation summary.
    """
    from tlops.runner.execute import run_component
    from tlops.steps.validate_data import STEP

    run_component(
        STEP,
        params,
        {
            "dataset": dataset,
            "report": report,
            "data_docs": data_docs,
            "summary": summary,
        },
    )
