"""params.yaml: loading, validation errors that name the file and key, overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from tests.conftest import REPO
from tlops import plugins
from tlops.config import (
    ConfigError,
    DvcData,
    GatePolicy,
    Params,
    TrainConfig,
    apply_overrides,
    load_params,
    parse_overrides,
)


def test_repository_params_load() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.validate_data.classes == tuple(str(i) for i in range(10))
    assert params.data.target == Path("data/target")
    flat = params.to_flat_dict()
    assert flat["ingest_data.split.train"] == 0.7
    with pytest.raises(ValidationError):
        params.image.max_pixels = 1  # type: ignore[misc]  # frozen


def test_override() -> None:
    params = load_params(REPO / "params.yaml", {"ingest_data.salt": "v2", "image.mode": "L"})
    assert params.ingest_data.salt == "v2" and params.image.mode == "L"
    typed = parse_overrides(["train.lr=0.001", "model.pretrained=false", "data.target=/x"])
    assert typed == {"train.lr": 0.001, "model.pretrained": False, "data.target": "/x"}
    milestones = load_params(REPO / "params.yaml", {"train.unfreeze_milestones.3": 6})
    assert milestones.train.unfreeze_milestones == {3: 6}  # a free mapping takes new keys


@pytest.mark.parametrize(
    "item,fragment",
    [
        ("train.lr", "expected key=value"),
        ("=1", "expected key=value"),
        ("train.lr=[1", "not valid YAML"),
    ],
)
def test_bad_override_items(item: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_overrides([item])


@pytest.mark.parametrize(
    "key,fragment",
    [
        ("train.nope", "unknown key 'train.nope': train has no key 'nope'"),
        ("nosection.lr", "'nosection' is not a section of params.yaml"),
        ("train.lr.deeper", "'lr' is not a section of train"),
        ("target_dir", "params.yaml has no key 'target_dir'"),
    ],
)
def test_unknown_override_keys_are_named(key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_params(REPO / "params.yaml", {key: 1})
    assert fragment in str(info.value)


def test_override_that_breaks_a_rule_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"train.epochs"):
        apply_overrides(load_params(REPO / "params.yaml"), {"train.epochs": 0})


def _repo_raw() -> dict[str, Any]:
    """The repository's params.yaml as YAML reads it (a fresh copy to edit)."""
    raw: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text())
    return raw


