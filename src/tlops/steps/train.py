"""Step ``train``: fit a model with the strategy ``train.strategy`` names.

The strategy (:mod:`tlops.train.strategies`) says what it trains on: the decoded target images
(``finetune``, ``scratch``) or the cached features of ``extract_features`` (``linear_probe``).
The data must have passed validation: the ``report`` input is checked against the dataset.

Outputs (in the ``model`` directory): ``model.pt`` (a weights-only tlops checkpoint),
``history.csv`` and ``history.json`` (one row per epoch, DVC plots), ``training_curves.png``,
``train.json``. A checkpoint is written every epoch under the checkpoint folder; a killed run
started again with the same data, params and init resumes from it and ends with the same
metrics.
"""

from __future__ import annotations

import csv
import functools
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlops.config import UNLABELED_SPLIT, Params
from tlops.data.budget import budget_labels
from tlops.data.dataset import (
    class_list,
    ingest_info,
    load_splits,
    require_validated,
    unlabeled_version,
)
from tlops.data.tensors import SplitTensors, concat, content_order
from tlops.evaluate.plots import training_curves_png
from tlops.io import atomic_dir, fingerprint, read_json, write_json
from tlops.layout import (
    CHANGE_FILE,
    FEATURES_FILE,
    MODEL_FILE,
    PROGRESS_PREFIX,
    REFERENCE_FILE,
    TRAIN_FILE,
    VALIDATION_FILE,
)
from tlops.models.inference import predict_logits
from tlops.models.init import create_model, load_trained, resolve_init
from tlops.models.model import BackboneError, TransferModel
from tlops.models.numerics import CACHE_FILE, Choice, fall_back
from tlops.runtime import resolve_device, seed_everything, torchrun_rank
from tlops.steps.spec import StepIO, StepResult
from tlops.tracking.registry import CHAMPION, alias_version
from tlops.tracking.runs import client
from tlops.train.distributed import Group, batchnorm_mode, check_strategy, process_group
from tlops.train.loop import EpochCallback, TrainOutcome, fit
from tlops.train.numerics import training_numerics
from tlops.train.strategies import UNLABELED, Need, Strategy, TrainData, get_strategy


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` returns."""

    strategy: str
    best_epoch: int
    best_metric: float
    epochs_run: int
    resumed_from_epoch: int | None
    seconds: float
    train_images_per_s: float
    numerics: Choice
    out_dir: Path


def _features(
    features_dir: Path, split: str, classes: list[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    meta = read_json(features_dir / FEATURES_FILE)
    if list(meta["classes"]) != classes:
        raise ValueError(
            f"{features_dir}: features were extracted for classes {meta['classes']}, not {classes}"
        )
    features = np.load(features_dir / f"{split}.npy")
    with (features_dir / f"{split}_index.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[row["label"]] for row in rows], dtype=np.int64)
    return features, labels, [row["path"] for row in rows]


def _source(
    strategy: Strategy, params: Params, io: StepIO, classes: list[str]
) -> tuple[SplitTensors, SplitTensors]:
    """The source domain's train and val splits (validated, labeled with ``classes``)."""
    source_dir, report = io.inputs.get("source_dataset"), io.inputs.get("source_report")
    if source_dir is None or report is None:
        raise ValueError(
            f"train.strategy {strategy.name} trains on the source domain: give the source's "
            "ingest_data and validate_data outputs (--source-dataset, --source-report)"
        )
    require_validated(report, ingest_info(source_dir))
    splits = load_splits(params, source_dir, classes, ("train", "val"), io.progress)
    return splits["train"], splits["val"]


def teacher_uri(params: Params) -> str:
    """The teacher of ``distill``: ``train.distill.teacher``, else the champion's version URI.

    Raises:
        ValueError: No teacher is set and there is no champion.
    """
    if params.train.distill.teacher:
        return params.train.distill.teacher
    name = params.register_model.model_name
    version = alias_version(params.tracking, name, CHAMPION)
    if version is None:
        raise ValueError(
            f"train.distill.teacher is not set and {name} has no champion to distill from "
            "in the registry; train one first, or set "
            "train.distill.teacher to a checkpoint or MLflow model URI"
        )
    return f"models:/{name}/{version}"


def _teacher_logits(
    params: Params,
    dataset: Path,
    classes: list[str],
    uri: str,
    device: torch.device,
    splits: tuple[str, ...],
) -> np.ndarray:
    """The teacher's logits of the images of ``splits``, in order, at its input preparation."""
    try:
        teacher = load_trained(uri)
    except BackboneError as exc:
        raise ValueError(f"train.distill.teacher: a teacher is a trained model: {exc}") from exc
    if teacher.classes != classes:
        raise ValueError(f"teacher {uri}: classes {teacher.classes}, the data has {classes}")
    loaded = load_splits(
        params,
        dataset,
        classes,
        splits,
        image_size=teacher.image_size or params.model.image_size,
        align=teacher.align,
    )
    split = functools.reduce(concat, (loaded[name] for name in splits))
    logits = predict_logits(teacher.to(device), split, params.train.eval_batch_size, device)
    result: np.ndarray = logits.numpy().astype(np.float32)
    return result


def _data(
    strategy: Strategy,
    params: Params,
    io: StepIO,
    classes: list[str],
    device: torch.device,
    teacher: str | None,
) -> TrainData:
    data = TrainData(classes)
    budget = params.train.target_labels
    seed = params.train.seed
    if Need.IMAGES in strategy.uses:
        dataset = io.inputs["dataset"]
        wanted = ("train", "val") if budget != 0 else ("train",)  # no target label before evaluate
        # data.target_unlabeled's images follow the training images, for who learns from them
        extra = (
            (UNLABELED_SPLIT,)
            if strategy.uses_unlabeled and unlabeled_version(ingest_info(dataset))
            else ()
        )
        splits = load_splits(params, dataset, classes, (*wanted, *extra), io.progress)
        train = splits["train"]
        if budget != 0:
            train.labels = budget_labels(train.paths, train.labels, budget, seed)
        if extra:
            train = concat(train, splits[UNLABELED_SPLIT])
        if teacher is not None:  # in the split's order, before any reordering
            data.teacher_logits = _teacher_logits(
                params, dataset, classes, teacher, device, ("train", *extra)
            )
        if budget == 0:
            # unlabeled: in an order of pixels alone, without labels or paths (class folders)
            train, order = content_order(train)
            if data.teacher_logits is not None:
                data.teacher_logits = data.teacher_logits[order]
        data.train, data.val = train, splits.get("val")
    if Need.SOURCE in strategy.uses:
        source_classes = classes
        if strategy.own_source_head:  # the source's task has its own classes
            report = io.inputs.get("source_report")
            source_classes = read_json(report / VALIDATION_FILE)["classes"] if report else classes
            data.source_classes = list(source_classes)
        data.source_train, data.source_val = _source(strategy, params, io, source_classes)
    if Need.FEATURES in strategy.uses:
        features = io.inputs.get("features")
        if features is None:
            raise ValueError(
                f"train.strategy {strategy.name} needs the extract_features output (--features)"
            )
        if budget == 0:
            raise ValueError(
                f"train.strategy {strategy.name} trains a head on labeled features, and "
                "train.target_labels is 0"
            )
        x, y, paths = _features(features, "train", classes)
        keep = budget_labels(paths, y, budget, seed) != UNLABELED
        data.train_features = (x[keep], y[keep])
        data.val_features = _features(features, "val", classes)[:2]
    return data


def warm_start(params: Params, strategy: Strategy, change_dir: Path | None) -> str | None:
    """The champion version a retrain starts from (``models:/<name>/<version>``), or None.

    From ``detect_change``'s output, when ``detect_change.warm_start`` is on and the strategy
    fine-tunes pretrained weights on images. A strategy on cached features does not: its
    features are the backbone's, not the champion's. The version, not the alias, so a champion
    promoted by a concurrent run while this one trains changes nothing here.
    """
    if change_dir is None:
        return None
    change = read_json(change_dir / CHANGE_FILE)
    if not change["retrain"]:
        raise ValueError(
            f"{change_dir / CHANGE_FILE}: detect_change decided not to retrain "
            f"({change['reasons'][0]}); nothing is trained on its decision"
        )
    if not params.detect_change.warm_start:
        return None
    if not strategy.pretrained or Need.IMAGES not in strategy.uses:
        return None
    champion = change.get("champion")
    return str(champion["uri"]) if champion else None


def _build(
    params: Params, strategy: Strategy, classes: list[str], start: str | None = None
) -> TransferModel:
    spec = start or params.model.backbone
    if not strategy.pretrained:
        # the same architecture as the start model, randomly initialised
        spec = resolve_init(spec, False).spec
    pretrained = params.model.pretrained and strategy.pretrained
    model = create_model(spec, classes, pretrained=pretrained, dropout=params.model.dropout)
    model.image_size = params.model.image_size
    model.align = params.model.align
    return model


def _reference(
    params: Params,
    strategy: Strategy,
    classes: list[str],
    start: str | None,
    data: TrainData,
    checkpoints: Path,
    key: str,
    device: torch.device,
) -> TransferModel | None:
    """``source_only`` on the same data, budget and seed (``train.da.reference``), or None.

    Trained in fp32 with its own checkpoints (beside the run's), so it resumes too.
    """
    if not params.train.da.reference or Need.SOURCE not in strategy.uses:
        return None
    if strategy.name in ("source_only", "multitask"):
        return None  # it is the reference itself / not a domain adaptation strategy
    cfg = params.train.model_copy(update={"strategy": "source_only"})
    seed_everything(cfg.seed)
    reference = _build(params, get_strategy(cfg), classes, start)
    fit(get_strategy(cfg), reference, data, cfg, checkpoints / "reference", f"{key}-ref", device)
    return reference.cpu()


def progress(epochs: int, log: EpochCallback | None) -> EpochCallback:
    """The epoch callback: a line on stderr, then ``log`` (MLflow).

    Every runner shows stderr (KFP keeps it in the task's log, which `tlops run` echoes).
    """

    def on_epoch(row: dict[str, float]) -> None:
        parts = [f"loss {row['train_loss']:.4f}"]
        for key in ("val_accuracy", "val_macro_f1", "val_loss"):
            if key in row:
                parts.append(f"{key.replace('_', ' ', 1)} {row[key]:.4f}")
        parts.append(f"{row['epoch_seconds']:.1f} s")
        sys.stderr.write(f"{PROGRESS_PREFIX}{int(row['epoch']) + 1}/{epochs}: {', '.join(parts)}\n")
        sys.stderr.flush()
        if log is not None:
            log(row)

    return on_epoch


def run(params: Params, io: StepIO) -> StepResult:
    """Train with ``train.strategy`` and write the model.

    In one process, or data-parallel: under torchrun this process trains its shard (see
    :mod:`tlops.train.distributed`); with ``train.distributed`` asking for more than one
    process and none started yet, the step starts them (:mod:`tlops.steps.launch`: torchrun on
    this machine for one node, a Kubeflow Trainer TrainJob for more) and returns what rank 0
    wrote.

    Args:
        params: Resolved params (reads ``model``, ``train``, ``image``, ``runtime``).
        io: Inputs ``dataset``, ``report`` and (for strategies on features) ``features``;
            output ``model`` (replaced on success); argument ``checkpoint_root`` (per-epoch
            checkpoints, under a key of data version, params and init; default: the cache).

    Returns:
        Summary of the training (``details``: a :class:`TrainResult`, None after a launch).
    """
    dp = params.train.distributed
    if dp.world_size > 1 and torchrun_rank() is None:
        from tlops.steps import launch, trainjob

        check_strategy(get_strategy(params.train))  # before any process starts
        if dp.nodes > 1:
            trainjob.run(params, io)
        else:
            launch.launch(params, io)
        return launched_result(io.outputs["model"])
    device = resolve_device(params.runtime.device)
    with process_group(dp, device) as group:
        return _train(params, io, group, group.device if group is not None else device)


def launched_result(out_dir: Path) -> StepResult:
    """The step's result from what rank 0 of a data-parallel launch wrote to ``out_dir``."""
    summary = read_json(out_dir / TRAIN_FILE)
    return StepResult(
        f"train: {summary['strategy']} on {summary['world_size']} processes, "
        f"{summary['epochs_run']} epoch(s), best epoch {summary['best_epoch'] + 1} "
        f"({summary['best_metric']:.4f}) -> {out_dir}",
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


def _train(params: Params, io: StepIO, group: Group | None, device: torch.device) -> StepResult:
    """:func:`run` in this process (alone, or one of a data-parallel group)."""
    cfg = params.train
    strategy = get_strategy(cfg)
    if group is not None:
        check_strategy(strategy)
    batchnorm = (
        group.batchnorm if group is not None else batchnorm_mode(cfg.distributed.batchnorm, 1, "")
    )
    leads = group is None or group.leads
    out_dir = io.outputs["model"]
    ingest = ingest_info(io.inputs["dataset"])
    require_validated(io.inputs["report"], ingest)
    seed_everything(cfg.seed)
    classes = class_list(params, ingest)
    start = warm_start(params, strategy, io.inputs.get("change"))
    if start is not None:
        client(params.tracking)  # the champion is read through the configured store
    model = _build(params, strategy, classes, start)
    teacher = None
    if Need.TEACHER in strategy.uses:
        client(params.tracking)  # the champion is read through the configured store
        teacher = teacher_uri(params)
    data = _data(strategy, params, io, classes, device, teacher)
    source_dir = io.inputs.get("source_dataset")
    source_version = (
        ingest_info(source_dir)["data_version"]
        if source_dir is not None and Need.SOURCE in strategy.uses
        else None
    )
    unlabeled = unlabeled_version(ingest) if strategy.uses_unlabeled else None
    cache_file = params.extract_features.cache_dir / CACHE_FILE
    if group is None:
        choice = training_numerics(cfg.numerics, strategy, model, data, device, cache_file)
    else:  # every process trains in rank 0's choice (a timing is not the same twice)
        strategy.shard = group.shard()  # timed on this process's part of a global batch
        chosen = (
            training_numerics(cfg.numerics, strategy, model, data, device, cache_file)
            if group.leads
            else None
        )
        choice = group.broadcast(chosen)
    key = fingerprint(
        ingest["data_version"],
        classes,
        params.model.model_dump(mode="json"),
        # how many processes train does not change what they compute (train.distributed's
        # batchnorm does, resolved below): a job restarted on another count resumes
        cfg.model_dump(mode="json", exclude={"distributed"}),
        batchnorm,
        params.image.model_dump(mode="json"),
        choice.numerics.spec,  # bf16 and fp32 runs are different runs: never resume across
        start,
        teacher,  # a version, so a champion promoted meanwhile starts another run
        source_version,
        unlabeled,
    )
    root = io.args.get("checkpoint_root")
    checkpoints = (Path(root) if root else params.extract_features.cache_dir / "checkpoints") / key
    outcome: TrainOutcome = fit(
        strategy,
        model,
        data,
        cfg,
        checkpoints,
        key,
        device,
        progress(strategy.schedule().epochs, io.run.epoch if io.run is not None else None)
        if leads
        else None,
        choice.numerics,
        group,
        batchnorm,
    )
    if not leads:  # rank 0 writes the outputs and logs; this process is done
        return StepResult("")
    world = group.world if group is not None else 1
    pretraining = strategy.pretraining_metrics()
    if outcome.fallback:
        sys.stderr.write(f"train: {outcome.fallback}\n")
        fall_back(choice, outcome.fallback, cache_file)
    model.cpu()
    reference = _reference(params, strategy, classes, start, data, checkpoints, key, device)
    selection = "target val" if data.val is not None or data.val_features else "source val"
    summary: dict[str, Any] = {
        "strategy": cfg.strategy,
        "target_labels": cfg.target_labels,
        "labeled_images": len(data.train_labels()),
        "target_images": len(data.train) if data.train is not None else None,
        "unlabeled_data_version": unlabeled,
        "selection": selection,
        "teacher": teacher,
        "backbone": params.model.backbone,
        "init": model.weights,
        "classes": classes,
        "data_version": ingest["data_version"],
        "source_data_version": source_version,
        "run_key": key,
        **{k: v for k, v in asdict(outcome).items() if k != "history"},
        "epochs_run": len(outcome.history),  # best_epoch counts from 0, as history does
        "numerics_choice": choice.as_dict(),
        "world_size": world,
        "backend": group.backend if group is not None else None,
        "batchnorm": batchnorm,
    }
    with atomic_dir(out_dir) as staging:
        torch.save(model.checkpoint(), staging / MODEL_FILE)
        write_json(staging / "history.json", outcome.history)
        if pretraining:
            write_json(staging / "pretraining.json", pretraining)
        with (staging / "history.csv").open("w", newline="", encoding="utf-8") as handle:
            if outcome.history:
                writer = csv.DictWriter(handle, fieldnames=list(outcome.history[0]))
                writer.writeheader()
                writer.writerows(outcome.history)
        if outcome.history:
            training_curves_png(
                outcome.history,
                staging / "training_curves.png",
                f"{cfg.strategy} · {params.model.backbone}",
            )
        write_json(staging / TRAIN_FILE, summary)
        if reference is not None:
            torch.save(reference.checkpoint(), staging / REFERENCE_FILE)
    # Checkpoints exist to resume an interrupted run; a finished one must not be "resumed" by
    # the next identical run, which should train (and reproduce) for real.
    shutil.rmtree(checkpoints, ignore_errors=True)
    if io.run is not None:
        extracted = io.inputs.get("features")
        if extracted is not None:  # what extract_features computed with (it has no run)
            meta = read_json(extracted / FEATURES_FILE).get("numerics", {})
            io.run.tags({"numerics.extract_features": meta.get("numerics", "")})
        io.run.tags(
            {
                "init": model.weights,
                "strategy": cfg.strategy,
                "target_labels": str(cfg.target_labels),
                **({"teacher": teacher} if teacher else {}),
                "selection": selection,
                "numerics": outcome.numerics,
                "numerics.source": choice.source,
                "numerics.reason": choice.reason,
                "distributed.world_size": str(world),
                "distributed.batchnorm": batchnorm,
                **({"distributed.backend": group.backend} if group is not None else {}),
                **({"numerics.fallback": outcome.fallback} if outcome.fallback else {}),
            }
        )
        io.run.metrics(
            {
                "best_epoch": outcome.best_epoch,
                "train_seconds": outcome.seconds,
                "train_images_per_s": outcome.train_images_per_s,
                "numerics.calibration_seconds": choice.spent_seconds,
                **{
                    f"numerics.step_ms.{spec.replace('+', '.')}": 1000 * seconds
                    for spec, seconds in choice.timings.items()
                },
            }
        )
        for row in pretraining:  # e.g. the autoencoder's reconstruction loss per epoch
            io.run.epoch(row)
        io.run.artifacts([out_dir / "training_curves.png", out_dir / "history.csv"], "train")
    result = TrainResult(
        cfg.strategy,
        outcome.best_epoch,
        outcome.best_metric,
        len(outcome.history),
        outcome.resumed_from_epoch,
        outcome.seconds,
        outcome.train_images_per_s,
        choice,
        out_dir,
    )
    resumed = (
        f", resumed after epoch {outcome.resumed_from_epoch - 1}"
        if outcome.resumed_from_epoch
        else ""
    )
    return StepResult(
        f"train: {cfg.strategy}, {result.epochs_run} epoch(s), best epoch {result.best_epoch + 1} "
        f"({result.best_metric:.4f}){resumed}, {choice.describe()} -> {out_dir}",
        metadata={
            "model": {
                "backbone": params.model.backbone,
                "strategy": cfg.strategy,
                "classes": classes,
                "init": model.weights,
                "data_version": ingest["data_version"],
                "best_epoch": outcome.best_epoch,
            }
        },
        details=result,
    )
