"""params.yaml: loading, validation errors that name the file and key, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.conftest import REPO
from tlops.config import ConfigError, apply_overrides, load_params, parse_overrides


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


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("ingest_data:\n  split: {train: 0.5, val: 0.1, test: 0.1}\n", "sum to 1"),
        ("image:\n  mode: CMYK\n", "image.mode"),
        ("image:\n  extensions: [png]\n", "image.extensions"),
        ("validate_data:\n  min_width: 10\n  max_width: 5\n", "min_width"),
        ("ingest_data:\n  typo: 1\n", "ingest_data.typo"),
        ("- a list\n", "mapping"),
        ("image: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_params_name_file_and_rule(tmp_path: Path, text: str, fragment: str) -> None:
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
    path.write_text("train:\n  lrr: 0.1\n")
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
