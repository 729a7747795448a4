"""Fixtures of the unit tests that train for real (a real model, tiny data)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tlops.config import Params


@pytest.fixture
def loop_inputs(params: Params, make_tree: Callable[..., Path], tmp_path: Path) -> Any:
    from tests.helpers import ingest
    from tlops.data.dataset import load_splits
    from tlops.models.init import create_model
    from tlops.training.strategies import TrainData

    classes = ["cat", "dog", "fox"]
    root = make_tree(per_class=8, size=16)
    fast = params.model_copy(update={"model": params.model.model_copy(update={"image_size": 32})})
    ingest(fast, root, tmp_path / "ingest")
    splits = load_splits(fast, tmp_path / "ingest", classes, ("train", "val"))
    cfg = fast.train.model_copy(update={"epochs": 2, "batch_size": 8, "trainable_stages": 1})

    def make() -> tuple[Any, ...]:
        torch.manual_seed(0)
        model = create_model("timm:tf_efficientnet_lite0", classes, dropout=0.2)
        return model, TrainData(classes, splits["train"], splits["val"]), cfg

    return make
