"""The warm task runner and KFP's stock SubprocessRunner give the same run.

The session's first pipeline run (``two_runs``, warm: the default of ``tlops run``) is run again
with ``--runner subprocess`` in a copy of the same tiny project with an MLflow store of its own:
the same metrics, the same model weights to the byte, the same registry decision.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import sh
from tests.helpers import tiny_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _outputs(run_dir: Path) -> dict[str, Path]:
    """Each task's output folder of a local run, by task."""
    found = {}
    for name, port in (
        ("train", "model"),
        ("evaluate", "evaluation"),
        ("register-model", "decision"),
    ):
        (folder,) = run_dir.glob(f"kfp/*/{name}/{port}")
        found[name] = folder
    return found


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_warm_runner_gives_what_the_stock_runner_gives(
    pipeline_project: Path, two_runs: tuple[str, str], tmp_path: Path
) -> None:
    assert "registered: tlops-digits version 1" in two_runs[0]
    stock_project = tiny_project(tmp_path / "stock", Path(__file__).parents[2])
    shutil.copy(pipeline_project / "params.yaml", stock_project / "params.yaml")
    out = sh(stock_project, "tlops", "run", "--runner", "subprocess", "--out", "runs/stock").stdout
    assert "registered: tlops-digits version 1" in out

    warm, stock = _outputs(pipeline_project / "runs/first"), _outputs(stock_project / "runs/stock")
    metrics = [json.loads((o["evaluate"] / "metrics.json").read_text()) for o in (warm, stock)]
    assert metrics[0] == metrics[1]
    assert _sha256(warm["train"] / "model.pt") == _sha256(stock["train"] / "model.pt")
    decisions = [
        json.loads((o["register-model"] / "decision.json").read_text()) for o in (warm, stock)
    ]
    for key in ("promote", "reasons", "version", "aliases", "model_name", "candidate"):
        assert decisions[0][key] == decisions[1][key], key
