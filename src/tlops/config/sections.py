"""What every params model shares: the frozen base, shared names and the error wording.

The models declare types and rules, never a default: ``params.yaml`` holds every default, the
one copy (see :mod:`tlops.config`).
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

SPLITS: tuple[str, ...] = ("train", "val", "test")
# the manifest split of the images of data.target_unlabeled: training data without a label
UNLABELED_SPLIT = "unlabeled"
DOMAINS: tuple[str, ...] = ("source", "target")  # the data domains (params.yaml data.<domain>)


class ConfigError(ValueError):
    """A params file that is missing, unreadable or breaks a rule."""


NUMERICS_FORMS = (
    "auto | fp32 | bf16 | bf16-frozen | fp16 | "
    "<fp32|bf16|bf16-frozen|fp16>+<channels_last|contiguous>+<eager|compile>"
)
_NUMERICS = re.compile(
    r"(fp32|bf16|bf16-frozen|fp16)(\+(channels_last|contiguous)\+(eager|compile))?|auto"
)


def _numerics(value: str) -> str:
    if not _NUMERICS.fullmatch(value):
        raise ValueError(f"{value!r} is not a numerics setting: expected {NUMERICS_FORMS}")
    return value


# How a model step computes (see tlops.models.numerics): auto measures, the rest pin.
NumericsSetting = Annotated[str, AfterValidator(_numerics)]


class Section(BaseModel):
    """The base of every params model: frozen, and an unknown key is an error.

    Frozen, so a step can never change the configuration another step sees; its subclasses
    declare no defaults (``params.yaml`` gives every key).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")


class StrategyParams(Section):
    """The base of a strategy's section of ``train`` (declared in the strategy's file).

    Its fields have no defaults: params.yaml holds every strategy's section, the one copy.
    """


# what a key the models require but the params lack gets: the models have no defaults
MISSING = "missing (params.yaml holds every default: give this key)"


def rule_message(item: Any) -> str:
    """What is wrong, as a line of an error: pydantic's message, or :data:`MISSING`.

    Args:
        item: One entry of ``ValidationError.errors()``.
    """
    return MISSING if item["type"] == "missing" else str(item["msg"])


def suggest(name: str, keys: list[str]) -> str:
    """`` (did you mean 'lr'?)`` for a typo of one of ``keys``, else nothing."""
    close = difflib.get_close_matches(name, keys, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validated_section(
    key: str, model: type[BaseModel], raw: Any, missing: str = "params.yaml holds every default"
) -> BaseModel:
    """``raw`` validated as the section ``key`` (a declared one); None: the section is missing.

    Raises:
        ValueError: One line per broken rule, each naming its key (``; ``-separated).
    """
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        if raw is None:
            raise ValueError(f"{key}: missing ({missing})") from None
        lines = [
            f"{key}.{'.'.join(str(p) for p in item['loc'])}: {rule_message(item)}"
            for item in exc.errors()
        ]
        raise ValueError("; ".join(lines)) from None


def declared_section(model: BaseModel, name: str, where: str) -> Any:
    """The validated section ``name`` that a plug-in declared, held among ``model``'s extras.

    Raises:
        KeyError: ``model`` holds no such section (``where`` names it in the message).
    """
    extra = model.__pydantic_extra__ or {}
    if name not in extra:
        raise KeyError(f"{where}: not in these params")
    return extra[name]
