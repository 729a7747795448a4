"""Step ``train``: fit a model with the strategy ``train.strategy`` names.

The strategy (:mod:`tlops.training.strategies`) says what it trains on; one provider per need
fetches it from the step's inputs (:mod:`tlops.training.provide`). The data must have passed
validation: the ``report`` input is checked against the dataset.

Outputs (in the ``model`` directory): ``model.pt`` (a weights-only tlops checkpoint),
``history.csv`` and ``history.json`` (one row per epoch, DVC plots), ``training_curves.png``,
``train.json``, and what the strategy trains beside the model (:meth:`Strategy.extra_models`).
A checkpoint is written every epoch under the checkpoint folder; a killed run started again
with the same data, params and init resumes from it and ends with the same metrics.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.config import Params
from tlops.io import read_json
from tlops.layout import (
    FEATURES_FILE,
    NUMERICS_CACHE,
    PROGRESS_PREFIX,
    TRAIN_FILE,
)
from tlops.runner.spec import Arg, Port, StepIO, StepResult, StepSpec, Tracking
from tlops.steps.ingest_data import dataset_input
from tlops.steps.validate_data import report_input
from tlops.tracking import lifecycle
from tlops.training.selection import SCORE
from tlops.training.strategies import get_strategy

# Importing a step module is cheap (the pipeline is built from its declaration, STEP): torch
# and the training stack are imported by the functions that train.
if TYPE_CHECKING:
    import torch

    from tlops.training.distributed import Group
    from tlops.training.loop import EpochCallback, TrainOutcome
    from tlops.training.prepare import Setup


def progress(epochs: int, log: EpochCallback | None) -> EpochCallback:
    """The epoch callback: a line on stderr, then ``log`` (MLflow).

    Every runner shows stderr (KFP keeps it in the task's log, which `tlops run` echoes).
    """

    def on_epoch(row: dict[str, float]) -> None:
        parts = [f"loss {row['train_loss']:.4f}"]
        for key in ("val_accuracy", "val_macro_f1", "val_loss"):
            if key in row:
                parts.append(f"{key.replace('_', ' ', 1)} {row[key]:.4f}")
        if SCORE in row:  # the label-free criterion that picks the best epoch
            parts.append(f"selection score {row[SCORE]:.4f}")
        parts.append(f"{row['epoch_seconds']:.1f} s")
        sys.stderr.write(f"{PROGRESS_PREFIX}{int(row['epoch']) + 1}/{epochs}: {', '.join(parts)}\n")
        sys.stderr.flush()
        if log is not None:
            log(row)

    return on_epoch


def run(params: Params, io: StepIO) -> StepResult:
    """Train with ``train.strategy`` and write the model.

    In one process, or data-parallel: under torchrun this process trains its shard (see
    :mod:`tlops.training.distributed`); with ``train.distributed`` asking for more than one
    process and none started yet, the step starts them (:mod:`tlops.runner.launch`: torchrun on
    this machine for one node, a Kubeflow Trainer TrainJob for more) and returns what rank 0
    wrote.

    Args:
        params: Resolved params (reads ``model``, ``train``, ``image``, ``runtime``).
        io: Inputs ``dataset``, ``report`` and what the strategy needs (``features``,
            ``source_dataset``, ``source_report``); output ``model`` (replaced on success);
            argument ``checkpoint_root`` (per-epoch checkpoints, under a key of data version,
            params and init; default: the cache).

    Returns:
        Summary of the training.
    """
    from tlops.runtime import resolve_device, torchrun_rank
    from tlops.training.distributed import check_strategy, process_group
    from tlops.training.start import for_change, tuned

    params = for_change(params, io.inputs.get("change"))  # an adapt run: the label-free strategy
    params, search = tuned(params, io.inputs.get("tuned"))  # the tune step's best params
    dp = params.train.distributed
    if dp.world_size > 1 and torchrun_rank() is None:
        from tlops.runner import launch, trainjob

        check_strategy(get_strategy(params.train))  # before any process starts
        if dp.nodes > 1:
            trainjob.run(params, io)
        else:
            launch.launch(params, io)
        return trained_result(read_json(io.outputs["model"] / TRAIN_FILE), io.outputs["model"])
    device = resolve_device(params.runtime.device)
    with process_group(dp, device) as group:
        return _train(params, io, group, group.device if group is not None else device, search)


def objective_line(outcome: TrainOutcome) -> str:
    """``train: <metric>=<value>``: the best epoch's figure, as a Katib trial reports it.

    Katib's StdOut collector reads ``name=value`` from the log of a tune trial (the
    Experiment's objective is this metric, :mod:`tlops.runner.katib`).
    """
    return f"train: {outcome.metric}={outcome.best_metric:.6g}"


def trained_result(summary: dict[str, Any], out_dir: Path) -> StepResult:
    """The step's result from its ``train.json`` (this process's, or rank 0's after a launch)."""
    facts = lifecycle.run_facts(out_dir)
    world, tuned = summary["world_size"], summary.get("tuned")
    resumed = facts.get("resumed_from_epoch")
    return StepResult(
        f"train: {summary['strategy']}{f' on {world} processes' if world > 1 else ''}, "
        f"{summary['epochs_run']} epoch(s), best epoch {summary['best_epoch']} "
        f"({summary.get('metric', 'val')} {summary['best_metric']:.4f})"
        + (f", resumed after epoch {resumed}" if resumed else "")
        + (f", params of tune trial {tuned['best_trial']}" if tuned else "")
        + (f", {facts['numerics_described']}" if facts.get("numerics_described") else "")
        + f" -> {out_dir}",
        metadata={
            "model": {
                "backbone": summary["backbone"],
                "strategy": summary["strategy"],
                "classes": summary["classes"],
                "init": summary["init"],
                "data_version": summary["data_version"],
                "best_epoch": summary["best_epoch"],
            }
        },
    )


def _train(
    params: Params,
    io: StepIO,
    group: Group | None,
    device: torch.device,
    search: dict[str, Any] | None = None,
) -> StepResult:
    """:func:`run` in this process (alone, or one of a data-parallel group)."""
    from tlops.models.numerics import fall_back
    from tlops.training import record
    from tlops.training.loop import fit
    from tlops.training.prepare import fit_context, prepare

    setup = prepare(params, io.inputs, io.args.get("checkpoint_root"), group, device, io.progress)
    leads = group is None or group.leads
    on_epoch = progress(setup.strategy.schedule().epochs, io.run.epoch if io.run else None)
    outcome: TrainOutcome = fit(
        setup.strategy,
        setup.model,
        setup.data,
        params.train,
        setup.checkpoints,
        setup.key,
        device,
        on_epoch if leads else None,
        setup.choice.numerics,
        group,
        setup.batchnorm,
        setup.choice.probe,
    )
    if not leads:  # rank 0 writes the outputs and logs; this process is done
        return StepResult("")
    if outcome.fallback:
        sys.stderr.write(f"train: {outcome.fallback}\n")
        fall_back(
            setup.choice, outcome.fallback, params.extract_features.cache_dir / NUMERICS_CACHE
        )
    sys.stderr.write(objective_line(outcome) + "\n")
    stop = outcome.stop_reason(params.train)
    if stop:
        sys.stderr.write(f"train: {stop}\n")
    setup.model.cpu()
    extra = setup.strategy.extra_models(fit_context(params, setup, device))
    summary = record.summary(params, setup, outcome, group)
    summary["tuned"] = search  # the tune step's best params this run trained with
    record.write_model(params, io.outputs["model"], setup, outcome, summary, extra)
    lifecycle.write_run_facts(io.outputs["model"], record.run_facts(setup, outcome))
    # Checkpoints exist to resume an interrupted run; a finished one must not be "resumed" by
    # the next identical run, which should train (and reproduce) for real.
    shutil.rmtree(setup.checkpoints, ignore_errors=True)
    if io.run is not None:
        _log(io, setup, outcome, summary)
    return trained_result(summary, io.outputs["model"])


def _log(io: StepIO, setup: Setup, outcome: TrainOutcome, summary: dict[str, Any]) -> None:
    """Tags, metrics and the curves into the pipeline's MLflow run."""
    assert io.run is not None
    choice = setup.choice
    extracted = io.inputs.get("features")
    if extracted is not None:  # what extract_features computed with (it has no run)
        meta = read_json(extracted / FEATURES_FILE).get("numerics", {})
        io.run.tags({"numerics.extract_features": meta.get("numerics", "")})
    io.run.tags(
        {
            "init": summary["init"],
            "strategy": summary["strategy"],
            "target_labels": str(summary["target_labels"]),
            **({"teacher": summary["teacher"]} if summary["teacher"] else {}),
            "selection": summary["selection"],
            **({"tuned": json.dumps(summary["tuned"]["params"])} if summary["tuned"] else {}),
            "numerics": outcome.numerics,
            "numerics.source": choice.source,
            "numerics.reason": choice.reason,
            **({"numerics.accuracy": choice.accuracy} if choice.accuracy else {}),
            **({"numerics.speedup": f"{choice.speedup:.2f}x"} if choice.speedup else {}),
            "distributed.world_size": str(summary["world_size"]),
            "distributed.batchnorm": summary["batchnorm"],
            **({"distributed.backend": summary["backend"]} if summary["backend"] else {}),
            **({"numerics.fallback": outcome.fallback} if outcome.fallback else {}),
        }
    )
    io.run.metrics(
        {
            "best_epoch": outcome.best_epoch + 1,
            "train_seconds": outcome.seconds,
            "resumed_from_epoch": outcome.resumed_from_epoch,
            "train_images_per_s": outcome.train_images_per_s,
            "numerics.calibration_seconds": choice.spent_seconds,
            **{
                f"numerics.step_ms.{spec.replace('+', '.')}": 1000 * seconds
                for spec, seconds in choice.timings.items()
            },
        }
    )
    for row in setup.strategy.pretraining_metrics():  # e.g. an autoencoder's reconstruction loss
        io.run.epoch(row)
    out_dir = io.outputs["model"]
    io.run.artifacts([out_dir / "training_curves.png", out_dir / "history.csv"], "train")


# The step's declaration: what every runner (tlops step, dvc.yaml, KFP) is derived from.
STEP = StepSpec(
    name="train",
    run=run,
    help="Train with the strategy train.strategy names; resumes a killed run from its last "
    "checkpoint.",
    params=(
        "model",
        "train",
        "image",
        "validate_data.classes",
        "extract_features.cache_dir",
        "detect_change.warm_start",
        "runtime",
        "tracking",
    ),
    args=(
        Arg(
            "checkpoint_root",
            "Folder for per-epoch checkpoints (a PVC on a cluster; "
            "default: under extract_features.cache_dir).",
        ),
    ),
    inputs=(
        dataset_input(),
        report_input(),
        Port(
            "features",
            "Dataset",
            "Output of extract_features (strategies that train on features).",
            producer=("extract_features", "features"),
            optional=True,
        ),
        dataset_input(
            "source_dataset",
            "Output of ingest_data for the source domain (strategies that train on it).",
            domain="source",
            optional=True,
        ),
        report_input(
            "source_report",
            "Output of validate_data for the source domain (it must have passed).",
            domain="source",
            optional=True,
        ),
        Port(
            "change",
            "Artifact",
            "Output of detect_change (retraining): warm start from the champion it names, "
            "logging into the run it opened.",
            producer=("detect_change", "change"),
            optional=True,
        ),
        Port(
            "tuned",
            "Artifact",
            "Output of tune (tune.trials > 0): its best params override train's.",
            producer=("tune", "tuned"),
            optional=True,
        ),
    ),
    outputs=(
        Port(
            "model",
            "Model",
            "model.pt, history, training curves, train.json",
            files={
                "model.pt": "out",
                "train.json": "out",
                "history.json": "out",
                "training_curves.png": "plots",
                "history.csv": "uncached",
            },
        ),
    ),
    code=(
        "tlops.training.prepare",
        "tlops.training.provide",
        "tlops.training.start",
        "tlops.training.record",
        "tlops.training.selection",
        "tlops.training.calibration",
        "tlops.training.contexts",
        "tlops.training.loop",
        "tlops.training.engine",
        "tlops.training.callbacks",
        "tlops.training.losses",
        "tlops.training.strategies",
        "tlops.training.distributed",
        "tlops.evaluate.metrics",
        "tlops.data.budget",
        "tlops.data.align",
        "tlops.models.init",
        "tlops.models.model",
        "tlops.data.tensors",
    ),
    resources="gpu",
    tracking=Tracking.OPENS,
)
