"""The production topology on loopback, for real, and its faults.

PostgreSQL (Debian's server), an S3 endpoint (moto_server) and `mlflow server` with the
PostgreSQL backend, S3 artifacts served through it and basic auth; the demo data pushed to a DVC
remote on that S3. The training pipeline runs through KFP local with every task in an empty
working directory with no checkout, as the image's non-root user, getting its data from the DVC
remote and its credentials from environment variables (infra/prod_local.py does all of it, as
`make prod-local` does).

The tests share one topology and run in file order, as one story: MLflow down at the start; MLflow
killed while train runs; PostgreSQL restarted; then the run that completes (checked in full);
an s3:// prefix; the S3 outage last (moto keeps its state in memory).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from infra.prod_local import (
    DVC_BUCKET,
    MLFLOW_BUCKET,
    PIPELINE_USER,
    STATE,
    TASK_UID,
    TINY,
    Topology,
)

from tests.conftest import REPO

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs the tasks as another user (needs root)"),
]

# the tiny settings on drop 1 (602 images), and retries that end in seconds
FAST = [*TINY, "kfp.train_retries=1", "kfp.retry_backoff=1s"]
# what a user sets so that an MLflow outage ends a step in seconds (MLflow retries for minutes)
FAIL_FAST_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    # not under pytest's tmp_path (mode 700): the tasks' user must be able to reach its
    # working directory and the params file by path, as it can in a pod
    state = Path(tempfile.mkdtemp(prefix="tlops-prod-local-"))
    state.chmod(0o755)
    topo = Topology(state)
    try:
        topo.up(mlflow=False)  # the first test starts it, after a run found it down
        topo.data_repo = topo.push_demo_data(drops=1, domains=("target",))  # type: ignore[attr-defined]
        yield topo
    finally:
        topo.down()  # every server, also when a test failed
        shutil.rmtree(state, ignore_errors=True)


def _repo(topo: Topology) -> Path:
    return topo.data_repo  # type: ignore[attr-defined, no-any-return]


def _request(url: str, auth: tuple[str, str] | None) -> int:
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30):
            return 200
    except urllib.error.HTTPError as exc:
        return exc.code


def _client(topo: Topology, monkeypatch: pytest.MonkeyPatch) -> Any:
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", PIPELINE_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", topo.secrets["pipeline_password"])
    return MlflowClient(tracking_uri=topo.tracking_uri, registry_uri=topo.tracking_uri)


def _psql(topo: Topology, sql: str) -> str:
    env = {**os.environ, "PGPASSWORD": topo.secrets["pg_password"]}
    done = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(topo.ports["postgres"]), "-U", "tlops",
         "-d", "mlflow", "-tAc", sql],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def _bucket_keys(topo: Topology, bucket: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=topo.s3_url, region_name="us-east-1",
                      aws_access_key_id=topo.secrets["s3_key"],
                      aws_secret_access_key=topo.secrets["s3_secret"])  # fmt: skip
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def _written_by_the_tasks(root: Path) -> list[Path]:
    """Files under ``root`` owned by the tasks' user: what a task wrote there (the other tests
    run as root, so this holds while they run beside this one)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".venv")]
        if Path(dirpath) == STATE.parent:  # runs/: `make prod-local`'s own state, if it ran
            dirnames[:] = [d for d in dirnames if d != STATE.name]
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            if path.lstat().st_uid == TASK_UID:
                found.append(path)
    return found


def test_mlflow_down_at_the_start_is_a_clear_error_at_once(topology: Topology) -> None:
    try:
        started = time.monotonic()
        done = topology.run_pipeline(_repo(topology), FAST)
        seconds = time.monotonic() - started
    finally:
        topology.start_mlflow()
    assert done.returncode != 0
    assert f"MLflow tracking server {topology.tracking_uri} is not reachable" in done.stderr
    assert "Task " not in done.stdout  # refused before any task ran: nothing to register
    # MLflow's own client would retry for minutes; the check answers in seconds (the bound
    # is loose so that a loaded machine passes, and still far below those minutes)
    print(f"failed after {seconds:.1f} s")
    assert seconds < 45
    assert _psql(topology, "SELECT count(*) FROM model_versions") == "0"


def _kill_when_train_starts(topology: Topology, log: Path, stop: threading.Event) -> None:
    """Kill the MLflow server once the train task has started (an event, not a delay)."""
    while not stop.is_set():
        if log.is_file() and re.search(
            r"Executing task \S*'train'", re.sub(r"\x1b\[[0-9;]*m", "", log.read_text())
        ):
            topology.stop_mlflow()
            return
        stop.wait(0.1)


