"""Data-parallel ``train`` for real: 2 processes with gloo (torchrun) against 1, then a SIGKILL.

The launcher is the step itself (``train.distributed.procs_per_node: 2``): it starts torchrun,
which starts two ``tlops step train`` processes; rank 0 writes the outputs.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

from tests.conftest import CLASSES, REPO
from tests.helpers import run_step, training_inputs
from tlops.config import load_params
from tlops.io import read_json
from tlops.training.distributed import DataParallelError

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent
# 2 processes sum their gradients in another order than one process does (gloo's all-reduce,
# then the mean): float32 rounding, ~1e-7 relative per step, grows over the steps of a run
TOLERANCE = 1e-4


def _history(path: Path) -> list[dict[str, float]]:
    return [
        {k: v for k, v in row.items() if k != "epoch_seconds"}
        for row in read_json(path / "history.json")
    ]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(path / "model.pt", weights_only=True)["state_dict"]
    return state


def _rank_pid(launcher: subprocess.Popen[bytes], rank: int) -> int | None:
    """The pid of the torchrun worker of ``rank`` under ``launcher``, once it is running."""
    try:
        children = psutil.Process(launcher.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            env = child.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if env.get("RANK") == str(rank) and env.get("LOCAL_RANK") is not None:
            return int(child.pid)
    return None


@pytest.fixture
def prepared(make_tree: Callable[..., Path], tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """Tiny validated data and a params file: 3 classes x 22 images, 33 training images.

    A global batch of 8 does not divide 33: the last batch (1 image) leaves rank 1 without a
    row, which must still take part in the all-reduce. Dropout 0: its masks are drawn per
    process (equal in distribution, not in value).
    """

    def edit(raw: dict[str, Any]) -> None:
        raw["model"]["dropout"] = 0.0
        raw["train"].update({"epochs": 4, "batch_size": 8, "trainable_stages": 2})
        raw["train"]["class_weights"] = "balanced"
        raw["train"]["distributed"]["batchnorm"] = "frozen"

    return training_inputs(make_tree(per_class=22, size=16), tmp_path, list(CLASSES), REPO, edit)


def _command(params_file: Path, inputs: dict[str, Path], model: Path, ckpt: Path) -> list[str]:
    return [
        str(BIN / "tlops"),
        "step",
        "train",
        "--params",
        str(params_file),
        "-S",
        "train.distributed.procs_per_node=2",
        "--dataset",
        str(inputs["dataset"]),
        "--report",
        str(inputs["report"]),
        "--model",
        str(model),
        "--checkpoint-root",
        str(ckpt),
    ]


def test_two_gloo_processes_train_as_one_and_resume_after_a_rank_is_killed(
    prepared: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    params_file, inputs = prepared
    env = {**os.environ, "COLUMNS": "200", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    one = tmp_path / "one"
    run_step("train", load_params(params_file), inputs, {"model": one})

    # two processes, uninterrupted
    two = tmp_path / "two"
    shown = subprocess.run(
        _command(params_file, inputs, two, tmp_path / "ckpt-two"),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "on 2 processes" in shown.stdout
    summary = read_json(two / "train.json")
    assert (summary["world_size"], summary["backend"], summary["batchnorm"]) == (
        2,
        "gloo",
        "frozen",
    )
    # the same metrics as one process with the same global batch and seed
    single, double = _history(one), _history(two)
    assert len(single) == len(double) == 4
    for a, b in zip(single, double, strict=True):
        assert a["val_accuracy"] == b["val_accuracy"] and a["lr"] == b["lr"]
        for key in ("train_loss", "val_loss", "val_macro_f1"):
            assert math.isclose(a[key], b[key], rel_tol=TOLERANCE, abs_tol=1e-6), (key, a, b)
    w1, w2 = _weights(one), _weights(two)
    assert max(float((w1[k].float() - w2[k].float()).abs().max()) for k in w1) < 1e-4

    # SIGKILL rank 1 after the first checkpoint, while a later epoch trains
    killed, ckpt = tmp_path / "killed", tmp_path / "ckpt"
    command = _command(params_file, inputs, killed, ckpt)
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not list(ckpt.glob("*/last.pt")):
        assert launcher.poll() is None, "training ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.02)
    pid = _rank_pid(launcher, 1)
    assert pid is not None, "rank 1 is not running"
    os.kill(pid, signal.SIGKILL)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 1, out.decode() + err.decode()
    assert "data-parallel train on 2 processes failed" in err.decode(), err.decode()
    assert not killed.exists()  # no partial output
    # a restart resumes from the last checkpoint and ends as the uninterrupted run, exactly
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed after epoch" in resumed.stderr + resumed.stdout
    assert _history(killed) == double
    w3 = _weights(killed)
    assert all(torch.equal(w3[k], w2[k]) for k in w2)
    assert not list(ckpt.glob("*/last.pt"))  # the finished run cleaned up


def test_a_strategy_that_cannot_run_data_parallel_says_so_before_any_process_starts(
    prepared: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    params_file, inputs = prepared
    params = load_params(
        params_file,
        {"train.strategy": "linear_probe", "train.distributed.procs_per_node": 2},
    )
    with pytest.raises(
        DataParallelError, match=r"train\.strategy linear_probe cannot run data-parallel"
    ):
        run_step("train", params, inputs, {"model": tmp_path / "out"})
    assert not (tmp_path / "out").exists()
