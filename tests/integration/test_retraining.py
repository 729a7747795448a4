"""The retraining pipeline through KFP local against a real MLflow store, as a user runs it.

A throwaway project starts with the first target drop. `tlops retrain` (a subprocess) then runs
three times: no champion -> trains, first champion; the same data -> skipped, "no new data",
still an MLflow run with the decision; the drifted drop added -> drift detected, retrained
warm-started from the champion, compared with it on the updated test split.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers import tiny_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
MODEL = "tlops-digits"


def _tlops(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "COLUMNS": "200",
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
    }
    result = subprocess.run(
        ["tlops", *args], cwd=project, env=env, text=True, capture_output=True, check=False
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


def _change(project: Path, run: str) -> dict:  # type: ignore[type-arg]
    (found,) = (project / "runs" / run).glob("kfp/*/detect-change/change/change.json")
    return dict(json.loads(found.read_text()))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_project(tmp_path_factory.mktemp("retraining"), REPO)


def test_retraining_story(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from tlops.data.demo import write_demo

    uri = f"sqlite:///{project / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    first = _tlops(project, "retrain", "--out", "runs/first")
    assert "detect_change: RETRAIN" in first.stdout and "no champion yet" in first.stdout
    # explicit: an earlier test in this process may have set mlflow's global tracking URI
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    v1 = client.get_model_version(MODEL, "1")
    run = client.get_run(v1.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["detect_change.retrain"] == "true"
    assert [a.path for a in client.list_artifacts(v1.run_id, "data")] == ["data/manifest.csv"]

    # nothing new: skipped, and the run says why
    second = _tlops(project, "retrain", "--out", "runs/second")
    assert "detect_change: no retrain" in second.stdout and "no new data" in second.stdout
    assert not list((project / "runs" / "second").glob("kfp/*/train"))
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1
    experiment = client.get_experiment_by_name("tlops")
    latest = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"]
    )[0]
    assert latest.info.status == "FINISHED"
    assert latest.data.tags["detect_change.retrain"] == "false"
    assert latest.data.tags["mlflow.runName"].startswith("retraining check: skipped")
    assert "no new data" in latest.data.tags["detect_change.reasons"]

    # the drifted drop: drift detected in v1's feature space, retrained from v1
    write_demo(None, project / "data" / "target", drops=1, drift=True)
    third = _tlops(project, "retrain", "--out", "runs/third")
    change = _change(project, "third")
    assert change["retrain"] and change["champion"]["version"] == "1"
    assert change["counts"]["added"] == change["counts"]["new_content"] > 0
    assert change["counts"]["removed"] == 0
    assert change["drift"]["p_value"] < 0.01
    assert any(reason.startswith("drift detected") for reason in change["reasons"])
    (train_json,) = (project / "runs" / "third").glob("kfp/*/train/model/train.json")
    assert json.loads(train_json.read_text())["init"] == f"checkpoint:models:/{MODEL}/1"
    assert "champion v1 on the same test split" in third.stdout
    v2 = client.get_model_version(MODEL, "2")
    trained = client.get_run(v2.run_id)
    assert trained.data.tags["detect_change.champion"] == "1"
    assert trained.data.metrics["trigger/drift_p_value"] < 0.01


def test_an_unlabeled_drop_is_adapted_held_and_sent_for_labels(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the story: the last drop arrives without labels (detect_change.unlabeled: adapt)."""
    import csv

    import mlflow

    from tlops.data.demo import write_unlabeled

    uri = f"sqlite:///{project / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = str(client.get_model_version_by_alias(MODEL, "champion").version)
    count = write_unlabeled(project / "data" / "unlabeled")
    unlabeled_folder = "data.target_unlabeled=data/unlabeled"
    out = _tlops(
        project,
        *("retrain", "--out", "runs/unlabeled"),
        *("-S", unlabeled_folder, "-S", "select_labels.budget=20"),
        *("-S", "select_labels.audit_size=30"),
    )
    change = _change(project, "unlabeled")
    assert change["action"] == "adapt" and change["counts"]["new_unlabeled"] == count
    assert change["overrides"] == {"train.strategy": "mcc", "train.target_labels": 0}
    assert "detect_change: ADAPT without labels" in out.stdout
    (train_json,) = (project / "runs" / "unlabeled").glob("kfp/*/train*/model/train.json")
    trained = json.loads(train_json.read_text())
    assert trained["strategy"] == "mcc"
    # registered as the challenger, never promoted: not scored on labeled images of the drop
    latest = max(client.search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version))
    assert latest.tags["gate.promote"] == "false" and latest.tags["gate.held"] == "unlabeled"
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    assert str(challenger.version) == str(latest.version)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == champion
    (decision,) = (project / "runs" / "unlabeled").glob(
        "kfp/*/register-model*/decision/decision.json"
    )
    assert json.loads(decision.read_text())["reasons"][0].startswith("held, not promoted")
    # and beside it, the first labeling round over the drop
    (listed,) = (project / "runs" / "unlabeled").glob("kfp/*/select-labels*/selection/to_label.csv")
    rows = list(csv.DictReader(listed.open()))
    assert sum(r["role"] == "audit" for r in rows) == 30
    assert sum(r["role"] == "select" for r in rows) == 20
    # the next scheduled run finds the same unlabeled images: it waits for their labels
    again = _tlops(project, "retrain", "--out", "runs/unlabeled-again", "-S", unlabeled_folder)
    assert _change(project, "unlabeled-again")["action"] == "skip"
    assert f"v{latest.version} was adapted to these" in again.stdout


def test_the_labels_arrive_and_the_adapted_model_is_gated_on_the_audit(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the adaptation: the round is labeled (the demo's truth), the pull's drop is read."""
    import mlflow

    from tests.helpers import label_as_the_demo_annotator

    uri = f"sqlite:///{project / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    held = client.get_model_version_by_alias(MODEL, "challenger")
    assert held.tags["gate.held"] == "unlabeled"
    (listed,) = (project / "runs" / "unlabeled").glob("kfp/*/select-labels*/selection/to_label.csv")
    assert label_as_the_demo_annotator(listed, project / "data" / "labeled", project) == 50
    _tlops(
        project,
        *("retrain", "--out", "runs/labeled"),
        *("-S", "data.target_unlabeled=data/unlabeled", "-S", "data.target_labeled=data/labeled"),
    )
    change = _change(project, "labeled")
    assert change["action"] == "retrain"
    # new to the champion: the 50 labeled images, and the drop's other images, still unlabeled
    counts = change["counts"]
    assert counts["new_content"] - counts["new_unlabeled"] == 50 and counts["new_unlabeled"] > 0
    # adapt, then fine-tune: the retrain starts from the held model, not the champion
    assert change["warm_start"]["version"] == str(held.version)
    (train_json,) = (project / "runs" / "labeled").glob("kfp/*/train*/model/train.json")
    assert (
        json.loads(train_json.read_text())["init"] == f"checkpoint:models:/{MODEL}/{held.version}"
    )
    # the audit is in the test split the gate reads; the selected images are not
    (manifest,) = (project / "runs" / "labeled").glob("kfp/*/ingest-data/dataset/manifest.csv")
    rows = list(csv.DictReader(manifest.open()))
    labeled = [r for r in rows if r["path"].startswith("_labeled/")]
    assert {r["split"] for r in labeled if r["path"].startswith("_labeled/test/")} == {"test"}
    assert {r["split"] for r in labeled if r["path"].startswith("_labeled/train/")} == {"train"}
    latest = max(client.search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version))
    assert int(latest.version) == int(held.version) + 1
    assert "gate.held" not in latest.tags  # scored on labeled images of the new data
