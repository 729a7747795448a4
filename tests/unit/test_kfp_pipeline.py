"""The compiled KFP pipeline: golden file, cluster settings in the spec, submit arguments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipelines.cluster import COMPILED, arguments, compile_training, kfp_cron

from tests.conftest import REPO
from tlops.config import Params, load_params

GOLDEN = COMPILED / "training.yaml"


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params(REPO / "params.yaml")


@pytest.fixture(scope="module")
def compiled(params: Params, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_training(params, tmp_path_factory.mktemp("kfp") / "training.yaml")


def test_golden_file_is_up_to_date(compiled: Path) -> None:
    assert compiled.read_text() == GOLDEN.read_text(), (
        "pipelines/compiled/training.yaml is stale: run `make compile` and commit it"
    )


def _documents(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    pipeline, platform = list(yaml.safe_load_all(path.read_text()))
    return pipeline, platform


def _executor(pipeline: dict[str, Any], task: str) -> dict[str, Any]:
    component = pipeline["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    executor = pipeline["components"][component]["executorLabel"]
    return dict(pipeline["deploymentSpec"]["executors"][executor])


def test_compiled_spec_loads_back_with_the_sdk() -> None:
    from kfp import components

    loaded = components.load_component_from_file(str(GOLDEN))
    assert loaded.name == "tlops-training"
    inputs = loaded.component_spec.inputs or {}
    assert {"params", "target_dir", "source_dir", "target_data_version", "checkpoint_root"} <= set(
        inputs
    )
    assert set(loaded.component_spec.outputs or {}) >= {"evaluation", "decision", "model"}


def test_gpu_requests_and_resources(params: Params) -> None:
    pipeline, _ = _documents(GOLDEN)
    for task in ("train", "extract-features"):
        resources = _executor(pipeline, task)["container"]["resources"]
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert str(resources["accelerator"]["resourceCount"]) == "1"
        if task == "train":
            assert resources["cpuLimit"] == 8.0 and resources["memoryLimit"] == 32.0
    for task in ("ingest-data", "evaluate", "register-model"):
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


def test_retries_and_caching() -> None:
    pipeline, _ = _documents(GOLDEN)
    tasks = pipeline["root"]["dag"]["tasks"]
    assert tasks["train"]["retryPolicy"]["maxRetryCount"] == 3
    for name, task in tasks.items():
        cached = task.get("cachingOptions", {}).get("enableCache", False)
        assert cached == name.startswith(("ingest-data", "validate-data", "extract-features")), name


def test_parameter_defaults_are_params_yaml(params: Params) -> None:
    pipeline, _ = _documents(GOLDEN)
    inputs = pipeline["root"]["inputDefinitions"]["parameters"]
    assert json.loads(inputs["params"]["defaultValue"]) == params.model_dump(mode="json")
    assert inputs["target_dir"]["defaultValue"] == "data/target"


def test_validation_gates_training() -> None:
    pipeline, _ = _documents(GOLDEN)
    tasks = pipeline["root"]["dag"]["tasks"]
    assert {"validate-data", "validate-data-2"} <= set(tasks["extract-features"]["dependentTasks"])


def test_submit_arguments(params: Params) -> None:
    args = arguments(params, ["train.lr=0.01", "target_dir=/mnt/data", "model.pretrained=false"])
    assert args["target_dir"] == "/mnt/data"
    resolved = json.loads(args["params"])
    assert resolved["train"]["lr"] == 0.01 and resolved["model"]["pretrained"] is False
    assert arguments(params, []) == {}
    for bad, fragment in [
        ("train.nope=1", "no key 'nope'"),
        ("nosection.lr=1", "not a section"),
        ("train.lr", "key=value"),
        ("train.epochs=0", "epochs"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            arguments(params, [bad])


def test_cron() -> None:
    assert kfp_cron("0 3 * * 1") == "0 0 3 * * 1"
    assert kfp_cron("30 0 3 * * 1") == "30 0 3 * * 1"
    with pytest.raises(ValueError, match="5 fields"):
        kfp_cron("every monday")


def test_one_name_per_step_everywhere() -> None:
    from components import FUNCTIONS

    from tlops.cli import step_app
    from tlops.steps import STEPS

    steps = set(STEPS)
    assert set(FUNCTIONS) == steps
    assert {command.name for command in step_app.registered_commands} == steps
    assert set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]) == steps
    for step in steps:
        assert (REPO / "components" / f"{step}.py").is_file()
        assert (REPO / "src" / "tlops" / "steps" / f"{step}.py").is_file()
    sections = set(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert steps <= sections  # each step has its params.yaml section
