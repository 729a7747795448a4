"""Registry helpers on a real (SQLite) MLflow store."""

from __future__ import annotations

from pathlib import Path

import mlflow

from tlops.config import TrackingConfig
from tlops.io import read_json
from tlops.tracking.registry import champion_classes


def test_champion_classes_come_from_the_registry(tmp_path: Path) -> None:
    cfg = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = tmp_path / "classes.json"
    assert champion_classes(cfg, "m", out) is None  # no registered model, no champion
    client = mlflow.MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    client.create_registered_model("m")
    version = client.create_model_version("m", str(tmp_path), tags={"classes": "cat,dog"})
    assert champion_classes(cfg, "m", out) is None  # a version, but no champion alias
    client.set_registered_model_alias("m", "champion", version.version)
    assert champion_classes(cfg, "m", out) == out
    assert read_json(out)["classes"] == ["cat", "dog"]
