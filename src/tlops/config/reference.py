"""The parameters reference page, generated from the params models and params.yaml.

``tlops generate`` writes it to ``docs/reference/parameters.md`` (and ``--check`` fails when it
is stale), so the documentation cannot drift from the models: one table per section, one row
per key with its type and rule as the model declares them, its default as params.yaml holds it,
and what it does as the model's comment on it says.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from typing import Any

from pydantic import BaseModel

from tlops import plugins

_FIELD = re.compile(r"^    (\w+): (.+?)(?:  # (.*))?$")
_COMMENT = re.compile(r"^    # ?(.*)$")
_YAML_KEY = re.compile(r"^( *)([\w-]+):(.*)$")
_YAML_COMMENT = re.compile(r"^ *# ?(.*)$")


def yaml_comments(text: str) -> dict[str, str]:
    """What params.yaml says of each key (``section.key``): the comment above it and on its line.

    A line-based reading of a file whose keys are indented by two spaces per level; a comment
    above a key is its own when nothing but comments lies between them.
    """
    found: dict[str, str] = {}
    path: list[str] = []
    above: list[str] = []
    for line in text.splitlines():
        comment = _YAML_COMMENT.match(line)
        if comment:
            above.append(comment.group(1))
            continue
        key = _YAML_KEY.match(line)
        if key is None:
            above = []
            continue
        depth = len(key.group(1)) // 2
        path = [*path[:depth], key.group(2)]
        inline = key.group(3).partition(" #")[2].strip() if " #" in key.group(3) else ""
        found[".".join(path)] = " ".join([*above, inline]).strip()
        above = []
    return found


def _field_lines(model: type[BaseModel]) -> dict[str, tuple[str, str, str]]:
    """Per field of ``model``: its annotation, its rule (the ``Field(...)``) and its comment.

    The comment is the one on the field's line, else the comment lines just above it.
    """
    found: dict[str, tuple[str, str, str]] = {}
    above: list[str] = []
    for line in inspect.getsource(model).splitlines()[1:]:
        comment = _COMMENT.match(line)
        if comment:
            above.append(comment.group(1))
            continue
        field = _FIELD.match(line)
        if field and field.group(1) in model.model_fields:
            annotation, _, rule = field.group(2).partition(" = ")
            rule = re.sub(r"^Field\((.*)\)$", r"\1", rule.strip())
            found[field.group(1)] = (annotation, rule, field.group(3) or " ".join(above))
        above = []
    return found


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The params model a field holds (itself, or inside ``X | None``), else None."""
    candidates = [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        candidates = list(typing.get_args(annotation))
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def table_cell(text: str) -> str:
    """``text`` as one cell of a markdown table: on one line, its pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _default(value: Any) -> str:
    text = json.dumps(value, default=str)
    return f"`{table_cell(text)}`" if len(text) <= 60 else f"`{table_cell(text[:57])}...`"


def _section(name: str, model: type[BaseModel], values: Any, said: dict[str, str]) -> list[str]:
    """The heading, docstring and table of one section, then its sub-sections.

    ``said`` is params.yaml's comments by key; the model's comment is the fallback.
    """
    doc = inspect.getdoc(model) or ""
    lines = [f"## `{name}`", "", doc.split("\n\n")[0].replace("\n", " "), ""]
    if said.get(name):  # params.yaml's comment on the section itself
        lines += [said[name], ""]
    lines += ["| key | type | rule | default | what it does |", "|---|---|---|---|---|"]
    below: list[str] = []
    described = _field_lines(model)
    values = values if isinstance(values, dict) else {}
    for key, info in model.model_fields.items():
        annotation, rule, comment = described.get(key, (str(info.annotation), "", ""))
        comment = said.get(f"{name}.{key}") or comment
        nested = _section_model(info.annotation)
        if nested is not None and isinstance(values.get(key), dict):
            lines.append(_sub_section(name, key, table_cell(comment)))
            below += ["", *_section(f"{name}.{key}", nested, values[key], said)]
            continue
        default = _default(values[key]) if key in values else "(none)"
        rule_cell = f"`{table_cell(rule)}`" if rule else ""
        lines.append(
            f"| `{key}` | `{table_cell(annotation)}` | {rule_cell} | {default} | "
            f"{table_cell(comment)} |"
        )
    # the sections of train that the registered strategies read (their own models)
    for key, value in values.items():
        if key not in model.model_fields and name == "train" and plugins.is_section(key):
            what = table_cell(said.get(f"{name}.{key}", ""))
            lines.append(_sub_section(name, key, f"read by the strategies that use it: {what}"))
            below += ["", *_section(f"{name}.{key}", plugins.section_model(key), value, said)]
    return lines + below


def _sub_section(name: str, key: str, what: str) -> str:
    """The row of a key that is a section of its own: a link to that section's table."""
    anchor = re.sub(r"[^\w-]", "", f"{name}{key}".lower())  # the heading's id, as the toc makes it
    return f"| `{key}` | section | | see [`{name}.{key}`](#{anchor}) | {what} |"


def parameters_page(text: str, sections: dict[str, type[BaseModel]]) -> str:
    """The markdown of the parameters reference.

    Args:
        text: params.yaml (its values are the defaults, its comments say what keys do).
        sections: Every section's model, by name, in the order of the page.
    """
    import yaml

    params = yaml.safe_load(text)
    said = yaml_comments(text)
    lines = [
        "# Parameters",
        "",
        "<!-- generated by `tlops generate` from the params models and params.yaml; "
        "do not edit -->",
        "",
        "`params.yaml` holds every default, one section per step, and is their only copy: the "
        "params models (`tlops.config`) declare types and rules but no defaults, so every key "
        "must be in the file (a missing one fails as `params.yaml: invalid parameters` / "
        "`- train.lr: missing ...`, and a test fails when a model gains a default or params.yaml "
        "lacks a key). It is validated when read: a bad value fails with the file, the key and "
        "the rule. Override any key on the command line with `-S section.key=value` (values are "
        "YAML: `-S model.pretrained=false`, `-S 'validate_data.classes=[cat, dog]'`), e.g. "
        "`tlops run -S validate_data.min_images_per_class=50`. Every command parses overrides "
        "the same way; an unknown key fails naming the key and the keys that exist there.",
        "",
        "Below, per section: each key's type and rule as its model declares them, its default "
        "as params.yaml holds it, and what it does as params.yaml's comments (or the model's) "
        "say.",
    ]
    for name, model in sections.items():
        lines += ["", *_section(name, model, params.get(name), said)]
    return "\n".join(lines) + "\n"
