"""The whole pipeline against a real MLflow store: runs, registry, aliases, rollback, serving.

A throwaway project holds the first target drop (about 600 UCI digits) and a params file
tuned for speed; `tlops run` runs as a subprocess, as a user would run it.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, project_env, sh
from tests.helpers import free_port, wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "tlops-digits"


@pytest.fixture
def project(pipeline_project: Path) -> Path:
    return pipeline_project


def env(project: Path) -> dict[str, str]:
    return project_env(project)


@pytest.fixture(autouse=True)
def _project_store(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # what these tests read is the project's store (the one `tlops run` wrote)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")


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
    # the epochs show while training (echoed from the KFP task's log)
    assert "train: epoch 1/2: loss " in first and "train: epoch 2/2: loss " in first
    assert "val accuracy" in first
    assert "?workflowType=machine_learning" in first  # the run's page in the training view
    accuracy = float(first.split("test accuracy ")[1].split(",")[0])
    assert accuracy > 0.5  # a real model, even after 2 epochs at 32 px


def test_registry_aliases_tags_and_signature(project: Path, two_runs: tuple[str, str]) -> None:
    import mlflow

    c = client(project)
    assert str(c.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert str(c.get_model_version_by_alias(MODEL, "challenger").version) == "2"
    version = c.get_model_version(MODEL, "1")
    for tag in ("data_version", "git_sha", "backbone", "strategy", "classes", "gate.promote"):
        assert version.tags.get(tag), tag
    assert version.tags["classes"] == ",".join(str(i) for i in range(10))
    assert len(version.tags) <= 8  # a handful to filter by; the decision is the description
    # plain text first: the registry's lists show the description's first characters raw
    assert version.description.startswith(f"{MODEL} v1: PROMOTED to champion: test macro_f1 ")
    assert "no champion yet" in version.description
    second = c.get_model_version(MODEL, "2")
    assert "not promoted" in second.description and "test macro_f1" in second.description
    from tests.helpers import changed, repo_params
    from tlops.tracking.runs import client as tlops_client

    tlops_client(changed(repo_params().tracking, tracking_uri=f"sqlite:///{project / 'mlflow.db'}"))
    info = mlflow.models.get_model_info(f"models:/{MODEL}@champion")
    assert info.signature is not None
    assert info.signature.inputs.input_names() == ["image"]  # encoded images, any size
    assert info.signature.outputs.input_names() == ["class", "probability", "probabilities"]
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
    # the closing lines link the run's page (register_model's decision says where it is)
    page = f"/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}?workflowType"
    assert page in two_runs[0], two_runs[0]
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
        assert f"time/step_seconds.{step}" in run.data.metrics, step
    # epochs count from 1 in MLflow as on the console (epoch 1/2, epoch 2/2)
    assert [m.step for m in c.get_metric_history(run.info.run_id, "val/accuracy")] == [1, 2]
    assert run.data.metrics["train/best_epoch"] in (1, 2)
    assert "test/macro_f1" in run.data.metrics and "test/ece" in run.data.metrics
    artifacts = {a.path for a in c.list_artifacts(run.info.run_id, "evaluate")}
    assert {"evaluate/metrics.json", "evaluate/evaluation.json"} <= artifacts
    assert c.list_artifacts(run.info.run_id, "validate_data/target")
    assert runs[1].data.metrics["test_champion/macro_f1"] == run.data.metrics["test/macro_f1"]


def test_a_run_explains_itself_in_the_mlflow_ui(project: Path, two_runs: tuple[str, str]) -> None:
    c = client(project)
    experiment = c.get_experiment_by_name("tlops")
    first, second = c.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time ASC"]
    )
    # the name says what was trained on which data, and tells two such runs apart
    version = first.data.tags["data_version"][:8]
    assert first.info.run_name == (
        f"release #{first.info.run_id[:6]} · finetune · tf_efficientnet_lite0 · data {version}"
    )
    assert first.info.run_name != second.info.run_name
    # the description: the decision, its reasons, the table against the champion, the plots
    note = second.data.tags["mlflow.note.content"]
    assert note.startswith(f"### {MODEL} v2: not promoted")
    assert "| macro_f1 |" in note and "champion v1" in note and "+0.0000" in note
    assert f"get-artifact?path=confusion_matrix.png&run_uuid={second.info.run_id}" in note
    # metrics grouped by what they measure: the per-epoch curves are under train/ and val/
    groups = {key.split("/")[0] for key in first.data.metrics if "/" in key}
    assert {"train", "val", "test", "time"} <= groups
    assert not [key for key in first.data.metrics if "/" not in key]
    assert "test_champion" in {key.split("/")[0] for key in second.data.metrics}
    # the key plots at the root of the artifacts, where the compare view finds them
    top = {a.path for a in c.list_artifacts(second.info.run_id)}
    assert {"confusion_matrix.png", "reliability.png", "per_class.csv", "decision.json"} <= top
    assert "champion_confusion_matrix.png" in top
    # the data: an MLflow dataset input with the data version, and the Data Docs
    (dataset,) = first.inputs.dataset_inputs
    assert dataset.dataset.name == "target"
    assert dataset.dataset.digest == first.data.tags["data_version"][:36]
    docs = {a.path for a in c.list_artifacts(first.info.run_id, "validate_data/target/data_docs")}
    assert "validate_data/target/data_docs/index.html" in docs


def test_runs_and_compare_from_the_terminal(project: Path, two_runs: tuple[str, str]) -> None:
    c = client(project)
    experiment = c.get_experiment_by_name("tlops")
    first, second = c.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time ASC"]
    )
    listed = sh(project, "tlops", "runs")
    assert first.info.run_name in listed.stdout and second.info.run_name in listed.stdout
    assert f"{MODEL} v1 promoted" in listed.stdout and f"{MODEL} v2 not promoted" in listed.stdout
    compared = sh(project, "tlops", "compare", first.info.run_id[:6], "#" + second.info.run_id[:8])
    assert "(none: same params)" in compared.stdout  # the same params: a tie, not promoted
    assert "test/macro_f1" in compared.stdout and "+0.0000" in compared.stdout
    assert f"{MODEL} v1 promoted" in compared.stdout
    assert f"{MODEL} v2 not promoted" in compared.stdout
    # short column headers (the names are the legend), counts as whole numbers
    assert all(len(line) <= 120 for line in compared.stdout.splitlines()), compared.stdout
    assert re.search(r"test/n_test[ │]+\d+[ │]+\d+[ │]+\+0 ", compared.stdout), compared.stdout
    unknown = sh(project, "tlops", "compare", "zzzzzz", first.info.run_id, check=False)
    assert unknown.returncode == 1
    assert "run zzzzzz: no run of experiment 'tlops' has an id starting with zzzzzz" in " ".join(
        unknown.stderr.split()
    )


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


def _invoke(port: int, images: list[bytes], form: str = "dataframe_split") -> tuple[int, str]:
    """POST ``images`` as base64: a DataFrame column, or a JSON field per image (``instances``)."""
    encoded = [base64.b64encode(image).decode() for image in images]
    payload: dict[str, Any] = (
        {"instances": [{"image": value} for value in encoded]}
        if form == "instances"
        else {"dataframe_split": {"columns": ["image"], "data": [[value] for value in encoded]}}
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_champion_is_served_by_the_mlflow_scoring_server(
    project: Path, two_runs: tuple[str, str]
) -> None:
    from PIL import Image

    port = free_port()
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
        wait_for_http(f"http://127.0.0.1:{port}/ping", server)
        first = project / "runs" / "first" / "kfp"
        with next(first.glob("*/evaluate/evaluation/predictions.csv")).open() as handle:
            rows = list(csv.DictReader(handle))[:16]
        images_dir = next(first.glob("*/ingest-data/dataset/images"))
        # what a client sends: the image files as they are (PNG), base64 in a JSON column
        files = [(images_dir / row["path"]).read_bytes() for row in rows]
        status, body = _invoke(port, files)
        assert status == 200, body
        predictions = json.loads(body)["predictions"]
        assert [p["class"] for p in predictions] == [row["predicted"] for row in rows]
        for p in predictions:  # the answer names the classes
            assert set(p["probabilities"]) == {str(i) for i in range(10)}
            assert p["probability"] == max(p["probabilities"].values())
        # the same images as a JSON field each: the same answers
        status, body = _invoke(port, files[:4], form="instances")
        assert status == 200, body
        assert [p["class"] for p in json.loads(body)["predictions"]] == [
            row["predicted"] for row in rows[:4]
        ]
        # a JPEG of any size and mode (here RGB, 40x40) is prepared as training prepared it
        jpeg = io.BytesIO()
        Image.open(io.BytesIO(files[0])).convert("RGB").resize((40, 40)).save(jpeg, "JPEG")
        status, body = _invoke(port, [jpeg.getvalue()])
        assert status == 200 and json.loads(body)["predictions"][0]["class"] in "0123456789"
        # a malformed image: a short 400 naming the row and the problem
        status, body = _invoke(port, [files[0], files[1][:40]])
        assert status == 400 and "row 1: truncated" in body and len(body) < 1000, body
        # MLflow prefixes its message with the request; `detail` is ours alone
        error = json.loads(body)
        assert error["detail"].startswith("row 1: truncated") and error["error_class"] == (
            "INVALID_IMAGE"
        )
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


def test_a_held_promotion_lock_registers_nothing(
    project: Path, two_runs: tuple[str, str], tmp_path: Path
) -> None:
    from tlops.tracking.promotion import lock_name

    c = client(project)
    before = len(c.search_model_versions(f"name='{MODEL}'"))
    champion = str(c.get_model_version_by_alias(MODEL, "champion").version)
    # register_model of a release on the first run's model and evaluation, as the pipeline's
    # last task does, in a run of its own (the first run stays as it is for the other tests)
    (first,) = (project / "runs" / "first" / "kfp").glob("tlops-training-*")
    run = c.create_run(c.get_experiment_by_name("tlops").experiment_id, run_name="locked")
    for port in ("train/model", "evaluate/evaluation"):
        copy = shutil.copytree(first / port, tmp_path / port)
        (copy / "mlflow_run.json").write_text(json.dumps({"run_id": run.info.run_id}))
    # another run holds the lock (its lease is far from over)
    c.create_registered_model(
        lock_name(MODEL), tags={"holder": "other-pod:1:abc", "expires": f"{time.time() + 3600}"}
    )
    try:
        result = sh(
            project,
            "tlops",
            "step",
            "register_model",
            "--dataset",
            str(first / "ingest-data" / "dataset"),
            "--model",
            str(tmp_path / "train" / "model"),
            "--evaluation",
            str(tmp_path / "evaluate" / "evaluation"),
            "--decision",
            str(tmp_path / "decision"),
            "-S",
            "register_model.release=true",
            "-S",
            "register_model.lock_timeout_s=2",
            check=False,
        )
    finally:
        c.delete_registered_model(lock_name(MODEL))
    assert result.returncode == 1
    assert "held by other-pod:1:abc" in result.stderr, result.stderr
    assert not (tmp_path / "decision").exists()  # no partial output
    assert len(c.search_model_versions(f"name='{MODEL}'")) == before  # nothing registered
    assert str(c.get_model_version_by_alias(MODEL, "champion").version) == champion
    failed = c.get_run(run.info.run_id)
    assert failed.info.status == "FAILED" and "promotion lock" in failed.data.tags["error"]


def test_tlops_predict_classifies_files_with_the_champion(
    project: Path, two_runs: tuple[str, str]
) -> None:
    first = project / "runs" / "first" / "kfp"
    with next(first.glob("*/evaluate/evaluation/predictions.csv")).open() as handle:
        rows = list(csv.DictReader(handle))[:2]
    images_dir = next(first.glob("*/ingest-data/dataset/images"))
    files = [str(images_dir / row["path"]) for row in rows]
    shown = sh(project, "tlops", "predict", *files, "--json")
    answers = [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]
    assert [a["image"] for a in answers] == files
    assert [a["class"] for a in answers] == [row["predicted"] for row in rows]
    table = sh(project, "tlops", "predict", files[0], "--model", f"models:/{MODEL}/1")
    assert rows[0]["predicted"] in table.stdout and "next 2" in table.stdout
