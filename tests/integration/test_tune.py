"""The tune step: an Optuna search whose trials are MLflow child runs, its best params in train.

One search on tiny trees through the step (mcc without target labels: the label-free
criterion judges every trial), and one through the compiled pipeline as a user starts it
(`tlops run -S tune.trials=2`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, sh
from tests.helpers import da_inputs, fast_da, ingest, run_step, tiny_project, validate
from tlops.config import Params
from tlops.io import read_json

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _runs(uri: str) -> list[Any]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("tlops")
    return list(client.search_runs([experiment.experiment_id]))


def test_every_trial_is_a_child_run_and_train_takes_the_best_trials_params(
    params: Params, domains: dict[str, Path], tmp_path: Path
) -> None:
    inputs = da_inputs(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fast = fast_da(
        params,
        tmp_path,
        **{
            "train.strategy": "mcc",
            "train.target_labels": 0,
            "train.selection.criterion": "snd",
            "tune.trials": 3,
            "tune.startup_trials": 1,
            "tracking.tracking_uri": uri,
            "tracking.artifact_location": str(tmp_path / "artifacts"),
        },
    )
    result = run_step("tune", fast, inputs, {"tuned": tmp_path / "tuned"})
    tuned = read_json(tmp_path / "tuned" / "tuned.json")
    trials = tuned["trials"]
    assert len(trials) == 3 and tuned["metric"] == "select_score"
    assert trials[0]["params"]["mcc.weight"] == fast.train.section("mcc").weight  # as they are
    complete = [t for t in trials if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["value"])
    assert tuned["best_trial"] == best["number"] and tuned["best_value"] == best["value"]
    assert tuned["params"] == {f"train.{k}": v for k, v in best["params"].items()}
    assert set(best["params"]) == {
        "lr", "backbone_lr_mult", "weight_decay", "da.ramp_gamma", "mcc.weight", "mcc.temperature"
    }  # fmt: skip
    assert (tmp_path / "tuned" / "study.png").is_file()
    assert len((tmp_path / "tuned" / "trials.csv").read_text().splitlines()) == 4
    assert f"best trial {best['number']}" in result.summary

    run_step("train", fast, {**inputs, "tuned": tmp_path / "tuned"}, {"model": tmp_path / "m"})
    trained = read_json(tmp_path / "m" / "train.json")
    assert trained["tuned"]["params"] == tuned["params"]
    # the same params, data and seed as the best trial: the same best figure
    assert trained["best_metric"] == pytest.approx(best["value"])

    runs = _runs(uri)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["trial 1", "trial 2", "trial 3"]
    for child in children:
        number = int(child.info.run_name.split()[1])
        trial = next(t for t in trials if t["number"] == number)
        assert child.data.tags["tune.state"] == trial["state"]
        assert float(child.data.params["mcc.weight"]) == pytest.approx(
            trial["params"]["mcc.weight"], rel=1e-3
        )
        assert "val/select_snd" in child.data.metrics  # the per-epoch curves
    assert parent.data.tags["tune.best_trial"] == str(best["number"])
    assert parent.data.tags["tuned"]  # train's tag: what it trained with


def test_a_tiny_search_runs_through_the_pipeline_as_a_user_starts_it(tmp_path: Path) -> None:
    project = tiny_project(tmp_path / "project", REPO)
    out = sh(
        project, "tlops", "run", "-S", "tune.trials=2", "-S", "tune.epochs=1",
        "-S", "train.epochs=1", "--out", "runs/tuned",
    ).stdout  # fmt: skip
    assert "tune: trial 1/2:" in out and "tune: trial 2/2:" in out  # progress per trial
    assert "registered: tlops-digits version 1" in out

    import mlflow

    uri = f"sqlite:///{project / 'mlflow.db'}"
    runs = _runs(uri)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    assert parent.data.tags["tune.metric"] == "val_accuracy"  # with target labels
    # the registry named too: another test of this worker may have set a global one
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version("tlops-digits", "1")
    assert set(json.loads(version.tags["tuned"])) == {
        "train.lr", "train.backbone_lr_mult", "train.weight_decay", "train.label_smoothing"
    }  # fmt: skip


def test_trials_that_diverge_fail_alone_and_train_keeps_its_params(
    params: Params, make_tree: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tlops import plugins
    from tlops.plugins import Dim
    from tlops.training.strategies.finetune import FineTune

    # rates no model survives: every trial's loss turns non-finite in fp32
    monkeypatch.setattr(FineTune, "space", {"lr": Dim(1e6, 1e8, log=True)})
    assert plugins.declaration("finetune").cls.space == FineTune.space
    tree = make_tree(per_class=14, size=16)
    fast = fast_da(params, tmp_path, **{"tune.trials": 2, "train.epochs": 2})
    ingest(fast, tree, tmp_path / "target_ingest")
    validate(fast, tmp_path / "target_ingest", tmp_path / "target_report")
    inputs = {"dataset": tmp_path / "target_ingest", "report": tmp_path / "target_report"}
    result = run_step("tune", fast, inputs, {"tuned": tmp_path / "tuned"})
    tuned = read_json(tmp_path / "tuned" / "tuned.json")
    assert tuned["counts"] == {"complete": 0, "pruned": 0, "failed": 2}
    assert all("loss is nan" in t["error"] or "loss is inf" in t["error"] for t in tuned["trials"])
    assert tuned["params"] == {} and "no trial completed: train keeps its params" in result.summary
    run_step("train", fast, {**inputs, "tuned": tmp_path / "tuned"}, {"model": tmp_path / "m"})
    assert read_json(tmp_path / "m" / "train.json")["tuned"] is None
