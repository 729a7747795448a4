"""KFP component ``evaluate``: the step's declaration as a typed KFP signature.

Generated from the step declarations (src/tlops/steps) by `tlops generate`; do not edit.
"""

from typing import Optional

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
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    summary: Output[Markdown],
    source_dataset: Optional[Input[Dataset]] = None,
) -> None:
    """Run step ``evaluate`` in a KFP task.

    Evaluate the model (and the champion, on the same split) on the test split.

    Args:
        params: The resolved params.yaml as JSON (a pipeline parameter).
        dataset: Output of ingest_data.
        model: Output of train.
        evaluation: metrics.json, evaluation.json, per_class.csv, predictions.csv, plots
        metrics: Scalar test metrics.
        confusion: The confusion matrix.
        summary: Candidate vs champion on the test split.
        source_dataset: Output of ingest_data for the source domain (domain adaptation: the distance
            of the domains' features before and after training).
    """
    from tlops.runner.execute import run_component
    from tlops.steps.evaluate import STEP

    run_component(
        STEP,
        params,
        {
            "dataset": dataset,
            "model": model,
            "source_dataset": source_dataset,
            "evaluation": evaluation,
            "metrics": metrics,
            "confusion": confusion,
            "summary": summary,
        },
    )