def test_a_tracking_server_killed_while_train_runs_fails_it_after_retries(
    topology: Topology,
) -> None:
    shutil.rmtree(topology.state / "pod", ignore_errors=True)  # no earlier run's log
    stop = threading.Event()
    watcher = threading.Thread(
        target=_kill_when_train_starts,
        args=(topology, topology.state / "pod" / "run" / "kfp.log", stop),
        daemon=True,
    )
    watcher.start()
    try:
        done = topology.run_pipeline(_repo(topology), FAST, extra_env=FAIL_FAST_ENV)
    finally:
        stop.set()
        watcher.join()
        topology.start_mlflow()
    assert done.returncode != 0
    kfp_log = topology.state / "pod/run/kfp.log"
    assert kfp_log.is_file(), f"the run stopped before its tasks:\n{done.stdout}\n{done.stderr}"
    log = re.sub(r"\x1b\[[0-9;]*m", "", kfp_log.read_text())
    # kfp.train_retries=1: two attempts, with backoff between them, then the run fails
    assert log.count("Task 'train' finished with status FAILURE") == 2
    assert "Task 'train' finished with status FAILURE" in done.stdout
    assert "register-model" not in done.stdout
    assert f"MLflow tracking server {topology.tracking_uri} is not reachable" in done.stderr
    assert _psql(topology, "SELECT count(*) FROM model_versions") == "0"
    # and PostgreSQL restarts before the next run (which must work: the next test)
    topology.stop_postgres()
    topology.start_postgres()


def test_the_pipeline_runs_as_in_a_pod_against_the_production_topology(
    topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    # after the failed run above and a PostgreSQL restart: a re-run completes
    done = topology.run_pipeline(_repo(topology), FAST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Task 'register-model' finished with status SUCCESS" in done.stdout
    # the data came from the DVC remote: the version is the md5 DVC recorded in the repository
    recorded = re.search(r"md5: (\S+)", (topology.state / "data-repo/data/target.dvc").read_text())
    assert recorded is not None
    assert f"data version: {recorded.group(1)} (dvc)" in done.stdout

    # run, metrics, model version and aliases are in the PostgreSQL-backed server
    client = _client(topology, monkeypatch)
    version = client.get_model_version_by_alias("tlops-digits", "champion")
    assert version.version == "1"
    assert client.get_model_version_by_alias("tlops-digits", "challenger").version == "1"
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["data_version"] == recorded.group(1)
    assert "test/accuracy" in run.data.metrics
    assert _psql(topology, "SELECT count(*) FROM model_versions") == "1"  # exactly one new
    assert _psql(topology, f"SELECT status FROM runs WHERE run_uuid = '{run.info.run_id}'") == (
        "FINISHED"
    )
    # the model files went through the server into the bucket
    keys = _bucket_keys(topology, MLFLOW_BUCKET)
    assert any(key.endswith("/MLmodel") for key in keys), keys[:20]
    assert any(key.endswith(".pt") for key in keys)

    # authentication is on: no credentials, or a wrong password, are refused
    search = f"{topology.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _request(search, None) == 401
    assert _request(search, (PIPELINE_USER, "wrong-password")) == 401
    assert _request(search, (PIPELINE_USER, topology.secrets["pipeline_password"])) == 200

    # the tasks wrote only to their own working directory, never to this checkout
    assert _written_by_the_tasks(REPO) == []
    assert (topology.state / "pod" / ".cache" / "tlops").is_dir()  # relative paths: the pod's
    assert (topology.state / "pod" / ".cache").stat().st_uid == TASK_UID  # written as non-root
    assert not list((topology.state / "pod").glob("mlflow.db"))  # the server, not SQLite


def test_an_object_store_prefix_has_the_version_dvc_records_for_the_same_files(
    topology: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    from tlops.config import load_params
    from tlops.runner.execute import execute
    from tlops.steps import spec_of

    for key, value in topology.s3_env().items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3")
    target = topology.state / "data-repo" / "data" / "target"
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        s3.upload_file(str(path), DVC_BUCKET, f"plain/target/{path.relative_to(target)}")
    prefix = f"s3://{DVC_BUCKET}/plain/target"
    params = load_params(REPO / "params.yaml", {"data.target": prefix})
    execute(spec_of("ingest_data"), params, {}, {"dataset": tmp_path / "out"}, {"domain": "target"})
    ingested = json.loads((tmp_path / "out" / "ingest.json").read_text())
    recorded = re.search(r"md5: (\S+)", (target.parent / "target.dvc").read_text())
    assert recorded is not None
    assert ingested["data_version"] == recorded.group(1)  # what the DVC repository records
    assert ingested["data_dir"] == prefix
    assert ingested["n_images"] == 602


def test_the_s3_endpoint_down_during_ingest_names_the_remote(topology: Topology) -> None:
    topology.stop_s3()
    done = topology.run_pipeline(_repo(topology), FAST)
    assert done.returncode != 0
    assert "Task 'ingest-data' finished with status FAILURE" in done.stdout
    assert f"DVC remote 'storage' (s3://{DVC_BUCKET}/store) failed" in done.stderr
