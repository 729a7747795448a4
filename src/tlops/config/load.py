"""Reading params: a file, ``key=value`` overrides, the pipeline's JSON, and their errors.

Every error names where the params came from (the file, the override, the pipeline parameter)
and every offending key, one line each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from tlops import plugins
from tlops.config.params import Params
from tlops.config.sections import ConfigError, rule_message, suggest


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys params.yaml allows beside ``loc`` (a validation error's location)."""
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = None if field is None else field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _error_lines(error: ValidationError) -> list[str]:
    """One line per broken rule: the dotted key, and what is wrong with it."""
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        where = ".".join(str(part) for part in loc)
        if item["type"] == "extra_forbidden":
            hint = suggest(str(loc[-1]), _keys_at(loc))
            lines.append(f"  - {where}: not a key of params.yaml{hint}")
        else:
            lines += [f"  - {key}: {why}" for key, why in _broken_rules_of(item)]
    return lines


def _format_errors(path: Path, error: ValidationError) -> str:
    return "\n".join([f"{path}: invalid parameters", *_error_lines(error)])


def parse_overrides(items: list[str] | None, flag: str = "--set") -> dict[str, Any]:
    """The one ``key=value`` parser: dotted params keys to YAML-typed values.

    Args:
        items: Strings like ``train.lr=0.001`` (the value is read as YAML: numbers, booleans,
            lists and ``null`` keep their type).
        flag: The option the items came from, for the error message.

    Returns:
        ``{"train.lr": 0.001, ...}`` in the order given.

    Raises:
        ConfigError: An item is not ``key=value`` or its value is not YAML.
    """
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected key=value, e.g. train.lr=0.001")
        try:
            result[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{flag} {item!r}: the value is not valid YAML: {exc}") from exc
    return result


def load_params(
    path: Path, overrides: dict[str, Any] | None = None, source: str = "override"
) -> Params:
    """Read and validate a params file.

    Args:
        path: The YAML file (normally ``params.yaml`` at the repository root).
        overrides: Dotted keys to replace after reading, e.g. ``{"ingest_data.salt": "x"}``;
            every key must exist in :class:`Params` (an unknown key is named in the error).
        source: Where the overrides came from, for the errors (``-S``, a pipeline parameter).

    Returns:
        The frozen, validated parameters.

    Raises:
        ConfigError: The file is missing, is not YAML, a value breaks a rule or an override
            names an unknown key; the message names the file (or the override) and every
            offending key.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from exc
    return apply_overrides(params, overrides or {}, source)


def apply_overrides(params: Params, overrides: dict[str, Any], source: str = "override") -> Params:
    """A copy of ``params`` with dotted keys replaced, validated again.

    Args:
        params: The params to start from.
        overrides: Dotted keys and their new values.
        source: Where the overrides came from (``-S``, ``--param``, a pipeline parameter):
            every error names it with the offending ``key=value``.

    Raises:
        ConfigError: A key is not a key of params.yaml (the message names it, the nearest key
            and the keys that exist there) or a new value breaks a rule (the message names
            the key and the value).
    """
    if not overrides:
        return params
    tree = params.model_dump(mode="json")
    if "plugins" in overrides:  # their strategies' sections may be what the others set
        try:
            plugins.load_plugins(overrides["plugins"] or ())
        except ValueError as exc:
            raise ConfigError(f"{source} plugins={_shown(overrides['plugins'])}: {exc}") from None
    for dotted, value in overrides.items():
        try:
            _set_dotted(tree, dotted, value)
        except ConfigError as exc:
            raise ConfigError(f"{source} {dotted}={_shown(value)}: {exc}") from None
    try:
        return Params.model_validate(tree)
    except ValidationError as exc:
        lines = [
            _override_line(source, overrides, where, message)
            for where, message in _broken_rules(exc)
        ]
        raise ConfigError("\n".join(lines)) from exc


def _broken_rules(error: ValidationError) -> list[tuple[str, str]]:
    """``(dotted key, what is wrong)`` per broken rule, a strategy section's rules one each."""
    return [rule for item in error.errors() for rule in _broken_rules_of(item)]


def _broken_rules_of(item: Any) -> list[tuple[str, str]]:
    where = ".".join(str(part) for part in item["loc"])
    message = rule_message(item)
    if item["type"] != "value_error" or where not in ("train", ""):
        return [(where, message)]
    # the rules checked for the sections strategies and steps declare, each naming its own key
    rules = []
    for line in message.removeprefix("Value error, ").split("; "):
        key, _, why = line.partition(": ")
        rules.append((key, why) if key.startswith(where) and " " not in key else (where, line))
    return rules


def _override_line(source: str, overrides: dict[str, Any], where: str, message: str) -> str:
    given = [k for k in overrides if where == k or where.startswith(k + ".")]
    what = f"{given[0]}={_shown(overrides[given[0]])}" if given else where
    return f"{source} {what}: {where}: {message}"


def params_from_json(text: str, source: str = "the pipeline parameter 'params'") -> Params:
    """Params from the JSON a pipeline carries (KFP components receive them so).

    Raises:
        ConfigError: The JSON is not params (naming ``source`` and every offending key).
    """
    try:
        return Params.model_validate_json(text)
    except ValidationError as exc:
        raise ConfigError("\n".join([f"{source}: invalid parameters", *_error_lines(exc)])) from exc


def _shown(value: Any) -> str:
    """An override's value as the user typed it (YAML), for messages."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text.removesuffix("\n...").removesuffix(" ...").strip()


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    seen: list[str] = []
    for part in parents:
        child = node.get(part)
        if child is None and seen == ["train"] and plugins.is_section(part):
            child = node[part] = {}  # a strategy's section that params.yaml does not hold
        seen.append(part)
        if not isinstance(child, dict):
            where = ".".join(seen[:-1]) or "params.yaml"
            known = sorted(node) if isinstance(node, dict) else []
            raise ConfigError(
                f"unknown key {dotted!r}: {part!r} is not a section of {where}"
                f"{suggest(part, known)} (sections there: {', '.join(known)})"
            )
        node = child
    if leaf not in node and not _is_open_mapping(parents) and not _in_section(parents, leaf):
        where = ".".join(parents) or "params.yaml"
        raise ConfigError(
            f"unknown key {dotted!r}: {where} has no key {leaf!r}{suggest(leaf, sorted(node))} "
            f"(keys there: {', '.join(sorted(node))})"
        )
    node[leaf] = value


def _in_section(parents: list[str], leaf: str) -> bool:
    """True when ``parents.leaf`` is a strategy's section, or a key of one, under ``train``."""
    if parents == ["train"]:
        return plugins.is_section(leaf)
    if len(parents) == 2 and parents[0] == "train" and plugins.is_section(parents[1]):
        return leaf in plugins.section_model(parents[1]).model_fields
    return False


def _is_open_mapping(parents: list[str]) -> bool:
    """True when ``parents`` names a dict field of :class:`Params` (its keys are free)."""
    model: type[BaseModel] = Params
    for depth, part in enumerate(parents):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        return depth == len(parents) - 1 and get_origin(annotation) is dict
    return False
