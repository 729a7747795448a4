"""Shared fixtures: tiny ImageFolder trees and params tuned for them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import save_image
from tlops.config import Params, load_params

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("cat", "dog", "fox")


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    # every test gets its own MLflow store: a champion in the developer's mlflow.db must not
    # change what validate_data expects
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[..., Path]:
    """Build ``root/<class>/img_<i>.png`` (or ``root/<split>/<class>/...``) with unique images."""
    counter: Iterator[int] = iter(range(10**6))

    def build(
        name: str = "data",
        classes: tuple[str, ...] = CLASSES,
        per_class: int = 12,
        splits: tuple[str, ...] | None = None,
        size: int = 16,
    ) -> Path:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        for label in classes:
            for split in splits or (None,):
                folder = root / split / label if split else root / label
                for i in range(per_class):
                    save_image(folder / f"img_{i:03d}.png", next(counter), size=size)
        return root

    return build


@pytest.fixture
def params() -> Params:
    """Default params with thresholds that fit the tiny trees of ``make_tree``."""
    return load_params(
        REPO / "params.yaml",
        {
            "validate_data.classes": list(CLASSES),
            "validate_data.min_images_per_class": 5,
            "validate_data.min_images_per_split_class": 0,
            "validate_data.max_imbalance_ratio": 3.0,
        },
    )
