"""Registry helpers on a real (SQLite) MLflow store."""

from __future__ import annotations

from pathlib import Path

import mlflow

from tlops.config import TrackingConfig
from tlops.tracking.registry import champion_classes


def test_champion_classes_come_from_the_registry(tmp_path: Path) -> None:
    cfg = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert champion_classes(cfg, "m") is None  # no store yet: none is created to find out
    assert not (tmp_path / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    assert champion_classes(cfg, "m") is None  # a store, no registered model
    client.create_registered_model("m")
    version = client.create_model_version("m", str(tmp_path), tags={"classes": "cat,dog"})
    assert champion_classes(cfg, "m") is None  # a version, but no champion alias
    client.set_registered_model_alias("m", "champion", version.version)
    assert champion_classes(cfg, "m") == (["cat", "dog"], "1")
