"""Training strategies by name: ``train.strategy`` in params.yaml picks one.

A new strategy is a subclass of :class:`Strategy` in a module of its own, added to
:data:`STRATEGIES` here, to the names ``train.strategy`` accepts and, with what it trains on, to
:data:`tlops.train.needs.NEEDS` (which the pipeline is built from without importing torch).
"""

from __future__ import annotations

from tlops.config import TrainConfig
from tlops.data.budget import UNLABELED
from tlops.train.needs import Need
from tlops.train.strategies.autoencoder import AutoEncoder
from tlops.train.strategies.base import Schedule, Strategy, TrainData
from tlops.train.strategies.distill import Distill
from tlops.train.strategies.domain_adaptation import Coral, Dan, Dann, Mcc, SourceOnly
from tlops.train.strategies.linear_probe import LinearProbe
from tlops.train.strategies.multitask import MultiTask
from tlops.train.strategies.supervised import FineTune, Scratch

STRATEGIES: dict[str, type[Strategy]] = {
    s.name: s
    for s in (
        LinearProbe,
        FineTune,
        Scratch,
        SourceOnly,
        Dan,
        Coral,
        Dann,
        Mcc,
        MultiTask,
        Distill,
        AutoEncoder,
    )
}

__all__ = ["STRATEGIES", "UNLABELED", "Need", "Schedule", "Strategy", "TrainData", "get_strategy"]


def get_strategy(cfg: TrainConfig) -> Strategy:
    """The strategy object ``train.strategy`` names.

    Raises:
        ValueError: No strategy has that name.
    """
    try:
        return STRATEGIES[cfg.strategy](cfg)
    except KeyError:
        raise ValueError(
            f"train.strategy {cfg.strategy!r}: unknown (known: {', '.join(sorted(STRATEGIES))})"
        ) from None
