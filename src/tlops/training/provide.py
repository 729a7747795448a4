"""What a strategy trains on, fetched by one provider per need (:class:`tlops.plugins.Need`).

The train step asks the strategy what it needs and runs the providers of those needs, in a
fixed order, on the step's inputs: it never asks which strategy it trains. Without target
labels (``train.target_labels`` 0) no target label is read before evaluation: the target's val
split is not loaded and its training images are put in an order of their pixels alone.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tlops.config import UNLABELED_SPLIT, Params
from tlops.data.budget import UNLABELED, budget_labels
from tlops.data.dataset import ingest_info, load_splits, require_validated, unlabeled_version
from tlops.data.tensors import concat, content_order
from tlops.io import read_json
from tlops.layout import FEATURES_FILE, VALIDATION_FILE
from tlops.models.inference import predict_logits
from tlops.models.init import load_trained
from tlops.models.model import BackboneError
from tlops.plugins import Need
from tlops.tracking.registry import CHAMPION, alias_version
from tlops.tracking.runs import client
from tlops.training.strategies import Strategy, TrainData


@dataclass
class Provision:
    """What the providers read: the params, the step's input folders, the target's classes.

    Args:
        params: Resolved params.
        strategy: The strategy being trained (its needs and its own answers, e.g. a teacher).
        inputs: The train step's input port -> folder.
        classes: The target's classes.
        device: Where a teacher computes its logits.
        progress: Called with the number of images decoded.
    """

    params: Params
    strategy: Strategy
    inputs: dict[str, Path]
    classes: list[str]
    device: torch.device
    progress: Callable[[int], None] | None = None
    # the target splits whose images `train` holds, in their order (set by the images provider)
    target_splits: tuple[str, ...] = ()


def images(ctx: Provision, data: TrainData) -> None:
    """The target's train split (labels outside the budget unused), its val split, unlabeled."""
    params, dataset = ctx.params, ctx.inputs["dataset"]
    budget, seed = params.train.target_labels, params.train.seed
    wanted = ("train", "val") if budget != 0 else ("train",)  # no target label before evaluate
    # data.target_unlabeled's images follow the training images, for who learns from them
    extra = (
        (UNLABELED_SPLIT,)
        if ctx.strategy.uses_unlabeled and unlabeled_version(ingest_info(dataset))
        else ()
    )
    splits = load_splits(params, dataset, ctx.classes, (*wanted, *extra), ctx.progress)
    train = splits["train"]
    if budget != 0:
        train.labels = budget_labels(train.paths, train.labels, budget, seed)
    if extra:
        train = concat(train, splits[UNLABELED_SPLIT])
    data.train, data.val = train, splits.get("val")
    ctx.target_splits = ("train", *extra)


def teacher(ctx: Provision, data: TrainData) -> None:
    """The teacher's logits of every target training image, at its own input preparation."""
    uri = teacher_uri(ctx.params, ctx.strategy.named_teacher())
    try:
        model = load_trained(uri)
    except BackboneError as exc:
        raise ValueError(f"train.distill.teacher: a teacher is a trained model: {exc}") from exc
    if model.classes != ctx.classes:
        raise ValueError(f"teacher {uri}: classes {model.classes}, the data has {ctx.classes}")
    loaded = load_splits(
        ctx.params,
        ctx.inputs["dataset"],
        ctx.classes,
        ctx.target_splits,
        image_size=model.image_size or ctx.params.model.image_size,
        align=model.align,
    )
    split = functools.reduce(concat, (loaded[name] for name in ctx.target_splits))
    batch = ctx.params.train.eval_batch_size
    logits = predict_logits(model.to(ctx.device), split, batch, ctx.device)
    data.teacher_logits = logits.numpy().astype(np.float32)
    data.teacher = uri


def teacher_uri(params: Params, named: str | None) -> str:
    """``named`` (a checkpoint or MLflow model URI), else the champion's version URI.

    The version, not the alias: a champion promoted while this run trains changes nothing.

    Raises:
        ValueError: None is named and there is no champion.
    """
    client(params.tracking)  # a champion is read through the configured store
    if named:
        return named
    name = params.register_model.model_name
    version = alias_version(params.tracking, name, CHAMPION)
    if version is None:
        raise ValueError(
            f"train.distill.teacher is not set and {name} has no champion to distill from "
            "in the registry; train one first, or set "
            "train.distill.teacher to a checkpoint or MLflow model URI"
        )
    return f"models:/{name}/{version}"


def source(ctx: Provision, data: TrainData) -> None:
    """The source domain's train and val splits (validated; the target's classes, or its own)."""
    classes = ctx.classes
    source_dir, report = ctx.inputs.get("source_dataset"), ctx.inputs.get("source_report")
    if ctx.strategy.own_source_head:  # the source's task has its own classes
        classes = read_json(report / VALIDATION_FILE)["classes"] if report else classes
        data.source_classes = list(classes)
    if source_dir is None or report is None:
        raise ValueError(
            f"train.strategy {ctx.strategy.name} trains on the source domain: give the source's "
            "ingest_data and validate_data outputs (--source-dataset, --source-report)"
        )
    require_validated(report, ingest_info(source_dir))
    splits = load_splits(ctx.params, source_dir, classes, ("train", "val"), ctx.progress)
    data.source_train, data.source_val = splits["train"], splits["val"]


def features(ctx: Provision, data: TrainData) -> None:
    """extract_features' train and val features, the train split's within the label budget."""
    folder = ctx.inputs.get("features")
    name = ctx.strategy.name
    if folder is None:
        raise ValueError(f"train.strategy {name} needs the extract_features output (--features)")
    budget, seed = ctx.params.train.target_labels, ctx.params.train.seed
    if budget == 0:
        raise ValueError(
            f"train.strategy {name} trains a head on labeled features, and train.target_labels is 0"
        )
    x, y, paths = read_features(folder, "train", ctx.classes)
    keep = budget_labels(paths, y, budget, seed) != UNLABELED
    data.train_features = (x[keep], y[keep])
    data.val_features = read_features(folder, "val", ctx.classes)[:2]


def read_features(
    folder: Path, split: str, classes: list[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The features, label indices and paths of ``split`` in extract_features' output.

    Raises:
        ValueError: They were extracted for other classes.
    """
    meta = read_json(folder / FEATURES_FILE)
    if list(meta["classes"]) != classes:
        raise ValueError(
            f"{folder}: features were extracted for classes {meta['classes']}, not {classes}"
        )
    values = np.load(folder / f"{split}.npy")
    with (folder / f"{split}_index.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[row["label"]] for row in rows], dtype=np.int64)
    return values, labels, [row["path"] for row in rows]


# in this order: a teacher's logits follow the target images' order, set before it
PROVIDERS: dict[Need, Callable[[Provision, TrainData], None]] = {
    Need.IMAGES: images,
    Need.TEACHER: teacher,
    Need.SOURCE: source,
    Need.FEATURES: features,
}


def provide(ctx: Provision) -> TrainData:
    """Everything the strategy needs, each need by its provider.

    Without target labels, the target's training images (and a teacher's logits of them) are
    then put in an order of their pixels alone, without labels or paths (class folders).
    """
    data = TrainData(ctx.classes)
    needs = ctx.strategy.needs
    for need, provider in PROVIDERS.items():
        if need in needs:
            provider(ctx, data)
    if data.train is not None and ctx.params.train.target_labels == 0:
        data.train, order = content_order(data.train)
        if data.teacher_logits is not None:
            data.teacher_logits = data.teacher_logits[order]
    return data
