"""One training run, resolved from the train step's inputs before it trains.

:func:`prepare` reads what the step was given (validated data, a retrain's decision) and
resolves the strategy, the data its needs call for (:mod:`tlops.training.provide`), the model it
starts from (:mod:`tlops.training.start`), the numerics it trains in and the key its checkpoints
are kept under, so that a killed run started again resumes exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tlops.config import Params, TrainConfig
from tlops.layout import NUMERICS_CACHE
from tlops.models.model import TransferModel
from tlops.models.numerics import Choice
from tlops.plugins import Need
from tlops.training.contexts import FitContext
from tlops.training.distributed import Group
from tlops.training.loop import TrainOutcome
from tlops.training.strategies import Strategy, TrainData, get_strategy


@dataclass
class Setup:
    """What one training process resolved from its inputs before it trains."""

    strategy: Strategy
    classes: list[str]
    ingest: dict[str, Any]
    start: str | None
    model: TransferModel
    data: TrainData
    choice: Choice
    key: str
    checkpoints: Path
    batchnorm: str
    source_version: str | None
    unlabeled: str | None


def prepare(
    params: Params,
    inputs: dict[str, Path],
    checkpoint_root: str | None,
    group: Group | None,
    device: torch.device,
    progress: Callable[[int], None] | None = None,
) -> Setup:
    """Resolve a training run from the train step's inputs.

    Args:
        params: Resolved params.
        inputs: The train step's input folders (``dataset``, ``report``, what the strategy
            needs, ``change`` in a retrain).
        checkpoint_root: Where the run's checkpoints go (None: under the cache).
        group: This process's data-parallel group (None: one process).
        device: Where it trains.
        progress: Called with the number of images decoded.
    """
    from tlops.data.dataset import class_list, ingest_info, require_validated, unlabeled_version
    from tlops.io import fingerprint
    from tlops.runtime import seed_everything
    from tlops.tracking.runs import client
    from tlops.training.distributed import batchnorm_mode, check_strategy
    from tlops.training.provide import Provision, provide
    from tlops.training.start import build_model, warm_start

    cfg = params.train
    strategy = get_strategy(cfg)
    if group is not None:
        check_strategy(strategy)
    batchnorm = (
        group.batchnorm if group is not None else batchnorm_mode(cfg.distributed.batchnorm, 1, "")
    )
    ingest = ingest_info(inputs["dataset"])
    require_validated(inputs["report"], ingest)
    seed_everything(cfg.seed)
    classes = class_list(params, ingest)
    start = warm_start(params, strategy, inputs.get("change"))
    if start is not None:
        client(params.tracking)  # the champion is read through the configured store
    model = build_model(params, strategy, classes, start)
    data = provide(Provision(params, strategy, inputs, classes, device, progress))
    source_dir = inputs.get("source_dataset")
    source_version = (
        ingest_info(source_dir)["data_version"]
        if source_dir is not None and Need.SOURCE in strategy.needs
        else None
    )
    unlabeled = unlabeled_version(ingest) if strategy.uses_unlabeled else None
    choice = _numerics(params, strategy, model, data, device, group)
    key = fingerprint(
        ingest["data_version"],
        classes,
        params.model.model_dump(mode="json"),
        # how many processes train does not change what they compute (train.distributed's
        # batchnorm does, resolved above): a job restarted on another count resumes
        cfg.model_dump(mode="json", exclude={"distributed"}),
        batchnorm,
        params.image.model_dump(mode="json"),
        choice.numerics.spec,  # bf16 and fp32 runs are different runs: never resume across
        start,
        data.teacher,  # a version, so a champion promoted meanwhile starts another run
        source_version,
        unlabeled,
    )
    folder = (
        Path(checkpoint_root)
        if checkpoint_root
        else params.extract_features.cache_dir / "checkpoints"
    )
    checkpoints = folder / key
    return Setup(
        strategy, classes, ingest, start, model, data, choice, key, checkpoints, batchnorm,
        source_version, unlabeled,
    )  # fmt: skip


def _numerics(
    params: Params,
    strategy: Strategy,
    model: TransferModel,
    data: TrainData,
    device: torch.device,
    group: Group | None,
) -> Choice:
    """The precision and layout to train in: calibrated here, or rank 0's choice under DDP."""
    from tlops.training.calibration import training_numerics

    cfg, cache_file = params.train, params.extract_features.cache_dir / NUMERICS_CACHE
    if group is None:
        return training_numerics(cfg.numerics, strategy, model, data, device, cache_file, cfg.seed)
    strategy.shard = group.shard()  # timed on this process's part of a global batch
    chosen = (
        training_numerics(cfg.numerics, strategy, model, data, device, cache_file, cfg.seed)
        if group.leads
        else None
    )
    # every process trains in rank 0's choice (a timing is not the same twice)
    choice: Choice = group.broadcast(chosen)
    return choice


def fit_context(params: Params, setup: Setup, device: torch.device) -> FitContext:
    """What a strategy's :meth:`extra_models` trains with: this run's start, data and loop."""
    from tlops.runtime import seed_everything
    from tlops.training.loop import fit
    from tlops.training.start import build_model

    def build(cfg: TrainConfig) -> TransferModel:
        seed_everything(cfg.seed)
        return build_model(params, get_strategy(cfg), setup.classes, setup.start)

    def train(strategy: Strategy, model: TransferModel, folder: Path, key: str) -> TrainOutcome:
        return fit(strategy, model, setup.data, strategy.cfg, folder, key, device)

    return FitContext(build, train, setup.data, setup.checkpoints, setup.key)
