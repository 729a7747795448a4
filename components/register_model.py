"""KFP component ``register_model``: the step's declaration as a typed KFP signature.

Generated from the step declarations (src/tlops/steps) by `tlops generate`; do not edit.
"""

from typing import Optional

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output


def register_model(
    params: str,
    dataset: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Artifact],
    decision: Output[Artifact],
    summary: Output[Markdown],
    change: Optional[Input[Artifact]] = None,
) -> None:
    """Run step ``register_model`` in a KFP task.

    Register the model in MLflow (alias challenger) and promote it to champion if the gate allows.

    Args:
        params: The resolved params.yaml as JSON (a pipeline parameter).
        dataset: Output of ingest_data (test images for the input example).
        model: Output of train.
        evaluation: Output of evaluate.
        decision: decision.json, summary.md
        summary: The decision and its reasons.
        change: Output of detect_change (retraining): a model adapted without labels is held.
    """
    from tlops.runner.execute import run_component
    from tlops.steps.register_model import STEP

    run_component(
        STEP,
        params,
        {
            "dataset": dataset,
            "model": model,
            "evaluation": evaluation,
            "change": change,
            "decision": decision,
            "summary": summary,
        },
    )
