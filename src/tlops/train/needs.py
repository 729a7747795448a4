"""What each training strategy trains on, declared without importing torch.

The pipeline is built from this (which steps run, which domains are ingested) in processes that
never train: ``tlops run``'s own process, ``tlops compile``, the scheduler. The strategy classes
of :mod:`tlops.train.strategies` take their ``needs`` from here, so there is one declaration.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from tlops.config import TrainConfig


class Need(StrEnum):
    """What a strategy trains on; the pipeline runs only the steps that provide it."""

    IMAGES = "images"  # decoded target images (train and val splits)
    FEATURES = "features"  # cached backbone features of extract_features
    SOURCE = "source"  # decoded, labeled source-domain images (train and val splits)
    TEACHER = "teacher"  # a trained model's logits of every target training image


_ADAPTATION = frozenset({Need.IMAGES, Need.SOURCE})

# train.strategy -> what it trains on whatever its params (see needs_of for what params add)
NEEDS: Mapping[str, frozenset[Need]] = MappingProxyType(
    {
        "linear_probe": frozenset({Need.FEATURES}),
        "finetune": frozenset({Need.IMAGES}),
        "scratch": frozenset({Need.IMAGES}),
        "source_only": _ADAPTATION,
        "dan": _ADAPTATION,
        "coral": _ADAPTATION,
        "dann": _ADAPTATION,
        "mcc": _ADAPTATION,
        "multitask": _ADAPTATION,
        "distill": frozenset({Need.IMAGES, Need.TEACHER}),
        "autoencoder": frozenset({Need.IMAGES}),
    }
)


def needs_of(strategy: str, cfg: TrainConfig) -> frozenset[Need]:
    """What ``strategy`` trains on with the ``train`` params ``cfg``.

    ``autoencoder`` also reads the source's images when ``train.autoencoder.source`` is on.

    Raises:
        ValueError: No strategy has that name.
    """
    try:
        needs = NEEDS[strategy]
    except KeyError:
        raise ValueError(
            f"train.strategy {strategy!r}: unknown (known: {', '.join(sorted(NEEDS))})"
        ) from None
    if strategy == "autoencoder" and cfg.autoencoder.source:
        needs |= {Need.SOURCE}
    return needs
