"""KFP component ``ingest_data``: an ImageFolder directory -> Dataset (snapshot + manifest)."""

from typing import NamedTuple

from kfp.dsl import Dataset, Output


def ingest_data(
    params: str,
    data_dir: str,
    domain: str,
    expected_data_version: str,
    mlflow_run_id: str,
    dataset: Output[Dataset],
) -> NamedTuple("IngestOutputs", [("data_version", str), ("mlflow_run_id", str)]):
    """Scan the data, write the manifest and snapshot; start the MLflow run if none is given.

    Args:
        params: The resolved params.yaml as JSON (a pipeline parameter).
        data_dir: The ImageFolder directory, as the task sees it.
        domain: ``source`` or ``target`` (recorded in the dataset's metadata).
        expected_data_version: If not empty, the data must have this version (it is also the
            key under which KFP caches this task).
        mlflow_run_id: The pipeline's MLflow run; empty to start one (the first task).
        dataset: Output Dataset: manifest.csv, ingest.json, images/.
    """
    from collections import namedtuple
    from pathlib import Path

    from tlops.components_runtime import ingest

    version, run_id = ingest(
        params, Path(data_dir), domain, expected_data_version, mlflow_run_id, dataset
    )
    IngestOutputs = namedtuple("IngestOutputs", ["data_version", "mlflow_run_id"])
    return IngestOutputs(version, run_id)
