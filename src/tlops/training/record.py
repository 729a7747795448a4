"""What a training run leaves: its ``model`` folder, ``train.json`` and the facts of the run.

:func:`write_model` writes the ``train`` step's output all at once (weights, history, curves,
``train.json``, the models a strategy trains beside); :func:`summary` is ``train.json``;
:func:`run_facts` what only this run measured (times, speeds), kept in ``step.json``.
"""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.config import Params
from tlops.io import atomic_dir, write_json
from tlops.layout import MODEL_FILE, TRAIN_FILE
from tlops.training.selection import SCORE

if TYPE_CHECKING:
    from tlops.models.model import TransferModel
    from tlops.training.distributed import Group
    from tlops.training.loop import TrainOutcome
    from tlops.training.prepare import Setup


# TrainOutcome's fields that only this run measured: in step.json, not train.json
RUN_FACTS = ("history", "seconds", "train_images_per_s", "resumed_from_epoch")


def run_facts(setup: Setup, outcome: TrainOutcome) -> dict[str, Any]:
    """What this run measured, for step.json: times, speed, the numerics choice and its why."""
    return {
        "train_seconds": outcome.seconds,
        "resumed_from_epoch": outcome.resumed_from_epoch,
        "train_images_per_s": outcome.train_images_per_s,
        "epoch_seconds": [row.get("epoch_seconds") for row in outcome.history],
        "numerics_choice": setup.choice.as_dict(),
        "numerics_described": setup.choice.describe(),
    }


def summary(
    params: Params, setup: Setup, outcome: TrainOutcome, group: Group | None
) -> dict[str, Any]:
    """``train.json``: what trained, on what, how it went and in which numerics."""
    cfg, data = params.train, setup.data
    selection = "target val" if data.val is not None or data.val_features else "source val"
    if outcome.metric == SCORE:  # a label-free criterion picked the best epoch
        selection = f"{cfg.selection.criterion} criterion (no target label)"
    return {
        "strategy": cfg.strategy,
        "target_labels": cfg.target_labels,
        "labeled_images": len(data.train_labels()),
        "target_images": len(data.train) if data.train is not None else None,
        "unlabeled_data_version": setup.unlabeled,
        "selection": selection,
        "teacher": data.teacher,
        "backbone": params.model.backbone,
        "init": setup.model.weights,
        "classes": setup.classes,
        "data_version": setup.ingest["data_version"],
        "source_data_version": setup.source_version,
        "run_key": setup.key,
        # what this run measured (times, speeds) is not part of the output: run_facts()
        **{k: v for k, v in asdict(outcome).items() if k not in RUN_FACTS},
        # epochs count from 1 in every record and view (the loop's own index starts at 0)
        "best_epoch": outcome.best_epoch + 1,
        "epochs_run": len(outcome.history),
        "stop_reason": outcome.stop_reason(params.train),
        "world_size": group.world if group is not None else 1,
        "backend": group.backend if group is not None else None,
        "batchnorm": setup.batchnorm,
    }


def write_model(
    params: Params,
    out_dir: Path,
    setup: Setup,
    outcome: TrainOutcome,
    summary: dict[str, Any],
    extra: dict[str, TransferModel],
) -> None:
    """The ``model`` output, all at once: weights, history, curves, train.json, extra models."""
    import torch

    from tlops.evaluate.plots import training_curves_png
    from tlops.training.loop import counted_from_one

    pretraining = setup.strategy.pretraining_metrics()
    with atomic_dir(out_dir) as staging:
        torch.save(setup.model.checkpoint(), staging / MODEL_FILE)
        history = counted_from_one(outcome.history)
        write_json(staging / "history.json", history)
        if pretraining:
            write_json(staging / "pretraining.json", counted_from_one(pretraining))
        with (staging / "history.csv").open("w", newline="", encoding="utf-8") as handle:
            if history:
                writer = csv.DictWriter(handle, fieldnames=list(history[0]))
                writer.writeheader()
                writer.writerows(history)
        if history:
            training_curves_png(
                history,
                staging / "training_curves.png",
                f"{params.train.strategy} · {params.model.backbone}",
            )
        write_json(staging / TRAIN_FILE, summary)
        for name, model in extra.items():
            torch.save(model.checkpoint(), staging / name)
