"""A training process killed with SIGKILL resumes from its last checkpoint to the same result.

``dann`` too: its domain discriminator (and its optimiser state) is part of the checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import CLASSES, REPO
from tests.helpers import ingest, run_step, training_inputs, validate
from tlops.config import load_params
from tlops.io import read_json

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent


def history(path: Path) -> list[dict[str, float]]:
    return [
        {k: v for k, v in row.items() if k != "epoch_seconds"}
        for row in read_json(path / "history.json")
    ]


@pytest.mark.parametrize("strategy", ["finetune", "dann"])
def test_sigkill_then_resume(strategy: str, make_tree: Callable[..., Path], tmp_path: Path) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["train"].update({"epochs": 6, "batch_size": 8, "trainable_stages": 2})
        raw["train"]["strategy"] = strategy
        raw["train"]["da"]["target_batch_size"] = 4

    tree = make_tree(per_class=20, size=16)
    params_file, inputs = training_inputs(tree, tmp_path, list(CLASSES), REPO, edit)
    params = load_params(params_file)
    source_args: list[str] = []
    if strategy == "dann":
        source = make_tree(name="source", per_class=20, size=16)
        ingest(params, source, tmp_path / "source_ingest", domain="source")
        validate(params, tmp_path / "source_ingest", tmp_path / "source_report")
        inputs["source_dataset"] = tmp_path / "source_ingest"
        inputs["source_report"] = tmp_path / "source_report"
        source_args = ["--source-dataset", str(inputs["source_dataset"])]
        source_args += ["--source-report", str(inputs["source_report"])]
    run_step("train", params, inputs, {"model": tmp_path / "uninterrupted"})

    command = [
        str(BIN / "tlops"),
        "step",
        "train",
        "--params",
        str(params_file),
        "--dataset",
        str(tmp_path / "ingest"),
        "--report",
        str(tmp_path / "report"),
        "--model",
        str(tmp_path / "killed"),
        "--checkpoint-root",
        str(tmp_path / "ckpt"),
        *source_args,
    ]
    env = {**os.environ, "COLUMNS": "200"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not list((tmp_path / "ckpt").glob("*/last.pt")):
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed").exists()  # no partial output

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert "resumed after epoch" in resumed.stdout, resumed.stdout
    assert history(tmp_path / "killed") == history(tmp_path / "uninterrupted")
    killed = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)["state_dict"]
    whole = torch.load(tmp_path / "uninterrupted" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(killed[k], whole[k]) for k in whole)
    assert not list((tmp_path / "ckpt").glob("*/last.pt"))  # the finished run cleaned up
