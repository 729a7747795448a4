"""Modules imported on first use, for the files that must register without importing torch.

A strategy file (:mod:`tlops.plugins`) is imported wherever params are validated, the
pipeline-building processes included, where torch's few seconds of import buy nothing. It
imports torch and the torch-based tlops modules through :func:`lazy` (their types under
``TYPE_CHECKING``), so they load when a strategy first computes, not when it registers.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule(ModuleType):
    """A stand-in for module ``name`` that imports it on the first attribute read."""

    def __init__(self, name: str) -> None:
        super().__init__(f"lazy:{name}")
        self._target = name

    def __getattr__(self, attr: str) -> Any:
        # only reached for names this stand-in lacks: import (once, sys.modules caches) and read
        return getattr(importlib.import_module(self._target), attr)


def lazy(name: str) -> Any:
    """A module that is imported when one of its attributes is first read."""
    return LazyModule(name)
