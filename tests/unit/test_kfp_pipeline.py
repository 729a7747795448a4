"""The compiled KFP pipeline: golden file, graph per strategy, caching, cluster settings."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipelines.cluster import COMPILED, compile_pipeline, compile_training, kfp_cron

from tests.conftest import REPO
from tlops.config import Params, apply_overrides, load_params

GOLDEN = COMPILED / "training.yaml"


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params(REPO / "params.yaml")


@pytest.fixture(scope="module")
def compiled(params: Params, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_training(params, tmp_path_factory.mktemp("kfp") / "training.yaml")


@pytest.fixture(scope="module")
def probe(params: Params, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with_probe = apply_overrides(params, {"train.strategy": "linear_probe"})
    return compile_training(with_probe, tmp_path_factory.mktemp("kfp") / "probe.yaml")


@pytest.fixture(scope="module")
def scheduled(params: Params, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kfp") / "scheduled.yaml"
    return compile_training(params, out, pinned_data=False)


def test_golden_file_is_up_to_date(compiled: Path) -> None:
    assert compiled.read_text() == GOLDEN.read_text(), (
        "pipelines/compiled/training.yaml is stale: run `make compile` and commit it"
    )


@pytest.fixture(scope="module")
def retraining(params: Params, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kfp") / "retraining.yaml"
    return compile_pipeline(params, out, "retraining")


def test_retraining_golden_file_is_up_to_date(retraining: Path) -> None:
    assert retraining.read_text() == (COMPILED / "retraining.yaml").read_text(), (
        "pipelines/compiled/retraining.yaml is stale: run `make compile` and commit it"
    )


def _branches(pipeline: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """detect_change's action -> (the condition task, the tasks inside it)."""
    found = {}
    for task in pipeline["root"]["dag"]["tasks"].values():
        condition = task.get("triggerPolicy", {}).get("condition", "")
        if "==" in condition:
            action = condition.rpartition("==")[2].strip().strip("'")
            inner = pipeline["components"][task["componentRef"]["name"]]["dag"]["tasks"]
            # KFP numbers a task name used again in another branch (train-2)
            found[action] = (task, {re.sub(r"-\d+$", "", k): v for k, v in inner.items()})
    return found


def test_retraining_trains_only_when_detect_change_says_so(retraining: Path) -> None:
    pipeline, _ = _documents(retraining)
    tasks = pipeline["root"]["dag"]["tasks"]
    assert {"ingest-data", "validate-data", "detect-change"} <= set(tasks)
    check = tasks["detect-change"]["inputs"]["artifacts"]
    assert check["report"]["taskOutputArtifact"]["producerTask"] == "validate-data"
    branches = _branches(pipeline)
    assert set(branches) == {"retrain", "adapt", "ask"}
    assert len(tasks) == 3 + len(branches)  # skip runs nothing after detect_change
    for condition, _inner in branches.values():
        assert "detect-change" in condition["dependentTasks"]
    model_steps = {"train", "evaluate", "register-model"}
    assert (
        model_steps <= set(branches["retrain"][1]) and "select-labels" not in branches["retrain"][1]
    )
    # adapt: mcc learns from the source domain, so it is ingested and validated there
    assert model_steps | {"select-labels", "ingest-data", "validate-data"} <= set(
        branches["adapt"][1]
    )
    assert set(branches["ask"][1]) == {"select-labels"}
    for action in ("retrain", "adapt"):
        inner = branches[action][1]
        # train continues detect_change's MLflow run, warm-starts from the champion it names
        # and takes its overrides; register_model holds what was adapted without labels
        for step in ("train", "register-model"):
            change = inner[step]["inputs"]["artifacts"]["change"]
            assert change["componentInputArtifact"].startswith(
                "pipelinechannel--detect-change-change"
            )
    assert not any(t.get("cachingOptions", {}).get("enableCache") for t in tasks.values())
    assert pipeline["pipelineInfo"]["name"] == "tlops-retraining"


