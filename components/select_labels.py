"""KFP component ``select_labels``: the step's declaration as a typed KFP signature.

Generated from the step declarations (src/tlops/steps) by `tlops generate`; do not edit.
"""

from kfp.dsl import Artifact, Dataset, Input, Output


def select_labels(
    params: str,
    dataset: Input[Dataset],
    selection: Output[Artifact],
) -> None:
    """Run step ``select_labels`` in a KFP task.

    Pick the unlabeled target images a person should label first (params select_labels), beside a
    uniform audit sample; writes to_label.csv.

    Args:
        params: The resolved params.yaml as JSON (a pipeline parameter).
        dataset: Output of ingest_data.
        selection: to_label.csv (file, hash, role select/audit, score, reason, prediction),
            selection.json
    """
    from tlops.runner.execute import run_component
    from tlops.steps.select_labels import STEP

    run_component(
        STEP,
        params,
        {
            "dataset": dataset,
            "selection": selection,
        },
    )