def _merged(base: dict[str, Any], edit: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the keys of ``edit`` replaced, section by section."""
    for key, value in edit.items():
        inner = base.get(key)
        if isinstance(value, dict) and isinstance(inner, dict):
            _merged(inner, value)
        else:
            base[key] = value
    return base


@pytest.mark.parametrize(
    "edit,fragment",
    [
        ("ingest_data:\n  split: {train: 0.5, val: 0.1, test: 0.1}\n", "sum to 1"),
        ("image:\n  mode: CMYK\n", "image.mode"),
        ("image:\n  extensions: [png]\n", "image.extensions"),
        ("validate_data:\n  min_width: 10\n  max_width: 5\n", "min_width"),
        ("ingest_data:\n  typo: 1\n", "ingest_data.typo"),
    ],
)
def test_bad_params_name_file_and_rule(tmp_path: Path, edit: str, fragment: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_merged(_repo_raw(), yaml.safe_load(edit))))
    with pytest.raises(ConfigError) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path}: invalid parameters")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "text,fragment", [("- a list\n", "mapping"), ("image: [unclosed\n", "not valid YAML")]
)
def test_a_file_that_is_not_params_is_named(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_params(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_a_typo_gets_the_nearest_key(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_merged(_repo_raw(), {"train": {"lrr": 0.1}})))
    with pytest.raises(ConfigError) as info:
        load_params(path)
    assert "train.lrr: not a key of params.yaml (did you mean 'lr'?)" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_params(REPO / "params.yaml", {"trian.lr": 0.1}, "-S")
    assert str(info.value).startswith("-S trian.lr=0.1: unknown key")
    assert "(did you mean 'train'?)" in str(info.value)


def test_a_bad_value_names_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_params(REPO / "params.yaml", {"train.epochs": 0}, "-S")
    assert str(info.value).startswith("-S train.epochs=0: train.epochs: ")
    assert "params.yaml" not in str(info.value)
    from tlops.config import params_from_json

    tree = load_params(REPO / "params.yaml").model_dump(mode="json")
    tree["train"]["epochs"] = -1
    import json

    with pytest.raises(ConfigError) as info:
        params_from_json(json.dumps(tree))
    assert str(info.value).startswith("the pipeline parameter 'params': invalid parameters")
    assert "train.epochs" in str(info.value)


def test_task_resources_need_a_default() -> None:
    params = load_params(REPO / "params.yaml")
    train_only = {"train": params.kfp.resources["train"].model_dump()}
    with pytest.raises(ConfigError, match=r"kfp\.resources: .*needs a 'default' entry"):
        apply_overrides(params, {"kfp.resources": train_only})
    assert params.kfp.resources_for("evaluate") == params.kfp.resources["default"]


# One copy of every default: params.yaml. The params models declare types and rules only, so a
# default cannot drift from params.yaml's value, and a key params.yaml lacks is an error.

# Values, not sections: a DVC data location is a mapping the user writes in place of a
# directory, and its optional parts mean "the repository's own" (params.yaml cannot hold them:
# its data locations are directories).
VALUE_DEFAULTS = {DvcData: {"rev", "remote"}}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The params models an annotation holds: itself, or inside a union, dict, tuple..."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _params_models() -> set[type[BaseModel]]:
    """Every model reachable from :class:`Params`, and every registered strategy section's."""
    todo: list[type[BaseModel]] = [Params, *(plugins.section_model(s) for s in plugins.sections())]
    seen: set[type[BaseModel]] = set()
    while todo:
        model = todo.pop()
        if model not in seen:
            seen.add(model)
            todo += [m for f in model.model_fields.values() for m in _models_in(f.annotation)]
    return seen


def test_no_params_model_has_a_default() -> None:
    load_params(REPO / "params.yaml")  # registers the built-in strategies' sections
    models = _params_models()
    assert {TrainConfig, GatePolicy, plugins.section_model("dan"), DvcData} <= models
    defaults = [
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if not field.is_required() and name not in VALUE_DEFAULTS.get(model, set())
    ]
    assert not defaults, f"defaults outside params.yaml (give them in params.yaml): {defaults}"


def _keys_missing(model: type[BaseModel], raw: Any, where: str) -> list[str]:
    """The keys of ``model`` that the params.yaml mapping ``raw`` (at ``where``) lacks."""
    if not isinstance(raw, dict):
        return [where]
    missing = []
    for name, field in model.model_fields.items():
        key = f"{where}.{name}" if where else name
        if name not in raw:
            missing.append(key)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            missing += _keys_missing(field.annotation, raw[name], key)
        elif get_origin(field.annotation) is dict and _models_in(field.annotation):
            (inner,) = _models_in(field.annotation)  # dict[str, Resources]: each entry whole
            for entry, value in raw[name].items():
                missing += _keys_missing(inner, value, f"{key}.{entry}")
    return missing


def test_params_yaml_gives_every_key() -> None:
    raw = _repo_raw()
    missing = _keys_missing(Params, raw, "")
    builtin = {
        section: model
        for decl in plugins.strategies().values()
        if decl.module.startswith(plugins.BUILTIN)
        for section, model in decl.sections.items()
    }
    assert {"linear_probe", "da", "dan", "distill"} <= set(builtin)
    for section, model in builtin.items():  # params.yaml holds every built-in's section
        missing += _keys_missing(model, raw["train"].get(section), f"train.{section}")
    assert not missing, f"params.yaml lacks {missing}"


@pytest.mark.parametrize(
    "key", ["plugins", "train.lr", "kfp.gpu.toleration.value", "train.dan.weight", "model.align"]
)
def test_a_missing_key_is_an_error_that_names_it(tmp_path: Path, key: str) -> None:
    raw = _repo_raw()
    *parents, leaf = key.split(".")
    section = raw
    for part in parents:
        section = section[part]
    del section[leaf]
    if key == "train.dan.weight":
        raw["train"]["strategy"] = "dan"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_params(path)
    assert str(info.value) == (
        f"{path}: invalid parameters\n"
        f"  - {key}: missing (params.yaml holds every default: give this key)"
    )
