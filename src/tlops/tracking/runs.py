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


class TrackingServerError(RuntimeError):
    """The MLflow tracking server cannot be reached, or refuses the credentials given."""


# how long a step waits for the tracking server to answer before it gives up (a server that is
# down fails a step in seconds; the step's own retries, with backoff, ride out a restart)
REACH_TIMEOUT_S = 5.0
# a server that is up but slow to answer (just started, a loaded node) gets one more try; a
# refused connection does not: nothing listens there, and waiting would not change that
REACH_ATTEMPTS = 2


def check_server(cfg: TrackingConfig, timeout: float = REACH_TIMEOUT_S) -> None:
    """Fail fast when the tracking store is a server that does not answer or refuses us.

    MLflow's own client retries a refused connection for minutes; a step that cannot log
    should say so at once instead. A local store (SQLite, a folder) is not checked.

    Raises:
        TrackingServerError: No answer within ``timeout`` seconds in either of
            ``REACH_ATTEMPTS`` tries, a refused connection, a server error, or the
            credentials (``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` or ``_TOKEN``) refused.
    """
    import requests

    uri = tracking_uri(cfg)
    if not uri.startswith(("http://", "https://")):
        return
    auth: Any = None
    headers = {}
    user, password = (
        os.environ.get("MLFLOW_TRACKING_USERNAME"),
        os.environ.get("MLFLOW_TRACKING_PASSWORD"),
    )
    if user and password:
        auth = (user, password)
    elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name"
    try:
        for attempt in range(1, REACH_ATTEMPTS + 1):
            try:
                answer = requests.get(
                    url,
                    params={"experiment_name": cfg.experiment},
                    auth=auth,
                    headers=headers,
                    timeout=timeout,
                )
                break
            except requests.Timeout:
                if attempt == REACH_ATTEMPTS:
                    raise
    except requests.RequestException as exc:
        if isinstance(exc, requests.Timeout):
            reason = f"no answer within {timeout:g} s, {REACH_ATTEMPTS} tries"
        elif isinstance(exc, requests.ConnectionError):
            reason = "connection refused or host unreachable"
        else:
            reason = f"{type(exc).__name__}: {_first_line(exc)}"
        raise TrackingServerError(
            f"MLflow tracking server {uri} is not reachable ({reason}); is it running, and is "
            "MLFLOW_TRACKING_URI right?"
        ) from exc
    if answer.status_code in (401, 403):
        given = "the credentials given" if auth or headers else "no credentials"
        raise TrackingServerError(
            f"MLflow tracking server {uri} refused {given} (HTTP {answer.status_code}): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
        )
    if answer.status_code >= 500:
        raise TrackingServerError(
            f"MLflow tracking server {uri} answers HTTP {answer.status_code}: "
            f"{answer.text[:200].strip()}"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


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


GIT_SHA_ENV = "TLOPS_GIT_SHA"  # baked into the image at build time (infra/docker/Dockerfile)


def git_sha(cwd: Path | None = None) -> str:
    """The commit of the working tree (``-dirty`` when it has changes).

    Where git has no answer (a container has no ``.git``), the commit the image was built from
    (``TLOPS_GIT_SHA``), else ``unknown``.
    """
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
        return os.environ.get(GIT_SHA_ENV) or "unknown"
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


def start_child_run(
    cfg: TrackingConfig, parent_id: str, run_name: str, tags: Mapping[str, str]
) -> str:
    """Create a run nested under ``parent_id`` (the UI shows it below its parent)."""
    mlflow_client = client(cfg)
    experiment_id = mlflow_client.get_run(parent_id).info.experiment_id
    nested = {"mlflow.parentRunId": parent_id, **tags}
    run = mlflow_client.create_run(experiment_id, run_name=run_name, tags=nested)
    return str(run.info.run_id)


def log_params(cfg: TrackingConfig, run_id: str, params: Mapping[str, Any]) -> None:
    """Log params (values as strings, cut to MLflow's limit)."""
    from mlflow.entities import Param

    items = [Param(key, str(value)[:6000]) for key, value in params.items()]
    if items:
        client(cfg).log_batch(run_id, params=items)


# Where MLflow shows a metric: its charts put each prefix before "/" in a section of its own,
# so the per-epoch curves (train/, val/) are not lost among single-value bars. The UI sorts the
# sections (and the compare page its rows) by name, so every group is named to sort after the
# candidate's own test/: the champion's figures on the same split right after it, then time/,
# train/, transfer/ (what a domain adaptation or distillation measured), trigger/ (why a
# retraining ran), val/. Step records (history.json, metrics.json, train.json) keep the steps'
# own names, which params refer to (train.early_stopping.metric: val_accuracy); only the
# MLflow key is grouped.
METRIC_GROUPS: tuple[tuple[str, str], ...] = (
    ("champion_test_", "test_champion/"),
    ("source_only_test_", "test_source_only/"),
    ("test_", "test/"),
    ("val_", "val/"),
    ("select_", "val/select_"),
    ("train_", "train/"),
    ("loss_", "train/loss_"),
    ("step_seconds.", "time/step_seconds."),
    ("numerics.", "time/numerics."),
    ("distill.", "transfer/distill."),
    ("detect_change.", "trigger/"),
    ("domain_", "transfer/"),
)
METRIC_NAMES = {
    "lr": "train/lr",
    "best_epoch": "train/best_epoch",
    "features_used": "train/features_used",
    "ae_reconstruction_loss": "train/ae_reconstruction_loss",
    "epoch_seconds": "time/epoch_seconds",
    "model_logging_seconds": "time/model_logging",
}


def metric_key(name: str) -> str:
    """The MLflow key of a step's metric: ``val_accuracy`` -> ``val/accuracy`` (see above)."""
    if name in METRIC_NAMES:
        return METRIC_NAMES[name]
    for prefix, group in METRIC_GROUPS:
        if name.startswith(prefix):
            return group + name[len(prefix) :]
    return name


def log_metrics(
    cfg: TrackingConfig, run_id: str | None, metrics: Mapping[str, float], step: int | None = None
) -> None:
    """Log finite metrics into ``run_id`` under their :func:`metric_key` (no-op without a run)."""
    import math

    from mlflow.entities import Metric

    if run_id is None:
        return
    import time

    now = int(time.time() * 1000)
    items = [
        Metric(metric_key(key), float(value), now, step or 0)
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
    cfg: TrackingConfig, run_id: str | None, paths: list[Path], artifact_path: str | None
) -> None:
    """Upload files (and folders) into ``artifact_path`` of ``run_id``, None: its root.

    No-op without a run.
    """
    if run_id is None:
        return
    mlflow_client = client(cfg)
    for path in paths:
        if path.is_dir():
            folder = f"{artifact_path}/{path.name}" if artifact_path else path.name
            mlflow_client.log_artifacts(run_id, str(path), folder)
        elif path.is_file():
            mlflow_client.log_artifact(run_id, str(path), artifact_path)


def log_dataset(
    cfg: TrackingConfig,
    run_id: str,
    manifest: Path,
    name: str,
    source: str,
    digest: str,
    context: str = "training",
) -> None:
    """Log a manifest as an MLflow dataset input of the run (the run page's Datasets).

    Args:
        cfg: Tracking params.
        run_id: The run.
        manifest: The manifest CSV (one row per image: schema and row count in the UI).
        name: The dataset's name (the domain: ``target``, ``source``).
        source: Where the images came from (a data directory or a DVC repository).
        digest: The data version (DVC md5), shown beside the name.
        context: What the run did with it.
    """
    import pandas as pd
    from mlflow.data.pandas_dataset import from_pandas

    # made at import time by mlflow.data, one per artifact repository kind: no static name
    from mlflow.data.sources import LocalArtifactDatasetSource  # type: ignore[attr-defined]
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    frame = pd.read_csv(manifest, dtype={"label": str})
    # width, height, frames are missing for an image that failed to decode: float, so the
    # schema is one type whether or not a file failed (MLflow warns of int columns otherwise)
    ints = frame.select_dtypes("integer").columns
    frame[ints] = frame[ints].astype("float64")
    # the source's kind said outright: a plain string matches two of MLflow's local kinds
    where = LocalArtifactDatasetSource(str(source))
    dataset = from_pandas(frame, source=where, targets="label", name=name, digest=digest[:36])
    entity = DatasetInput(
        dataset._to_mlflow_entity(), [InputTag(key=MLFLOW_DATASET_CONTEXT, value=context)]
    )
    client(cfg).log_inputs(run_id, datasets=[entity])


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
