"""The documentation's generated pages and pictures follow the code they are made from."""

from __future__ import annotations

import re
from typing import Any

import typer
import yaml

from tests.conftest import REPO
from tlops.cli import app
from tlops.cli.compile import reference_pages
from tlops.config import Params
from tlops.config.reference import yaml_comments
from tlops.runner.graph import pipeline_svg


def _pages() -> dict[str, str]:
    pages = reference_pages(REPO, typer.main.get_command(app))
    return {path.name: text for path, text in pages.items()}


def test_the_committed_pages_are_what_generate_writes() -> None:
    for path, text in reference_pages(REPO, typer.main.get_command(app)).items():
        assert path.read_text(encoding="utf-8") == text, f"{path}: run `make generate`"


def _sections(page: str) -> dict[str, str]:
    """The page's text per section heading (``## `train.da` `` -> its table)."""
    parts = re.split(r"^## `([\w.]+)`$", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_parameter_has_a_row_in_its_own_section_with_its_default() -> None:
    from tlops import plugins

    sections = _sections(_pages()["parameters.md"])
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    models = {k: f.annotation for k, f in Params.model_fields.items() if k != "plugins"}
    models.update(plugins.step_sections())  # the steps' own sections (deploy, tune, ...)
    for name, values in raw.items():
        if name == "plugins":
            continue
        assert name in models, name

        def walk(section: str, values: dict[str, Any]) -> None:
            table = sections[section]
            for key, value in values.items():
                if (
                    isinstance(value, dict)
                    and f"## `{section}.{key}`" not in table
                    and (f"{section}.{key}" in sections)
                ):
                    walk(f"{section}.{key}", value)
                else:
                    assert f"| `{key}` |" in table, f"{section}.{key}"

        walk(name, values)
    assert f"| `lr` | `float` | `gt=0.0` | `{raw['train']['lr']}` |" in sections["train"]
    assert "| `batch_size` |" in sections["extract_features"]


def test_every_command_and_option_is_on_the_cli_page() -> None:
    page = _pages()["cli.md"]
    for command in ("tlops run", "tlops retrain", "tlops serve", "tlops step train"):
        assert f"## `{command}`" in page, command
    assert "| `--runner` | str | `warm` |" in page


def test_params_yaml_comments_are_read_by_key() -> None:
    text = "# about a\na:\n  # above b\n  b: 1   # on b\n  c: 2\nd: x  # on d\n"
    assert yaml_comments(text) == {"a": "about a", "a.b": "above b on b", "a.c": "", "d": "on d"}


def test_the_pictures_show_every_task_of_the_compiled_pipelines() -> None:
    for name in ("training", "retraining"):
        compiled = (REPO / "pipelines" / "compiled" / f"{name}.yaml").read_text()
        svg = pipeline_svg(compiled)
        assert (REPO / "docs" / "img" / f"pipeline-{name}.svg").read_text() == svg
        spec = next(yaml.safe_load_all(compiled))
        executors = spec["deploymentSpec"]["executors"]
        assert svg.count('rx="5"') == len(executors)  # one box per task
        labels = set(re.findall(r'text-anchor="middle">(\w+)<', svg))
        assert {"ingest_data", "train", "register_model"} <= labels
    retraining = pipeline_svg((REPO / "pipelines/compiled/retraining.yaml").read_text())
    assert "stroke-dasharray" in retraining and ">if retrain<" in retraining
