"""The serving story as a user runs it: ``tlops serve-demo`` (``make serve-demo``) on tiny params.

A champion trained on drop 1; the real predictor on loopback records the drifted digits a client
sends; the retraining check, with the data unchanged, reports drift from the traffic alone;
the kept images come back out for labeling; and the next check reads on from where this one
stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent


def _tlops(cwd: Path, *args: str, db: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", COLUMNS="200")
    if db is not None:
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    done = subprocess.run(
        [str(BIN / "tlops"), *args], cwd=cwd, env=env, text=True, capture_output=True, check=False
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_served_drift_is_seen_by_the_check_with_the_data_unchanged(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["image_size"] = 32
    params["train"].update({"epochs": 2, "trainable_stages": 3, "batch_size": 32})
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(params, sort_keys=False))
    work = tmp_path / "story"

    out = _tlops(tmp_path, "serve-demo", "--workdir", str(work), "--params", str(tiny))
    assert "tlops-digits v1 is the champion" in out
    assert "10 requests answered" in out
    assert "traffic: 160 records in" in out and ", 0 dropped" in out
    (found,) = (work / "runs/2-served-traffic").glob("kfp/*/detect-change/change/change.json")
    change = json.loads(found.read_text())
    assert change["action"] == "skip" and change["triggers"] >= 1
    assert change["reasons"][0].startswith("served traffic drift: p-value")
    assert change["traffic"]["images"] == 160 and change["traffic"]["drift"]["p_value"] < 0.01
    assert any(r.startswith("no new data") for r in change["reasons"])
    assert "traffic: 160 images written to runs/served-images" in out
    assert len(list((work / "runs/served-images").glob("*.png"))) == 160
    assert '"datatype": "BYTES"' in out and '"model_version": "1"' in out

    # the next check reads on from where this one stopped: nothing served since
    _tlops(work, "retrain", "--out", "runs/3-again", db=work / "mlflow.db")
    (again,) = (work / "runs/3-again").glob("kfp/*/detect-change/change/change.json")
    reasons = json.loads(again.read_text())["reasons"]
    assert any(r.startswith("served traffic: 0 images since the last check") for r in reasons)