def test_unknown_pipeline_is_refused(params: Params, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected one of training, retraining"):
        compile_pipeline(params, tmp_path / "x.yaml", "nightly")


def _documents(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    pipeline, platform = list(yaml.safe_load_all(path.read_text()))
    return pipeline, platform


def _executor(pipeline: dict[str, Any], task: str) -> dict[str, Any]:
    component = pipeline["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    executor = pipeline["components"][component]["executorLabel"]
    return dict(pipeline["deploymentSpec"]["executors"][executor])


def _tasks(path: Path) -> dict[str, Any]:
    return dict(_documents(path)[0]["root"]["dag"]["tasks"])


def test_compiled_spec_loads_back_with_the_sdk() -> None:
    from kfp import components

    loaded = components.load_component_from_file(str(GOLDEN))
    assert loaded.name == "tlops-training"
    inputs = loaded.component_spec.inputs or {}
    assert set(inputs) == {
        "params",
        "checkpoint_root",
        "data_version_target",
        "data_version_source",
    }
    assert not inputs["data_version_target"].optional  # each run names its data's version
    assert set(loaded.component_spec.outputs or {}) == {
        "dataset_target",
        "report_target",
        "model",
        "evaluation",
        "decision",
        "deployment",
    }


def test_graph_holds_only_what_the_strategy_needs(probe: Path) -> None:
    # finetune trains on images: no features, no source domain
    assert set(_tasks(GOLDEN)) == {
        "ingest-data",
        "validate-data",
        "train",
        "evaluate",
        "register-model",
        "deploy",  # says "no cluster configured" and does nothing, unless deploy.target is set
    }
    probe_tasks = _tasks(probe)
    assert set(probe_tasks) == set(_tasks(GOLDEN)) | {"extract-features"}
    features = probe_tasks["train"]["inputs"]["artifacts"]["features"]
    assert features["taskOutputArtifact"]["producerTask"] == "extract-features"
    assert "validate-data" in probe_tasks["extract-features"]["dependentTasks"]


def test_gpu_requests_and_resources(params: Params, probe: Path) -> None:
    pipeline, _ = _documents(probe)
    for task in ("train", "extract-features"):  # declared resources="gpu"
        resources = _executor(pipeline, task)["container"]["resources"]
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert str(resources["accelerator"]["resourceCount"]) == "1"
        if task == "train":
            assert resources["cpuLimit"] == 8.0 and resources["memoryLimit"] == 32.0
    for task in ("ingest-data", "validate-data", "evaluate", "register-model"):
        assert "accelerator" not in _executor(pipeline, task)["container"].get("resources", {})
    images = {e["container"]["image"] for e in pipeline["deploymentSpec"]["executors"].values()}
    assert images == {params.kfp.base_image}
    commands = json.dumps(pipeline["deploymentSpec"])
    assert "packages_to_install" not in commands and "pip install" not in commands.replace(
        "kfp==", ""
    )


def test_node_selector_tolerations_shm_secrets_and_pvc() -> None:
    _, platform = _documents(GOLDEN)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    train = next(v for k, v in executors.items() if k.endswith("-train"))
    assert train["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert train["tolerations"][0] == {
        "key": "nvidia.com/gpu",
        "operator": "Exists",
        "effect": "NoSchedule",
    }
    assert train["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    assert train["emptyDirMounts"][0]["medium"] == "Memory"
    assert train["pvcMount"][0]["mountPath"] == "/checkpoints"
    for executor in executors.values():
        secrets = {
            s["secretName"]: {k["secretKey"]: k["envVar"] for k in s["keyToEnv"]}
            for s in executor["secretAsEnv"]
        }
        assert secrets["tlops-mlflow"]["tracking_uri"] == "MLFLOW_TRACKING_URI"
        assert secrets["tlops-s3"]["secret_access_key"] == "AWS_SECRET_ACCESS_KEY"


def _cached(path: Path) -> dict[str, Any]:
    return {
        name: task
        for name, task in _tasks(path).items()
        if task.get("cachingOptions", {}).get("enableCache", False)
    }


@pytest.mark.parametrize("which", ["default", "linear_probe"])
def test_caching_cannot_go_stale(which: str, probe: Path) -> None:
    path = GOLDEN if which == "default" else probe
    pipeline, _ = _documents(path)
    tasks = _tasks(path)
    cached = _cached(path)
    assert tasks["train"]["retryPolicy"]["maxRetryCount"] == 3
    assert set(cached) == {"ingest-data"} | ({"extract-features"} if which != "default" else set())
    for name, task in cached.items():
        # 1. no cached task takes, creates or returns an MLflow run id
        component = pipeline["components"][task["componentRef"]["name"]]
        interface = json.dumps(
            [component.get("inputDefinitions", {}), component.get("outputDefinitions", {})]
        )
        assert "run_id" not in interface and "mlflow" not in interface, name
        # 2. its cache key holds the data version: directly (a pipeline parameter resolved
        # before the run), or through every input artifact, made by a task whose key holds it
        parameters = task["inputs"].get("parameters", {})
        version = parameters.get("data_version", {}).get("componentInputParameter", "")
        artifacts = task["inputs"].get("artifacts", {}).values()
        producers = [a["taskOutputArtifact"]["producerTask"] for a in artifacts]
        assert version.startswith("data_version_") or (
            producers and all(p in cached for p in producers)
        ), name
    assert tasks["ingest-data"]["inputs"]["parameters"]["data_version"] == {
        "componentInputParameter": "data_version_target"
    }


def test_a_schedule_caches_no_data_step(scheduled: Path) -> None:
    # a recurring run cannot know its data's version in advance: nothing may be cached
    assert _cached(scheduled) == {}
    pipeline, _ = _documents(scheduled)
    inputs = pipeline["root"]["inputDefinitions"]["parameters"]
    assert inputs["data_version_target"]["isOptional"] is True


def test_parameter_defaults_are_params_yaml(params: Params) -> None:
    pipeline, _ = _documents(GOLDEN)
    inputs = pipeline["root"]["inputDefinitions"]["parameters"]
    assert json.loads(inputs["params"]["defaultValue"]) == params.model_dump(mode="json")
    assert "target_dir" not in inputs  # where the data is: params data.target, nowhere else


def test_validation_gates_training() -> None:
    tasks = _tasks(GOLDEN)
    report = tasks["train"]["inputs"]["artifacts"]["report"]["taskOutputArtifact"]
    assert report["producerTask"] == "validate-data"
    assert (
        tasks["validate-data"]["inputs"]["artifacts"]["dataset"]["taskOutputArtifact"][
            "producerTask"
        ]
        == "ingest-data"
    )


@pytest.mark.parametrize("strategy", ["source_only", "dan", "coral", "dann", "mcc", "multitask"])
def test_domain_adaptation_ingests_and_validates_the_source_for_train(
    strategy: str, params: Params, tmp_path: Path
) -> None:
    # the domains do not wait for each other (their tasks run side by side where cores allow);
    # train waits for both validations and gets the source's dataset and its passed validation
    with_da = apply_overrides(params, {"train.strategy": strategy})
    tasks = _tasks(compile_training(with_da, tmp_path / "da.yaml"))
    assert not tasks["ingest-data-2"].get("dependentTasks")
    assert {"validate-data", "validate-data-2"} <= set(tasks["train"]["dependentTasks"])
    assert tasks["ingest-data-2"]["inputs"]["parameters"]["domain"]["runtimeValue"] == {
        "constant": "source"
    }
    artifacts = tasks["train"]["inputs"]["artifacts"]
    assert artifacts["source_dataset"]["taskOutputArtifact"]["producerTask"] == "ingest-data-2"
    assert artifacts["source_report"]["taskOutputArtifact"]["producerTask"] == "validate-data-2"
    assert artifacts["dataset"]["taskOutputArtifact"]["producerTask"] == "ingest-data"
    evaluate = tasks["evaluate"]["inputs"]["artifacts"]
    assert evaluate["source_dataset"]["taskOutputArtifact"]["producerTask"] == "ingest-data-2"


@pytest.mark.parametrize("pipeline", ["training", "retraining"])
def test_a_search_puts_tune_before_train_which_takes_its_best_params(
    pipeline: str, params: Params, tmp_path: Path
) -> None:
    def every_task(path: Path) -> dict[str, Any]:  # the root's and every branch's (dsl.If)
        spec = _documents(path)[0]
        dags = [spec["root"], *spec["components"].values()]
        return {k: v for dag in dags for k, v in dag.get("dag", {}).get("tasks", {}).items()}

    searched = apply_overrides(params, {"tune.trials": 4})
    plain = every_task(compile_pipeline(params, tmp_path / "plain.yaml", pipeline))
    assert not any(name.startswith("tune") for name in plain)
    tasks = every_task(compile_pipeline(searched, tmp_path / "tuned.yaml", pipeline))
    tune = next(name for name in tasks if name.startswith("tune"))  # the retrain branch's
    train = next(name for name in tasks if name == "train" or name.startswith("train-"))
    assert tune in tasks[train]["dependentTasks"]
    tuned = tasks[train]["inputs"]["artifacts"]["tuned"]["taskOutputArtifact"]
    assert tuned == {"producerTask": tune, "outputArtifactKey": "tuned"}
    # the tune task gets what train reads (its data, its validation) and its checkpoint root
    assert {"dataset", "report"} <= set(tasks[tune]["inputs"]["artifacts"])
    assert "checkpoint_root" in tasks[tune]["inputs"]["parameters"]


def test_pipelines_build_without_the_training_stack(tmp_path: Path) -> None:
    # `tlops run`'s own process, `tlops compile` and the scheduler build the graph from the
    # strategies' declared needs: torch, pandas and the rest load in the tasks, not there
    code = """
import sys
from pathlib import Path
from pipelines.cluster import compile_pipeline, compile_training
from tlops.config import apply_overrides, load_params
params, out = load_params(Path(sys.argv[1])), Path(sys.argv[2])
for strategy in ("finetune", "linear_probe", "coral", "distill"):
    compile_training(apply_overrides(params, {"train.strategy": strategy}), out / "t.yaml")
compile_pipeline(params, out / "r.yaml", "retraining")
heavy = ("torch", "pandas", "sklearn", "mlflow", "great_expectations")
assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]
"""
    args = [sys.executable, "-c", code, str(REPO / "params.yaml"), str(tmp_path)]
    subprocess.run(args, cwd=REPO, check=True)


def test_cron() -> None:
    assert kfp_cron("0 3 * * 1") == "0 0 3 * * 1"
    assert kfp_cron("30 0 3 * * 1") == "30 0 3 * * 1"
    with pytest.raises(ValueError, match="5 fields"):
        kfp_cron("every monday")
