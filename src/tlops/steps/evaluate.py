"""Step ``evaluate``: the trained model (and the champion, if any) on the test split.

Outputs (in the ``evaluation`` directory): ``metrics.json`` (flat test metrics, for DVC, plus
the champion's side by side), ``per_class.csv``, ``predictions.csv``, ``confusion_matrix.png``,
``reliability.png`` (and ``champion_confusion_matrix.png`` with a champion), ``comparison.md``
(candidate vs champion), ``evaluation.json`` (everything, including the calibration table).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlops.config import Params
from tlops.data.dataset import class_list, ingest_info, load_splits
from tlops.data.tensors import SplitTensors
from tlops.evaluate.drift import mmd_test
from tlops.evaluate.metrics import classification_metrics, finite_or_none
from tlops.evaluate.plots import confusion_matrix_png, reliability_png
from tlops.io import atomic_dir, read_json, write_json
from tlops.layout import EVALUATION_FILE, METRICS_FILE, MODEL_FILE, REFERENCE_FILE, TRAIN_FILE
from tlops.models.inference import inference_numerics, pooled_features, predict_logits
from tlops.models.init import (
    create_model,
    is_mlflow_uri,
    load_model,
    load_trained,
    model_from_checkpoint,
    resolve_init,
)
from tlops.models.model import TransferModel
from tlops.models.numerics import CACHE_FILE
from tlops.runtime import resolve_device
from tlops.steps.spec import StepIO, StepResult
from tlops.tracking.registry import CHAMPION, alias_version
from tlops.tracking.report import KEY_ARTIFACTS
from tlops.tracking.runs import client
from tlops.train.strategies import STRATEGIES, Need

COMPARISON_FILE = "comparison.md"


@dataclass(frozen=True)
class EvaluateResult:
    """What ``evaluate`` returns."""

    metrics: dict[str, Any]
    per_class: list[dict[str, Any]]
    champion: dict[str, Any] | None  # {"version", "metrics", "per_class"} or None
    champion_note: str
    out_dir: Path


def score(model: TransferModel, test: SplitTensors, params: Params) -> dict[str, Any]:
    """All metrics of ``model`` on a split."""
    device = resolve_device(params.runtime.device)
    batch_size = params.evaluate.batch_size
    choice = inference_numerics(
        params.evaluate.numerics,
        model,
        [test],
        batch_size,
        device,
        params.extract_features.cache_dir / CACHE_FILE,
    )
    logits = predict_logits(model.to(device), test, batch_size, device, choice.numerics)
    probs = torch.softmax(logits, dim=1).numpy().astype(np.float64)
    result = classification_metrics(
        probs, test.labels, model.classes, params.evaluate.calibration_bins
    )
    result["predicted"] = probs.argmax(axis=1).tolist() if len(probs) else []
    result["confidence"] = probs.max(axis=1).tolist() if len(probs) else []
    result["numerics"] = choice.as_dict()
    return result


def _champion(
    params: Params, classes: list[str], version: str | None = None
) -> tuple[TransferModel | None, str | None, str]:
    name = params.register_model.model_name
    if version is None:
        try:
            version = alias_version(params.tracking, name, CHAMPION)
        except Exception as exc:  # no registry yet, server unreachable...: no comparison
            return None, None, f"no champion: registry not readable ({exc.__class__.__name__})"
        if version is None:
            return None, None, f"no champion yet for {name}"
    payload = resolve_init(f"models:/{name}/{version}").checkpoint or {}
    if list(payload.get("classes", [])) != classes:
        return (
            None,
            version,
            (
                f"champion v{version} has classes {payload.get('classes')}, "
                f"not {classes}: not comparable"
            ),
        )
    model = model_from_checkpoint(payload)
    size = f" at its own {model.image_size} px" if model.image_size else ""
    return model, version, f"champion v{version} evaluated on the same test split{size}"


def champion_scores(
    params: Params,
    ingest_dir: Path,
    classes: list[str],
    test: SplitTensors,
    version: str | None = None,
) -> tuple[dict[str, Any] | None, str | None, str]:
    """The champion's scores on the test split (``test`` is at ``model.image_size``).

    Args:
        params: Resolved params.
        ingest_dir: The ingest output (the split is decoded again at the champion's own
            resolution when it differs).
        classes: The candidate's classes; a champion with others is not comparable.
        test: The decoded test split.
        version: That version of ``register_model.model_name``; None: the ``champion`` alias.

    Returns:
        ``({"version", "metrics", "per_class", "confusion_matrix"} or None, the version found,
        a note for the report)``.
    """
    champion_model, champion_version, note = _champion(params, classes, version)
    if champion_model is None:
        return None, champion_version, note
    size = champion_model.image_size or params.model.image_size
    align = champion_model.align
    champion_test = (
        test
        if size == params.model.image_size and align == params.model.align
        else load_splits(params, ingest_dir, classes, ("test",), image_size=size, align=align)[
            "test"
        ]
    )
    champion_result = score(champion_model, champion_test, params)
    champion = {
        "version": champion_version,
        "metrics": champion_result["overall"],
        "per_class": champion_result["per_class"],
        "confusion_matrix": champion_result["confusion_matrix"],
    }
    return champion, champion_version, note


def domain_distance(
    params: Params, model: TransferModel, source_dir: Path, test: SplitTensors, classes: list[str]
) -> dict[str, float]:
    """MMD between source and target test features, before and after adaptation.

    Before: the backbone training started from (``model.backbone``, its pretrained weights);
    after: the trained model. Each is the squared MMD with a Gaussian kernel at the median
    distance (:func:`tlops.evaluate.drift.mmd_test`), with its permutation p-value: a drop
    says the features of the two domains came closer, a p-value that rises above 0.05 that
    they are no longer told apart.
    """
    device = resolve_device(params.runtime.device)
    source = load_splits(
        params,
        source_dir,
        classes,
        ("test",),
        image_size=model.image_size,
        align=model.align,
    )["test"]
    start = create_model(params.model.backbone, classes, pretrained=params.model.pretrained)
    out: dict[str, float] = {}
    for when, network in (("before", start), ("after", model)):
        network.to(device).eval()
        batch = params.evaluate.batch_size
        result = mmd_test(
            pooled_features(network, source, batch, device),
            pooled_features(network, test, batch, device),
            permutations=200,
            seed=0,
        )
        out[f"domain_mmd2_{when}"] = result.mmd2
        out[f"domain_mmd_p_{when}"] = result.p_value
    return out


def images_per_s(model: TransferModel, split: SplitTensors, batch_size: int, device: Any) -> float:
    """Inference throughput of ``model`` on ``split``: the best of 3 timed passes after one warm-up.

    The best, not the mean: on a shared machine the other passes measure the neighbours.
    """
    predict_logits(model, split, batch_size, device)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        predict_logits(model, split, batch_size, device)
        best = min(best, time.perf_counter() - started)
    return len(split) / best if best > 0 else float("nan")


def teacher_comparison(
    params: Params,
    model: TransferModel,
    uri: str,
    ingest_dir: Path,
    classes: list[str],
    test: SplitTensors,
) -> dict[str, Any]:
    """The teacher and the student of a ``distill`` run on the same test split.

    Accuracy and macro F1 of both, each at its own resolution and alignment, their inference
    images/s (same device, batch size and fp32) and parameter counts.
    """
    if is_mlflow_uri(uri):
        client(params.tracking)  # the teacher is read through the configured store
    teacher = load_trained(uri)
    teacher_test = load_splits(
        params,
        ingest_dir,
        classes,
        ("test",),
        image_size=teacher.image_size or params.model.image_size,
        align=teacher.align,
    )["test"]
    device = resolve_device(params.runtime.device)
    batch = params.evaluate.batch_size
    scored = score(teacher, teacher_test, params)["overall"]
    out: dict[str, Any] = {"uri": uri}
    for who, network, split in (("teacher", teacher, teacher_test), ("student", model, test)):
        network.to(device).eval()
        out[f"{who}_images_per_s"] = images_per_s(network, split, batch, device)
        out[f"{who}_params"] = sum(p.numel() for p in network.parameters())
    out["teacher_accuracy"] = scored["accuracy"]
    out["teacher_macro_f1"] = scored["macro_f1"]
    return out


def run(params: Params, io: StepIO) -> StepResult:
    """Evaluate the trained model, and the champion when one exists, on the test split.

    Args:
        params: Resolved params (reads ``evaluate``, ``model``, ``image``, ``runtime``; the
            registry for ``models:/<register_model.model_name>@champion``).
        io: Inputs ``dataset`` (the test split) and ``model``; output ``evaluation``.

    Returns:
        Candidate and champion metrics (``details``: an :class:`EvaluateResult`).
    """
    ingest_dir, model_dir = io.inputs["dataset"], io.inputs["model"]
    out_dir = io.outputs["evaluation"]
    ingest = ingest_info(ingest_dir)
    classes = class_list(params, ingest)
    model = load_model(model_dir / MODEL_FILE)
    if model.classes != classes:
        raise ValueError(
            f"{model_dir / MODEL_FILE}: trained for {model.classes}, the data has {classes}"
        )
    test = load_splits(params, ingest_dir, classes, ("test",))["test"]
    result = score(model, test, params)
    champion, champion_version, note = champion_scores(params, ingest_dir, classes, test)
    overall = result["overall"]
    flat = {k: finite_or_none(v) for k, v in overall.items()}
    if champion is not None:
        flat.update({f"champion_{k}": finite_or_none(v) for k, v in champion["metrics"].items()})
    reference: dict[str, Any] | None = None
    if (model_dir / REFERENCE_FILE).is_file():  # source_only trained in the same run
        reference_model = load_model(model_dir / REFERENCE_FILE)
        reference = {
            k: finite_or_none(v) for k, v in score(reference_model, test, params)["overall"].items()
        }
        flat.update({f"source_only_{k}": v for k, v in reference.items()})
    teacher: dict[str, Any] | None = None
    trained = read_json(model_dir / TRAIN_FILE) if (model_dir / TRAIN_FILE).is_file() else {}
    if trained.get("teacher"):
        teacher = teacher_comparison(params, model, trained["teacher"], ingest_dir, classes, test)
        teacher["student_accuracy"] = flat["accuracy"]
        teacher["student_macro_f1"] = flat["macro_f1"]
    distance: dict[str, float] = {}
    source_dir = io.inputs.get("source_dataset")
    strategy = STRATEGIES.get(str(trained.get("strategy")))
    # DVC hands every evaluate the source; only a model trained on it is measured against it
    if source_dir is not None and strategy is not None and Need.SOURCE in strategy.needs:
        distance = domain_distance(params, model, source_dir, test, classes)
    evaluated = EvaluateResult(flat, result["per_class"], champion, note, out_dir)
    with atomic_dir(out_dir) as staging:
        write_json(staging / METRICS_FILE, flat)
        (staging / COMPARISON_FILE).write_text(comparison_markdown(evaluated), encoding="utf-8")
        write_json(
            staging / EVALUATION_FILE,
            {
                "classes": classes,
                "data_version": ingest["data_version"],
                "overall": flat,
                "per_class": result["per_class"],
                "confusion_matrix": result["confusion_matrix"],
                "calibration": result["calibration"],
                "champion": champion,
                "champion_note": note,
                "champion_version": champion_version,
                "model": str(model_dir / MODEL_FILE),
                "numerics": result["numerics"],
                "domain_distance": distance or None,
                "source_only_reference": reference,
                "teacher": teacher,
            },
        )
        with (staging / "per_class.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=["class", "precision", "recall", "f1", "support"]
            )
            writer.writeheader()
            writer.writerows(result["per_class"])
        with (staging / "predictions.csv").open("w", newline="", encoding="utf-8") as handle:
            rows = csv.writer(handle)
            rows.writerow(["path", "actual", "predicted", "confidence"])
            for path, actual, predicted, conf in zip(
                test.paths, test.labels, result["predicted"], result["confidence"], strict=True
            ):
                rows.writerow([path, classes[actual], classes[predicted], f"{conf:.6f}"])
        confusion_matrix_png(
            result["confusion_matrix"],
            classes,
            staging / "confusion_matrix.png",
            "candidate · test split",
        )
        reliability_png(
            result["calibration"],
            overall["ece"],
            staging / "reliability.png",
            "candidate · reliability",
        )
        if champion is not None:
            confusion_matrix_png(
                champion["confusion_matrix"],
                classes,
                staging / "champion_confusion_matrix.png",
                f"champion v{champion_version} · test split",
            )
    if io.run is not None:
        io.run.metrics({f"test_{k}": v for k, v in overall.items()})
        if champion is not None:
            io.run.metrics({f"champion_test_{k}": v for k, v in champion["metrics"].items()})
        io.run.metrics(distance)
        if teacher is not None:
            io.run.metrics(
                {
                    f"distill.{k}": v
                    for k, v in teacher.items()
                    if isinstance(v, int | float) and v is not None
                }
            )
        if reference is not None:
            io.run.metrics(
                {f"source_only_test_{k}": v for k, v in reference.items() if v is not None}
            )
        numerics = result["numerics"]
        io.run.tags(
            {
                "champion.compared": note,
                "numerics.evaluate": numerics["numerics"],
                "numerics.evaluate.reason": f"{numerics['source']}: {numerics['reason']}",
            }
        )
        io.run.metrics(
            {
                f"numerics.evaluate.batch_ms.{spec.replace('+', '.')}": 1000 * seconds
                for spec, seconds in numerics["timings"].items()
            }
        )
        files = sorted(out_dir.iterdir())
        # the key plots and tables at the root, where the compare view finds them for every run
        io.run.artifacts([f for f in files if f.name in KEY_ARTIFACTS], None)
        io.run.artifacts([f for f in files if f.name not in KEY_ARTIFACTS], "evaluate")
    primary = params.register_model.gate.primary_metric
    moved = (
        f"; source-target MMD^2 {distance['domain_mmd2_before']:.4f} before, "
        f"{distance['domain_mmd2_after']:.4f} after training"
        if distance
        else ""
    )
    if teacher is not None:
        moved += (
            f"; teacher {teacher['teacher_accuracy']:.4f} at "
            f"{teacher['teacher_images_per_s']:.0f} images/s, student "
            f"{teacher['student_images_per_s']:.0f} images/s"
        )
    return StepResult(
        f"evaluate: accuracy {flat['accuracy']:.4f}, macro F1 {flat['macro_f1']:.4f}; "
        f"{note}{moved} -> {out_dir}",
        metadata={"evaluation": {"primary_metric": primary, primary: flat.get(primary)}},
        metrics={
            k: v
            for k, v in flat.items()
            if v is not None and not k.startswith(("champion_", "source_only_"))
        },
        confusion=(classes, result["confusion_matrix"]),
        views={"summary": out_dir / COMPARISON_FILE},
        details=evaluated,
    )


def comparison_markdown(result: EvaluateResult) -> str:
    """Candidate vs champion on the test split, as a Markdown table."""
    champion = (result.champion or {}).get("metrics", {})
    lines = ["| metric | candidate | champion |", "|---|---|---|"]
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc_ovr", "log_loss", "ece"):
        value = result.metrics.get(key)
        other = champion.get(key)
        lines.append(
            f"| {key} | {'-' if value is None else f'{value:.4f}'} | "
            f"{'-' if other is None else f'{other:.4f}'} |"
        )
    return f"## Test split\n\n{result.champion_note}\n\n" + "\n".join(lines) + "\n"
