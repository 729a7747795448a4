"""One declaration per step: the CLI, the KFP components, dvc.yaml and the docs follow it.

:func:`drift` lists every place that disagrees with the declarations; the last tests change
one thing alone (a declaration, a component, a CLI option, a dvc.yaml stage) and check that
drift sees it.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

import tlops.steps as declarations
from tests.conftest import REPO
from tlops.runner.generate import dvc_stage, generated_files
from tlops.runner.spec import Port, StepSpec

KFP_TYPES = {
    "Dataset": "system.Dataset",
    "Model": "system.Model",
    "Artifact": "system.Artifact",
    "Metrics": "system.Metrics",
    "ClassificationMetrics": "system.ClassificationMetrics",
    "HTML": "system.HTML",
    "Markdown": "system.Markdown",
}


def _cli_options(name: str) -> dict[str, bool] | None:
    """Option name -> required, of ``tlops step <name>`` (None: no such command)."""
    import typer.main

    from tlops.cli.step import step_app

    group = typer.main.get_command(step_app)
    command = group.commands.get(name)  # type: ignore[attr-defined]
    if command is None:
        return None
    return {
        param.opts[0]: bool(param.required)
        for param in command.params
        if param.opts[0] not in ("--params", "--set", "--help")
    }


def _expected_cli(spec: StepSpec) -> dict[str, bool]:
    def option(name: str) -> str:
        return "--" + name.replace("_", "-")

    expected = {option(p.name): not p.optional for p in spec.inputs}
    expected |= {option(p.name): True for p in spec.dirs}
    expected |= {option(a.name): False for a in spec.args}
    return expected


def _component_interface(name: str) -> dict[str, str]:
    """Parameter -> KFP type of the component in components/<name>.py, as KFP reads it."""
    from kfp import dsl

    module = importlib.import_module(f"components.{name}")
    spec = dsl.component(getattr(module, name), base_image="x").component_spec
    types = {key: "string" for key in (spec.inputs or {}) if spec.inputs[key].type == "String"}
    for key, value in (spec.inputs or {}).items():
        if value.type != "String":
            types[key] = f"in:{value.type.split('@')[0]}"
    for key, value in (spec.outputs or {}).items():
        types[key] = f"out:{value.type.split('@')[0]}"
    return types


def _expected_interface(spec: StepSpec) -> dict[str, str]:
    types = {"params": "string", **{a.name: "string" for a in spec.args}}
    types |= {p.name: f"in:{KFP_TYPES[p.kind]}" for p in spec.inputs}
    types |= {p.name: f"out:{KFP_TYPES[p.kind]}" for p in spec.outputs}
    if spec.returns:  # the value a pipeline's dsl.If reads
        types["Output"] = "out:String"
    return types


def drift(repo: Path, steps: tuple[StepSpec, ...]) -> list[str]:
    """Every disagreement between ``steps`` and the runners derived from them."""
    found = []
    for path, text in generated_files(repo, steps).items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            found.append(f"{path.relative_to(repo)} differs from `tlops generate`")
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for spec in steps:
        module = importlib.import_module(f"tlops.steps.{spec.name}")
        if getattr(module, "STEP", None) is not spec and spec in declarations.STEPS:
            found.append(f"tlops.steps.{spec.name} does not hold its declaration as STEP")
        if not callable(spec.run):
            found.append(f"step {spec.name} has no run()")
        if _cli_options(spec.name) != _expected_cli(spec):
            found.append(f"tlops step {spec.name}: options {_cli_options(spec.name)}")
        if not (repo / "components" / f"{spec.name}.py").is_file():
            found.append(f"components/{spec.name}.py is missing")
        elif _component_interface(spec.name) != _expected_interface(spec):
            found.append(f"components/{spec.name}.py: {_component_interface(spec.name)}")
        if not spec.dvc:  # retraining-only: no dvc.yaml stage, and none may appear
            if spec.name in stages:
                found.append(f"dvc.yaml has a stage {spec.name}, declared dvc=False")
            continue
        stage = stages.get(spec.name, {})
        if stage != dvc_stage(spec, steps):
            found.append(f"dvc.yaml stage {spec.name} differs from its declaration")
        body = stage.get("do", stage)
        wanted = [p.replace("{domain}", "${key}") for p in spec.params]
        if body.get("params") != wanted:
            found.append(f"dvc.yaml stage {spec.name} reads params {body.get('params')}")
    extra = set(stages) - {spec.name for spec in steps}
    found += [f"dvc.yaml stage {name} has no declaration" for name in sorted(extra)]
    return found


def test_every_declared_step_has_its_command_component_and_stage() -> None:
    assert drift(REPO, declarations.STEPS) == []


def test_names_are_the_same_everywhere() -> None:
    names = [spec.name for spec in declarations.STEPS]
    assert len(set(names)) == len(names)
    components = {p.stem for p in (REPO / "components").glob("*.py")} - {"__init__"}
    modules = {p.stem for p in (REPO / "src/tlops/steps").glob("*.py")}
    assert components == set(names)
    assert set(names) <= modules
    sections = set(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert set(names) <= sections  # each step has its params.yaml section


def test_inputs_name_a_declared_producer() -> None:
    for spec in declarations.STEPS:
        for port in spec.inputs:
            assert port.producer is not None, (spec.name, port.name)
            producer = declarations.spec_of(port.producer[0])
            assert producer.port(port.producer[1]).kind == port.kind, (spec.name, port.name)


def test_pipeline_wires_each_input_from_its_declared_producer(tmp_path: Path) -> None:
    from pipelines.cluster import compile_training

    from tlops.config import apply_overrides, load_params

    params = apply_overrides(load_params(REPO / "params.yaml"), {"train.strategy": "linear_probe"})
    pipeline, _ = yaml.safe_load_all(compile_training(params, tmp_path / "p.yaml").read_text())
    tasks = pipeline["root"]["dag"]["tasks"]
    for task in tasks.values():
        step = task["componentRef"]["name"].removeprefix("comp-").replace("-", "_")
        spec = declarations.spec_of(step)
        for name, source in task["inputs"].get("artifacts", {}).items():
            producer = tasks[source["taskOutputArtifact"]["producerTask"]]
            made_by = producer["componentRef"]["name"].removeprefix("comp-").replace("-", "_")
            assert (made_by, source["taskOutputArtifact"]["outputArtifactKey"]) == spec.port(
                name
            ).producer


def _copy(tmp_path: Path) -> Path:
    import shutil

    repo = tmp_path / "repo"
    for name in ("docs/pipelines.md", "dvc.yaml"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, repo / name)
    shutil.copytree(REPO / "components", repo / "components")
    return repo


def test_drift_sees_a_declaration_changed_alone(tmp_path: Path) -> None:
    repo = _copy(tmp_path)
    train = declarations.spec_of("train")
    changed = dataclasses.replace(train, params=(*train.params, "evaluate"))
    steps = tuple(changed if s.name == "train" else s for s in declarations.STEPS)
    found = drift(repo, steps)
    assert "dvc.yaml differs from `tlops generate`" in found
    assert "dvc.yaml stage train reads params" in " ".join(found)


def test_drift_sees_a_new_output_declared_alone(tmp_path: Path) -> None:
    repo = _copy(tmp_path)
    evaluate = declarations.spec_of("evaluate")
    extra = Port("calibration", "Artifact", "A calibration table.")
    changed = dataclasses.replace(evaluate, outputs=(*evaluate.outputs, extra))
    steps = tuple(changed if s.name == "evaluate" else s for s in declarations.STEPS)
    found = " | ".join(drift(repo, steps))
    assert "components/evaluate.py differs" in found  # the component
    assert "tlops step evaluate: options" in found  # the CLI built from the old declaration
    assert "docs/pipelines.md differs" in found  # the step table


def test_drift_sees_a_component_changed_alone(tmp_path: Path) -> None:
    repo = _copy(tmp_path)
    path = repo / "components" / "train.py"
    path.write_text(path.read_text().replace("model: Output[Model]", "model: Output[Artifact]"))
    assert drift(repo, declarations.STEPS) == ["components/train.py differs from `tlops generate`"]


def test_drift_sees_a_cli_option_changed_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from tlops.cli import step as step_cli

    monkeypatch.setattr(step_cli, "option_name", lambda name: "--in-" + name)
    renamed = step_cli._step_command(declarations.spec_of("evaluate"))
    commands = []
    for info in step_cli.step_app.registered_commands:
        if info.name == "evaluate":
            info = copy.copy(info)
            info.callback = renamed
        commands.append(info)
    monkeypatch.setattr(step_cli.step_app, "registered_commands", commands)
    assert _cli_options("evaluate") != _expected_cli(declarations.spec_of("evaluate"))
    assert any("tlops step evaluate" in item for item in drift(REPO, declarations.STEPS))


def test_drift_sees_a_dvc_stage_changed_alone(tmp_path: Path) -> None:
    repo = _copy(tmp_path)
    dvc: dict[str, Any] = yaml.safe_load((repo / "dvc.yaml").read_text())
    dvc["stages"]["evaluate"]["params"].remove("evaluate")
    text = (repo / "dvc.yaml").read_text().split("stages:")[0] + yaml.safe_dump(
        dvc, sort_keys=False
    )
    (repo / "dvc.yaml").write_text(text)
    found = drift(repo, declarations.STEPS)
    assert "dvc.yaml stage evaluate differs from its declaration" in found
    assert any("dvc.yaml stage evaluate reads params" in item for item in found)
