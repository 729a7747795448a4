"""Transfer strategies through the whole pipeline (KFP local), as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import REPO
from tests.helpers import tiny_project
from tlops.data.demo import mnist_source

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent
MODEL = "tlops-digits"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny target project, with 30 MNIST digits per class as its source domain."""
    root = tiny_project(tmp_path_factory.mktemp("transfer"), REPO)
    images, labels = mnist_source()
    for label in range(10):
        folder = root / "data" / "source" / str(label)
        folder.mkdir(parents=True)
        for i in np.flatnonzero(labels == label)[:30]:
            Image.fromarray(images[i], mode="L").save(folder / f"{i}.png")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["source"] = "data/source"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _run(project: Path, *overrides: str) -> str:
    args = ["tlops", "run", *(x for o in overrides for x in ("-S", o))]
    result = subprocess.run(
        args,
        cwd=project,
        env={
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "COLUMNS": "200",
            "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        },
        text=True,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def adapted(project: Path) -> str:
    """An unsupervised CORAL run (no target label): the project's first model and champion.

    The floor is off for it: a domain-adapted model of 2 epochs at 32 px is no release, and the
    distillation test below needs a champion to learn from (one pipeline run less than training
    a teacher of its own).
    """
    return _run(
        project,
        "train.strategy=coral",
        "train.target_labels=0",
        "model.align.content_crop=true",
        "model.align.resolution=8",
        "register_model.gate.floor=0",
    )


def test_unsupervised_domain_adaptation_end_to_end(project: Path, adapted: str) -> None:
    import mlflow

    out = adapted
    # the source domain is ingested and validated for a strategy that uses it
    for task in ("ingest-data", "ingest-data-2", "validate-data-2", "train", "register-model"):
        assert f"] Task '{task}' finished with status SUCCESS" in out, out
    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("tlops")
    (run,) = client.search_runs([experiment.experiment_id], filter_string="tags.strategy = 'coral'")
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["strategy"] == "coral" and tags["target_labels"] == "0"
    assert tags["selection"] == "source val"
    assert (
        "train/loss_coral" in metrics
        and len(client.get_metric_history(run.info.run_id, "train/loss_coral")) == 2
    )
    assert run.data.params["model.align.resolution"] == "8"
    # evaluate measured how far apart the domains' features are, before and after training
    for when in ("before", "after"):
        assert metrics[f"transfer/mmd2_{when}"] >= 0 and 0 < metrics[f"transfer/mmd_p_{when}"] <= 1
    version = client.get_model_version(MODEL, "1")
    assert version.run_id == run.info.run_id and "challenger" in version.aliases


def test_distill_a_student_from_the_champion_end_to_end(project: Path, adapted: str) -> None:
    import mlflow

    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias(MODEL, "champion")  # the adapted model
    teacher_run = champion.run_id
    _run(
        project,
        "train.strategy=distill",
        "model.backbone=timm:mobilenetv3_small_050",
        "model.pretrained=false",
    )
    experiment = client.get_experiment_by_name("tlops")
    run = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])[0]
    assert run.info.run_id != teacher_run
    assert run.data.tags["strategy"] == "distill"
    assert run.data.tags["teacher"] == f"models:/{MODEL}/{champion.version}"
    metrics = run.data.metrics
    assert (
        metrics["transfer/distill.student_params"] * 4 < metrics["transfer/distill.teacher_params"]
    )
    assert metrics["transfer/distill.student_images_per_s"] > 0 and "train/loss_kd" in metrics
    # registered through the same gate, compared with the champion (its teacher)
    version = client.get_model_version_by_alias(MODEL, "challenger")
    assert version.run_id == run.info.run_id and "test_champion/macro_f1" in metrics


def test_a_strategy_of_ones_own_runs_through_the_pipeline_from_its_one_file(
    project: Path,
) -> None:
    import mlflow

    # tests/integration/plugin_strategy.py is the only file that names it: params.yaml, tlops
    # and the pipeline are untouched; the plug-in and its section come from the command line
    out = _run(
        project,
        "plugins=[tests.integration.plugin_strategy]",
        "train.strategy=tempered",
        "train.tempered.temperature=2.0",
        "train.epochs=1",
    )
    assert "train: tempered from " in out and "best epoch 1 of 1" in out
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    run = mlflow.search_runs(
        experiment_names=["tlops"], filter_string="tags.strategy = 'tempered'", output_format="list"
    )[0]
    assert run.data.params["train.tempered.temperature"] == "2.0"
    assert run.data.metrics["logit_temperature"] == 2.0  # its own term, logged per epoch
