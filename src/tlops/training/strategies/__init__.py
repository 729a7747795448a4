"""Training strategies, one file each: ``train.strategy`` in params.yaml picks one by name.

Every module of this package is a strategy that registers itself (:func:`base.strategy`) when
imported; importing the package imports them all, so a new strategy is a new file here (or a
module of your own named in params.yaml ``plugins``). Nothing here imports torch: see
:mod:`tlops.plugins`.
"""

from __future__ import annotations

import importlib
import pkgutil

from tlops.training.strategies.base import (
    UNLABELED,
    Need,
    Schedule,
    Strategy,
    TrainData,
    get_strategy,
    strategy,
)

__all__ = ["UNLABELED", "Need", "Schedule", "Strategy", "TrainData", "get_strategy", "strategy"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
