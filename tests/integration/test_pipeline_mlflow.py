"""The whole pipeline against a real MLflow store: runs, registry, aliases, rollback, serving.

A throwaway project holds the first target drop (about 600 UCI digits) and a params file
tuned for speed; `tlops run` runs as a subprocess, as a user would run it.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.helpers import tiny_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent
MODEL = "tlops-digits"


def env(project: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "COLUMNS": "200",
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
    }


def sh(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=project, env=env(project), text=True, capture_output=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args}: {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_project(tmp_path_factory.mktemp("pipeline"), REPO)


@pytest.fixture(autouse=True)
def _project_store(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # what these tests read is the project's store (the one `tlops run` wrote)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")


@pytest.fixture(scope="module")
def two_runs(project: Path) -> tuple[str, str]:
    # the same steps on the same data and params give the same metrics, so the second run is a
    # tie with the champion the first one registered
    first = sh(project, "tlops", "run", "--out", "runs/first")
    second = sh(project, "tlops", "run", "--out", "runs/second")
    return first.stdout, second.stdout


def client(project: Path):  # type: ignore[no-untyped-def]
    import mlflow

    uri = f"sqlite:///{project / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_first_run_is_promoted_second_is_registered_with_reasons(two_runs: tuple[str, str]) -> None:
    first, second = two_runs
    for task in ("ingest-data", "validate-data", "train", "evaluate", "register-model"):
        assert f"] Task '{task}' finished with status SUCCESS" in first, first  # KFP local
    # finetune needs neither the source domain nor cached features: those steps do not run
    assert "Task 'ingest-data-2'" not in first and "extract-features" not in first
    for text in (
        "test accuracy",
        "macro F1",
        "gate: PROMOTED to champion",
        "no champion yet",
        f"registered: {MODEL} version 1, aliases: challenger, champion",
        "make ui",
    ):
        assert text in first, first
    for text in (
        "champion v1 on the same test split",
        "gate: not promoted",
        "gain +0.0000 is less than the required",
        f"registered: {MODEL} version 2, aliases: challenger",
    ):
        assert text in second, second
    accuracy = float(first.split("test accuracy ")[1].split(",")[0])
    assert accuracy > 0.5  # a real model, even after 2 epochs at 32 px


def test_registry_aliases_tags_and_signature(project: Path, two_runs: tuple[str, str]) -> None:
    import mlflow

    c = client(project)
    assert str(c.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert str(c.get_model_version_by_alias(MODEL, "challenger").version) == "2"
    version = c.get_model_version(MODEL, "1")
    for tag in ("data_version", "git_sha", "backbone", "strategy", "classes", "gate.reasons"):
        assert version.tags.get(tag), tag
    assert version.tags["classes"] == ",".join(str(i) for i in range(10))
    from tlops.config import TrackingConfig
    from tlops.tracking.runs import client as tlops_client

    tlops_client(TrackingConfig(tracking_uri=f"sqlite:///{project / 'mlflow.db'}"))
    info = mlflow.models.get_model_info(f"models:/{MODEL}@champion")
    assert info.signature is not None
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 32, 32, 3]
    assert info.metadata["classes"] == [str(i) for i in range(10)]


def test_run_logs_params_curves_plots_and_decision(
    project: Path, two_runs: tuple[str, str]
) -> None:
    c = client(project)
    experiment = c.get_experiment_by_name("tlops")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = c.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert len(runs) == 2
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.strategy"] == "finetune"
    assert run.data.params["model.image_size"] == "32"
    for tag in ("git_sha", "data_version", "backbone", "strategy", "init", "gate.promote"):
        assert tag in run.data.tags, tag
    assert run.data.tags["runner"] == "kfp"
    # the numerics each model step computed with, and why (a demo this small is not calibrated)
    assert run.data.tags["numerics"] == "fp32+channels_last+eager"
    assert run.data.tags["numerics.source"] == "default"
    assert run.data.tags["numerics.evaluate"] == "fp32+channels_last+eager"
    for step in ("ingest_data.target", "validate_data.target", "train", "evaluate"):
        assert f"step_seconds.{step}" in run.data.metrics, step
    assert len(c.get_metric_history(run.info.run_id, "val_accuracy")) == 2
    assert "test_macro_f1" in run.data.metrics and "test_ece" in run.data.metrics
    artifacts = {a.path for a in c.list_artifacts(run.info.run_id, "evaluate")}
    assert {
        "evaluate/confusion_matrix.png",
        "evaluate/reliability.png",
        "evaluate/metrics.json",
    } <= artifacts
    assert c.list_artifacts(run.info.run_id, "validate_data/target")
    assert runs[1].data.metrics["champion_test_macro_f1"] == run.data.metrics["test_macro_f1"]


def test_rollback(project: Path, two_runs: tuple[str, str]) -> None:
    from tlops.config import load_params
    from tlops.tracking.registry import promote

    params = load_params(
        project / "params.yaml", {"tracking.tracking_uri": f"sqlite:///{project / 'mlflow.db'}"}
    )
    promote(params.tracking, MODEL, "2")
    c = client(project)
    assert str(c.get_model_version_by_alias(MODEL, "previous").version) == "1"
    empty = sh(project, "tlops", "rollback", "--reason", " ", check=False)
    assert empty.returncode == 1 and "give the reason" in empty.stderr
    assert str(c.get_model_version_by_alias(MODEL, "champion").version) == "2"
    out = sh(project, "tlops", "rollback", "--reason", "v2 mislabels 7s in production")
    assert "champion is version 1 again" in out.stdout
    assert str(c.get_model_version_by_alias(MODEL, "champion").version) == "1"
    demoted = c.get_model_version(MODEL, "2")
    assert demoted.tags["rollback.reason"] == "v2 mislabels 7s in production"
    assert demoted.tags["rolled_back"] == "true"
    run = c.search_runs(
        [c.get_experiment_by_name("tlops").experiment_id],
        filter_string="tags.`rollback.demoted` = '2'",
    )[0]
    assert run.data.tags["rollback.reason"] == "v2 mislabels 7s in production"
    assert run.data.tags["rollback.restored"] == "1" and run.info.status == "FINISHED"
    assert not [m for m in c.search_registered_models() if m.name.endswith(".promotion-lock")]
    again = sh(project, "tlops", "rollback", "--reason", "again", check=False)
    assert again.returncode == 1 and "no 'previous' version" in again.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_champion_is_served_by_the_mlflow_scoring_server(
    project: Path, two_runs: tuple[str, str]
) -> None:
    from PIL import Image

    from tlops.data.tensors import resize_square

    port = _free_port()
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{MODEL}@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=project,
        env=env(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    log = server.stdout.read().decode() if server.stdout else ""
                    raise AssertionError(log) from None
                time.sleep(0.5)
        first = project / "runs" / "first" / "kfp"
        with next(first.glob("*/evaluate/evaluation/predictions.csv")).open() as handle:
            rows = list(csv.DictReader(handle))[:16]
        images_dir = next(first.glob("*/ingest-data/dataset/images"))
        pixels = np.stack(
            [
                np.asarray(
                    resize_square(Image.open(images_dir / row["path"]).convert("RGB"), 32),
                    dtype=np.float32,
                )
                for row in rows
            ]
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": pixels.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = np.asarray(json.loads(response.read())["predictions"])
        assert predictions.shape == (16, 10)
        served = [str(i) for i in predictions.argmax(axis=1)]
        assert served == [row["predicted"] for row in rows]  # the served model is the champion
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_failed_validation_registers_nothing(project: Path, two_runs: tuple[str, str]) -> None:
    victim = sorted((project / "data" / "target" / "4").iterdir())[0]
    original = victim.read_bytes()
    c = client(project)
    before = len(c.search_model_versions(f"name='{MODEL}'"))
    try:
        victim.write_bytes(b"")
        result = sh(project, "tlops", "run", "--out", "runs/broken", check=False)
    finally:
        victim.write_bytes(original)
    assert result.returncode == 1
    assert f"data/target/4/{victim.name}" in result.stderr and "empty_file" in result.stderr
    assert len(c.search_model_versions(f"name='{MODEL}'")) == before
    assert (project / "runs" / "broken" / "kfp").is_dir()
    # with a champion registered, the target is validated against its class map
    for run in ("second", "broken"):
        report = next((project / "runs" / run).glob("kfp/*/validate-data/report"))
        verdict = json.loads((report / "validation.json").read_text())
        assert verdict["domain"] == "target"
        assert verdict["class_source"] == f"the class map of champion {MODEL} v1 (MLflow registry)"
    assert not list((project / "runs" / "broken").glob("kfp/*/train"))  # stopped before training
    latest = c.search_runs(
        [c.get_experiment_by_name("tlops").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    assert latest.info.status == "FAILED"  # the failure is a run of its own, with its report
    assert latest.data.tags["failed_step"] == "validate_data"
    assert {a.path for a in c.list_artifacts(latest.info.run_id, "validate_data")} == {
        "validate_data/summary.md",
        "validate_data/validation.json",
    }


def test_a_held_promotion_lock_registers_nothing(project: Path, two_runs: tuple[str, str]) -> None:
    from tlops.tracking.promotion import lock_name

    c = client(project)
    before = len(c.search_model_versions(f"name='{MODEL}'"))
    champion = str(c.get_model_version_by_alias(MODEL, "champion").version)
    # another run holds the lock (its lease is far from over)
    c.create_registered_model(
        lock_name(MODEL), tags={"holder": "other-pod:1:abc", "expires": f"{time.time() + 3600}"}
    )
    try:
        result = sh(
            project,
            "tlops",
            "run",
            "--out",
            "runs/locked",
            "-S",
            "register_model.lock_timeout_s=2",
            check=False,
        )
    finally:
        c.delete_registered_model(lock_name(MODEL))
    assert result.returncode == 1
    assert "held by other-pod:1:abc" in result.stderr, result.stderr
    assert len(c.search_model_versions(f"name='{MODEL}'")) == before  # nothing registered
    assert str(c.get_model_version_by_alias(MODEL, "champion").version) == champion
    latest = c.search_runs(
        [c.get_experiment_by_name("tlops").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    assert latest.info.status == "FAILED" and "promotion lock" in latest.data.tags["error"]
