"""The real thing, end to end: demo data under real DVC, `dvc repro`, push/pull, `tlops run`.

One throwaway project (a git + DVC repository holding this repo's params, dvc.yaml and code) is
built per module; the CLI runs as a subprocess, as a user would run it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tlops.data.version import directory_md5

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent


def sh(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "COLUMNS": "200",
        "MLFLOW_TRACKING_URI": f"sqlite:///{store(cwd)}",
    }
    result = subprocess.run(args, cwd=cwd, env=env, text=True, capture_output=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def store(cwd: Path) -> Path:
    """The project's MLflow store (every command of one project logs there)."""
    for folder in (cwd, *cwd.parents):
        if (folder / ".dvc").is_dir():
            return folder / "mlflow.db"
    return cwd / "mlflow.db"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["image_size"] = 32  # fast: the same pipeline, fewer pixels and epochs
    params["train"].update({"epochs": 1, "trainable_stages": 2, "batch_size": 32})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(REPO / ".dvc" / name, root / ".dvc" / name)
    sh(root, "git", "init", "-q")
    sh(root, "tlops", "data", "demo")
    (root / ".gitignore").write_text(
        "mlflow.db\nmlartifacts/\n.cache/\nruns/\n.dvc-remote/\n.venv\n"
    )
    (root / ".venv").symlink_to(BIN.parent)  # a checkout's venv, as `make setup` makes it
    sh(root, "git", "add", "-A")
    sh(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return root


def test_demo_data_is_tracked_and_reproducible(project: Path) -> None:
    assert len(list((project / "data" / "source").rglob("*.png"))) == 5000
    assert len(list((project / "data" / "target").rglob("*.png"))) == 1797
    assert sorted(p.name for p in (project / "data" / "target").iterdir()) == [
        str(i) for i in range(10)
    ]
    ignored = (project / "data" / ".gitignore").read_text()
    assert "/source" in ignored and "/target" in ignored
    for domain in ("source", "target"):
        regenerated = yaml.safe_load((project / "data" / f"{domain}.dvc").read_text())
        committed = yaml.safe_load((REPO / "data" / f"{domain}.dvc").read_text())
        # the demo is byte-for-byte deterministic: a fresh clone regenerates the committed version
        assert regenerated["outs"][0]["md5"] == committed["outs"][0]["md5"]
        # and our data version is DVC's own hash of the directory
        assert directory_md5(project / "data" / domain) == regenerated["outs"][0]["md5"]


def test_dvc_repro_then_nothing_to_do(project: Path) -> None:
    first = sh(project, "dvc", "repro")
    assert "Running stage 'validate_data@target'" in first.stdout
    ingest = yaml.safe_load(
        (project / "outputs" / "target" / "ingest_data" / "ingest.json").read_text()
    )
    tracked = yaml.safe_load((project / "data" / "target.dvc").read_text())["outs"][0]["md5"]
    assert (ingest["data_version"], ingest["version_source"]) == (tracked, "dvc")
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    params = lock["stages"]["ingest_data@target"]["params"]["params.yaml"]
    assert set(params) == {
        "data.target",
        "data.target_unlabeled",
        "data.target_labeled",
        "image",
        "ingest_data",
    }
    for stage in ("extract_features", "train", "evaluate", "register_model"):
        assert f"Running stage '{stage}'" in first.stdout
    metrics = json.loads((project / "outputs" / "evaluate" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.5
    assert set(lock["stages"]["train"]["params"]["params.yaml"]) == {
        "model",
        "train",
        "image",
        "validate_data.classes",
        "extract_features.cache_dir",
        "detect_change.warm_start",
        "runtime",
        "tracking",
    }
    decision = json.loads((project / "outputs" / "register_model" / "decision.json").read_text())
    # an experiment, not a release: its own registered model, no alias moved
    assert decision["released"] is False and decision["aliases"] == []
    assert decision["model_name"] == "tlops-digits-experiments"
    assert decision["version"] == "1" and decision["promote"] is True  # the gate would
    # dvc repro logs into MLflow like every runner: one run from train to register_model
    import mlflow

    uri = f"sqlite:///{store(project)}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("tlops")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["runner"] == "dvc"
    assert run.data.tags["data_version"] == tracked
    assert run.data.tags["registered.version"] == "1" and run.data.tags["release"] == "false"
    registry = {m.name for m in client.search_registered_models()}
    assert "tlops-digits" not in registry  # nothing released: no challenger, no champion
    assert len(client.get_metric_history(run.info.run_id, "val/accuracy")) == 1  # per epoch
    assert client.list_artifacts(run.info.run_id, "validate_data/target")
    assert "test/macro_f1" in run.data.metrics
    second = sh(project, "dvc", "repro")
    assert "Running stage" not in second.stdout
    assert "Data and pipelines are up to date" in second.stdout
    shown = sh(project, "dvc", "metrics", "show", "--json")
    assert "macro_f1" in shown.stdout
    # the plots page holds only what tlops rendered: it renders offline (no CDN script or link)
    sh(project, "dvc", "plots", "show", "--out", "dvc_plots")
    page = (project / "dvc_plots" / "index.html").read_text()
    # curves, confusion matrix, reliability, and the champion's (a note without one)
    assert page.count("<img") == 4 and "champion_confusion_matrix.png" in page
    assert not re.search(r"(src|href)=\"https?://", page)


def _outs(project: Path) -> dict[str, str]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {
        out["path"]: out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
    }


def test_a_forced_rerun_gives_the_same_outputs(project: Path) -> None:
    """An output is a function of its inputs: times and run ids stay beside it (step.json)."""
    before = _outs(project)
    for stage in ("ingest_data@target", "validate_data@target", "train", "evaluate"):
        sh(project, "dvc", "repro", "-f", "-s", stage)
    assert _outs(project) == before
    status = sh(project, "dvc", "status", "--json").stdout
    assert json.loads(status) == {}, status  # nothing downstream is stale
    # the run's facts are beside the outputs, not in them
    facts = json.loads((project / "outputs" / "train" / "step.json").read_text())
    assert facts["train_seconds"] > 0 and len(facts["epoch_seconds"]) >= 1
    assert "seconds" not in json.loads((project / "outputs" / "train" / "train.json").read_text())
    machine = json.loads((project / "outputs" / "evaluate" / "metrics.json").read_text())
    assert "torch" in machine["machine"]  # which machine the figures came from


def test_dvc_exp_run_with_a_param_change(project: Path) -> None:
    sh(project, "git", "add", "-A")
    sh(project, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro")
    # as README writes it: the venv's dvc, from a shell where the venv is not activated
    bare = {**os.environ, "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    bare["MLFLOW_TRACKING_URI"] = f"sqlite:///{store(project)}"
    result = subprocess.run(
        [str(BIN / "dvc"), "exp", "run", "-S", "train.lr=0.001"],
        cwd=project, env=bare, text=True, capture_output=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Running stage 'train'" in result.stdout
    assert "Running stage 'extract_features'" not in result.stdout  # unchanged, not rerun
    shown = sh(project, "dvc", "exp", "show", "--json")
    assert "0.001" in shown.stdout
    # a full MLflow run, with the DVC experiment it ran in; still not a release
    import mlflow

    uri = f"sqlite:///{store(project)}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("tlops")
    latest = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    assert latest.data.params["train.lr"] == "0.001"
    assert latest.data.tags.get("dvc.experiment") and latest.data.tags.get("dvc.baseline_rev")
    assert "test/macro_f1" in latest.data.metrics and latest.inputs.dataset_inputs
    assert latest.data.tags["mlflow.note.content"].startswith(
        "### tlops-digits-experiments v2: experiment"
    )
    versions = client.search_model_versions("name='tlops-digits-experiments'")
    assert len(versions) == 2 and not [v for v in versions if v.aliases]
    assert "tlops-digits" not in {m.name for m in client.search_registered_models()}


def test_push_and_pull_through_the_default_remote(project: Path) -> None:
    sh(project, "dvc", "push")
    assert (project / ".dvc-remote" / "files" / "md5").is_dir()
    before = directory_md5(project / "data" / "target")
    shutil.rmtree(project / "data" / "target")
    shutil.rmtree(project / ".dvc" / "cache")
    sh(project, "dvc", "pull", "data/target.dvc")
    assert directory_md5(project / "data" / "target") == before


def test_tlops_run_summary_then_a_corrupt_image_stops_it(project: Path) -> None:
    ok = sh(project, "tlops", "run", "--out", "runs/ok")
    assert "source:" not in ok.stdout  # finetune does not use the source domain
    for text in (
        "target: 1797 images, 10 classes",
        "data version:",
        "validation: passed",
        "train",
        "val",
        "test",
    ):
        assert text in ok.stdout, ok.stdout
    # one step, several runners: the same params and data give the same metrics as dvc repro
    metrics_file = next(
        (project / "runs" / "ok" / "kfp").glob("*/evaluate/evaluation/metrics.json")
    )
    ours = json.loads(metrics_file.read_text())
    dvc = json.loads((project / "outputs" / "evaluate" / "metrics.json").read_text())
    plain = [k for k in dvc if not k.startswith("champion_")]
    assert {k: ours[k] for k in plain} == {k: dvc[k] for k in plain}
    victim = (
        project / "data" / "target" / "7" / sorted(os.listdir(project / "data" / "target" / "7"))[3]
    )
    original = victim.read_bytes()
    try:
        victim.write_bytes(original[: len(original) // 2])
        bad = sh(project, "tlops", "run", "--out", "runs/bad", check=False)
        assert bad.returncode == 1
        assert "FAILED: every file decodes" in bad.stderr
        assert f"data/target/7/{victim.name}" in bad.stderr
        assert "truncated" in bad.stderr
        assert "target: 1797 images" not in bad.stdout  # no summary: the run stopped
    finally:
        victim.write_bytes(original)


def test_step_cli_errors_are_clear(project: Path, tmp_path: Path) -> None:
    missing = sh(
        project,
        "tlops",
        "step",
        "ingest_data",
        "-S",
        f"data.target={tmp_path / 'nope'}",
        "--dataset",
        str(tmp_path / "o"),
        check=False,
    )
    assert missing.returncode == 1
    assert "data directory does not exist" in missing.stderr
    assert not (tmp_path / "o").exists()
    bad_param = sh(
        project,
        "tlops",
        "step",
        "ingest_data",
        "--dataset",
        str(tmp_path / "o"),
        "--set",
        "ingest_data.split.train=2",
        check=False,
    )
    assert bad_param.returncode == 1 and "ingest_data.split" in bad_param.stderr


def test_demo_drops(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        (REPO / "params.yaml")
        .read_text()
        .replace("data/source", str(tmp_path / "s"))
        .replace("data/target", str(tmp_path / "t"))
    )
    demo = ("tlops", "data", "demo", "--params", str(params), "--no-dvc", "--target-only")
    wrote = sh(tmp_path, *demo, "--drops", "1")
    first = {p.relative_to(tmp_path / "t") for p in (tmp_path / "t").rglob("*.png")}
    assert f"target images (drops 1..1) to {tmp_path / 't'}" in " ".join(wrote.stdout.split())
    sh(tmp_path, *demo, "--drops", "2")
    second = {p.relative_to(tmp_path / "t") for p in (tmp_path / "t").rglob("*.png")}
    assert 590 <= len(first) <= 610 and 1190 <= len(second) <= 1210
    assert first < second  # a new drop only adds images
    assert {p.parts[0] for p in first} == {str(i) for i in range(10)}
    assert not (tmp_path / "s").exists()  # --target-only: the source is left alone
    again = sh(tmp_path, *demo, "--if-missing")
    assert "present" in again.stdout


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        value = value[part]
    return value


def test_the_repository_holds_a_dvc_baseline_of_the_defaults() -> None:
    """A fresh clone can `dvc metrics diff` / `dvc exp show` against the committed defaults.

    dvc.lock and the uncached outputs (metrics, plots, decision) of a `make repro` on
    params.yaml's defaults are committed; this fails when params.yaml moved on without them.
    """
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    listed = sh(REPO, "dvc", "stage", "list", "--name-only").stdout.split()
    assert sorted(lock["stages"]) == sorted(listed)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stale = [
        f"{stage}: {key} is {value!r} in dvc.lock, {_lookup(params, key)!r} in params.yaml"
        for stage, entry in lock["stages"].items()
        for key, value in entry.get("params", {}).get("params.yaml", {}).items()
        if _lookup(params, key) != value
    ]
    assert not stale, (
        "the committed baseline is of other params (make repro, commit):\n" + "\n".join(stale)
    )
    shown = json.loads(sh(REPO, "dvc", "metrics", "show", "--json").stdout)
    (metrics,) = [v["data"] for v in shown.values()]
    baseline = metrics["outputs/evaluate/metrics.json"]["data"]
    assert 0.9 < baseline["accuracy"] <= 1.0
