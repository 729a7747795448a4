"""Registry helpers on a real (SQLite) MLflow store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from tests.conftest import REPO
from tests.helpers import changed, repo_params
from tlops.config import load_params
from tlops.tracking.registry import champion_classes


def test_champion_classes_come_from_the_registry(tmp_path: Path) -> None:
    cfg = changed(repo_params().tracking, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert champion_classes(cfg, "m") is None  # no store yet: none is created to find out
    assert not (tmp_path / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    assert champion_classes(cfg, "m") is None  # a store, no registered model
    client.create_registered_model("m")
    version = client.create_model_version("m", str(tmp_path), tags={"classes": "cat,dog"})
    assert champion_classes(cfg, "m") is None  # a version, but no champion alias
    client.set_registered_model_alias("m", "champion", version.version)
    assert champion_classes(cfg, "m") == (["cat", "dog"], "1")


@pytest.mark.parametrize(
    ("setting", "runner", "release"),
    [
        ("auto", "kfp", True),  # tlops run, the cluster pipeline
        ("auto", "dvc", False),  # dvc repro, dvc exp run
        ("auto", "cli", False),  # tlops step by hand
        (True, "dvc", True),  # YAML's true is taken as well as "true"
        ("false", "kfp", False),
    ],
)
def test_experiments_are_not_releases_unless_asked(
    setting: object, runner: str, release: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tlops.tracking.lifecycle import is_release

    monkeypatch.setenv("TLOPS_RUNNER", runner)
    params = load_params(REPO / "params.yaml", {"register_model.release": setting})
    assert is_release(params) is release
    assert params.register_model.experiments_name() == "tlops-digits-experiments"
