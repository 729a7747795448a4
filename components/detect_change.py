"""KFP component ``detect_change``: the step's declaration as a typed KFP signature.

Generated from the step declarations (src/tlops/steps) by `tlops generate`; do not edit.
"""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output


def detect_change(
    params: str,
    dataset: Input[Dataset],
    report: Input[Artifact],
    change: Output[Artifact],
    summary: Output[Markdown],
) -> str:
    """Run step ``detect_change`` in a KFP task.

    Compare the target data with the champion's: new, removed and changed images per class, drift in
    the champion's feature space (MMD permutation test), label shift; decide whether to retrain
    (params detect_change).

    Args:
        params: The resolved params.yaml as JSON (a pipeline parameter).
        dataset: Output of ingest_data.
        report: Output of validate_data (it must have passed).
        change: change.json (decision, reasons, statistics), summary.md
        summary: The decision and its reasons.

    Returns:
        The action: "retrain", "adapt" (without labels), "ask" (for labels) or "skip".
    """
    from tlops.runner.execute import run_component
    from tlops.steps.detect_change import STEP

    return run_component(
        STEP,
        params,
        {
            "dataset": dataset,
            "report": report,
            "change": change,
            "summary": summary,
        },
    )
