"""The MLflow run of a pipeline run: one run, created first, that every step logs into.

Steps receive the run id and log with :class:`mlflow.MlflowClient` calls that name it, so a
step needs no "active run" state and the same code works in-process, in a DVC stage or in a
KFP component on another machine.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tlops.config import TrackingConfig

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# Makes the MLflow 3 UI open the experiment as model training (runs, charts), not GenAI views.
EXPERIMENT_KIND = "custom_model_development"


def tracking_uri(cfg: TrackingConfig) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``tracking.tracking_uri`` from params."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking_uri


def store_exists(cfg: TrackingConfig) -> bool:
    """False for an embedded SQLite store whose file does not exist yet (nothing is in it)."""
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).is_file()
    return True


def client(cfg: TrackingConfig) -> Any:
    """An MlflowClient on the configured store (also sets the process-wide tracking URI)."""
    import mlflow

    # MLflow's artifact download bars would interleave with tlops' own output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri(cfg)
    user_uri = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; put back what the user had, so a
    # later call with other params in the same process is not overridden by this one's URI
    if user_uri is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = user_uri
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(cfg: TrackingConfig) -> str:
    """Create the experiment if needed (artifacts under ``tracking.artifact_location``)."""
    mlflow_client = client(cfg)
    experiment = mlflow_client.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        experiment_id = str(experiment.experiment_id)
    else:
        location = None
        if not tracking_uri(cfg).startswith(("http://", "https://", "databricks")):
            location = cfg.artifact_location.resolve().as_uri()
        experiment_id = str(mlflow_client.create_experiment(cfg.experiment, location))
    mlflow_client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment_id


def git_sha(cwd: Path | None = None) -> str:
    """The commit of the working tree (``-dirty`` when it has changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def start_run(
    cfg: TrackingConfig, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]
) -> str:
    """Create the pipeline's MLflow run, log the resolved params, return its id."""
    from mlflow.entities import Param, RunTag

    mlflow_client = client(cfg)
    experiment_id = ensure_experiment(cfg)
    run = mlflow_client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
    items = [Param(key, str(value)[:6000]) for key, value in params.items()]
    for start in range(0, len(items), 100):
        mlflow_client.log_batch(run.info.run_id, params=items[start : start + 100])
    mlflow_client.log_batch(run.info.run_id, tags=[RunTag("tlops.status", "running")])
    return str(run.info.run_id)


def log_metrics(
    cfg: TrackingConfig, run_id: str | None, metrics: Mapping[str, float], step: int | None = None
) -> None:
    """Log finite metrics into ``run_id`` (no-op without a run)."""
    import math

    from mlflow.entities import Metric

    if run_id is None:
        return
    import time

    now = int(time.time() * 1000)
    items = [
        Metric(key, float(value), now, step or 0)
        for key, value in metrics.items()
        if value is not None and math.isfinite(float(value))
    ]
    if items:
        client(cfg).log_batch(run_id, metrics=items)


def set_tags(cfg: TrackingConfig, run_id: str | None, tags: Mapping[str, Any]) -> None:
    """Set tags on ``run_id`` (no-op without a run)."""
    from mlflow.entities import RunTag

    if run_id is None:
        return
    client(cfg).log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])


def log_artifacts(
    cfg: TrackingConfig, run_id: str | None, paths: list[Path], artifact_path: str
) -> None:
    """Upload files into ``artifact_path`` of ``run_id`` (no-op without a run)."""
    if run_id is None:
        return
    mlflow_client = client(cfg)
    for path in paths:
        if path.is_dir():
            mlflow_client.log_artifacts(run_id, str(path), f"{artifact_path}/{path.name}")
        elif path.is_file():
            mlflow_client.log_artifact(run_id, str(path), artifact_path)


def end_run(cfg: TrackingConfig, run_id: str, ok: bool) -> None:
    """Close the run as FINISHED or FAILED."""
    set_tags(cfg, run_id, {"tlops.status": "finished" if ok else "failed"})
    client(cfg).set_terminated(run_id, "FINISHED" if ok else "FAILED")


@contextmanager
def active_run(cfg: TrackingConfig, run_id: str) -> Iterator[None]:
    """Make ``run_id`` the active run for APIs that need one (``mlflow.pytorch.log_model``)."""
    import mlflow

    client(cfg)
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        yield
