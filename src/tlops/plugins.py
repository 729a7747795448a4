"""What strategies and steps declare, registered by name and read without importing torch.

A strategy is one file (``tlops/training/strategies/<name>.py``, or a module of your own named
in params.yaml ``plugins``). Its class is decorated with
:func:`tlops.training.strategies.base.strategy`, which records a :class:`StrategyDecl` here:
the name ``train.strategy`` accepts, the sections of ``train`` it reads with their params
models, what it trains on (:class:`Need`, a function of its params where they change it) and
why it cannot train data-parallel, if it cannot. The accepted names, the needs and the class of
each strategy are read from these registrations: nothing lists them by hand. A step may declare
a params section only it reads (:func:`register_step_section`).

This module imports neither torch nor a strategy: the pipeline is built from the declarations in
processes that never train (``tlops run``'s own, ``tlops compile``, the scheduler), and a strategy
module imports torch lazily (``tlops.lazy``), so registering costs no torch import.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

from pydantic import BaseModel

# the built-in declarations, imported by name (a plug-in loader): every strategy of the package
# registers itself, and the steps' catalog registers the params sections steps declare
BUILTIN = ("tlops.training.strategies", "tlops.steps")


class Need(StrEnum):
    """What a strategy trains on; the pipeline runs only the steps that provide it."""

    IMAGES = "images"  # decoded target images (train and val splits)
    FEATURES = "features"  # cached backbone features of extract_features
    SOURCE = "source"  # decoded, labeled source-domain images (train and val splits)
    TEACHER = "teacher"  # a trained model's logits of every target training image


class TrainParams(Protocol):
    """What a needs function reads: the ``train`` params (:class:`tlops.config.TrainConfig`)."""

    strategy: str

    def section(self, name: str) -> Any:
        """The validated section ``train.<name>``."""


NeedsFn = Callable[[TrainParams], Iterable[Need]]


@dataclass(frozen=True)
class Dim:
    """One dimension of a strategy's search space (the ``tune`` step searches it).

    A range ``low..high`` (on a log scale with ``log``; whole numbers with ``integer``), or a
    set of ``choices``. The key it is declared under is the ``train`` param it sets (a dotted
    path below ``train``: ``lr``, ``mcc.weight``).
    """

    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.choices:
            return
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(
                f"search dimension {self.low}..{self.high}: needs low < high"
                + (" and low > 0 on a log scale" if self.log else "")
            )

    def describe(self) -> str:
        """``0.0001..0.03 log``, ``1..5 int`` or ``{a, b}``: for logs and the Katib manifest."""
        if self.choices:
            return "{" + ", ".join(map(str, self.choices)) + "}"
        scale = " log" if self.log else ""
        return f"{self.low:g}..{self.high:g}{' int' if self.integer else ''}{scale}"


Space = Mapping[str, Dim]


@dataclass
class StrategyDecl:
    """One strategy's declaration; see the module docstring.

    Args:
        name: What ``train.strategy`` says to pick it.
        sections: ``train.<section>`` -> its params model (shared sections name the same model).
        needs: What it trains on, or a function of the ``train`` params that says it.
        data_parallel: Why it cannot train data-parallel; None: it can.
        module: Where it is declared (the plug-in module to import in a fresh process).
        cls: The strategy's class (set by the decorator).
    """

    name: str
    sections: Mapping[str, type[BaseModel]]
    needs: frozenset[Need] | NeedsFn
    data_parallel: str | None
    module: str
    cls: Any = field(default=None, repr=False)

    def needs_of(self, train: TrainParams) -> frozenset[Need]:
        """What it trains on with the ``train`` params ``train``."""
        if isinstance(self.needs, frozenset):
            return self.needs
        return frozenset(self.needs(train))


_STRATEGIES: dict[str, StrategyDecl] = {}
_SECTIONS: dict[str, type[BaseModel]] = {}
_LOADED: set[str] = set()
_STEP_SECTIONS: dict[str, type[BaseModel]] = {}


def register(decl: StrategyDecl) -> StrategyDecl:
    """Record ``decl``; a module imported again (a reload) replaces its own declaration.

    Raises:
        ValueError: Another module declared that name, or a section with another model.
    """
    known = _STRATEGIES.get(decl.name)
    if known is not None and known.module != decl.module:
        raise ValueError(
            f"strategy {decl.name!r} of {decl.module} is declared by {known.module} already"
        )
    for section, model in decl.sections.items():
        other = _SECTIONS.get(section)
        if other is not None and other.__qualname__ != model.__qualname__:
            raise ValueError(
                f"strategy {decl.name!r}: train.{section} is {other.__qualname__} already "
                f"(declared with {model.__qualname__})"
            )
    _STRATEGIES[decl.name] = decl
    _SECTIONS.update(decl.sections)
    return decl


def load_plugins(modules: Iterable[str] = ()) -> None:
    """Import the built-in strategies and ``modules`` (each once), so that they register.

    Raises:
        ValueError: A module named in params.yaml ``plugins`` cannot be imported.
    """
    for module in (*BUILTIN, *modules):
        if module in _LOADED:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"plugins: cannot import {module!r}: {exc}") from exc
        _LOADED.add(module)


def strategies() -> Mapping[str, StrategyDecl]:
    """Every registered strategy by name (the built-ins once :func:`load_plugins` ran)."""
    load_plugins()
    return MappingProxyType(_STRATEGIES)


def declaration(name: str) -> StrategyDecl:
    """The declaration of strategy ``name``.

    Raises:
        ValueError: No strategy has that name (the message lists those that exist).
    """
    found = strategies().get(name)
    if found is None:
        raise ValueError(
            f"train.strategy {name!r}: unknown{_suggest(name, list(_STRATEGIES))} "
            f"(known: {', '.join(sorted(_STRATEGIES))}, and those of the modules named in "
            "params.yaml plugins)"
        )
    return found


def section_model(name: str) -> type[BaseModel]:
    """The params model of the section ``train.<name>``.

    Raises:
        ValueError: No registered strategy reads such a section.
    """
    found = _SECTIONS.get(name)
    if found is None:
        raise ValueError(
            f"not a key of params.yaml{_suggest(name, list(_SECTIONS))} (strategy sections: "
            f"{', '.join(sorted(_SECTIONS))})"
        )
    return found


def sections() -> list[str]:
    """The sections of ``train`` the registered strategies read."""
    return sorted(_SECTIONS)


def is_section(name: str) -> bool:
    """True when a registered strategy reads the section ``train.<name>``."""
    return name in _SECTIONS


def register_step_section(name: str, model: type[BaseModel]) -> None:
    """Record that a step declares the top-level section ``name`` of params.yaml with ``model``.

    A step whose params no other step or library layer reads declares them in its own module
    (:class:`tlops.runner.spec.StepSpec`'s ``section``); :class:`tlops.config.Params` validates
    the section with that model.
    """
    _STEP_SECTIONS[name] = model


def step_sections() -> Mapping[str, type[BaseModel]]:
    """The top-level sections steps declared (once the steps' catalog is imported)."""
    load_plugins()
    return MappingProxyType(_STEP_SECTIONS)


def needs_of(train: TrainParams) -> frozenset[Need]:
    """What ``train.strategy`` trains on with these params."""
    return declaration(train.strategy).needs_of(train)


def _suggest(name: str, keys: list[str]) -> str:
    close = difflib.get_close_matches(name, keys, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
