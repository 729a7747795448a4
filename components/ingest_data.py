"""KFP component ``ingest_data``: the step's declaration as a typed KFP signature.

Generated from the step declarations (src/tlops/steps) by `tlops generate`; do not edit.
"""

from kfp.dsl import Dataset, Output


def ingest_data(
    params: str,
    dataset: Output[Dataset],
    domain: str = "target",
    data_version: str = "",
) -> None:
    """Run step ``ingest_data`` in a KFP task.

    Scan an ImageFolder (params `data.<domain>`) into a manifest, a data version and a snapshot of
    the images.

    Args:
        params: The resolved params.yaml as JSON (a pipeline parameter).
        dataset: manifest.csv, ingest.json, images/
        domain: Which entry of params.yaml `data` to ingest (target or source).
        data_version: Expected data version (DVC md5); the step fails if the data differs. On a
            cluster it is also the task's cache key.
    """
    from tlops.runner.execute import run_component
    from tlops.steps.ingest_data import STEP

    run_component(
        STEP,
        params,
        {
            "dataset": dataset,
        },
        domain=domain,
        data_version=data_version,
    )
