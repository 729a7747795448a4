"""Step ``evaluate``: the trained model (and the champion, if any) on the test split.

Outputs (in the ``evaluation`` directory): ``metrics.json`` (flat test metrics, for DVC, plus
the champion's side by side), ``per_class.csv``, ``predictions.csv``, ``confusion_matrix.png``,
``reliability.png``, ``champion_confusion_matrix.png`` (a note without a champion),
``comparison.md``
(candidate vs champion), ``evaluation.json`` (everything, including the calibration table).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.config import Params
from tlops.data.dataset import class_list, ingest_info, load_splits
from tlops.evaluate.metrics import finite_or_none
from tlops.evaluate.plots import confusion_matrix_png, message_png, reliability_png
from tlops.evaluate.scoring import champion_scores, score
from tlops.io import atomic_dir, read_json, write_json
from tlops.layout import EVALUATION_FILE, METRICS_FILE, MODEL_FILE, TRAIN_FILE
from tlops.runner.spec import Port, StepIO, StepResult, StepSpec, Tracking
from tlops.steps.ingest_data import dataset_input
from tlops.tracking.report import KEY_ARTIFACTS
from tlops.training.contexts import EvalContext, EvalExtras
from tlops.training.strategies import get_strategy

if TYPE_CHECKING:
    from tlops.data.tensors import SplitTensors
    from tlops.models.model import TransferModel

COMPARISON_FILE = "comparison.md"


@dataclass(frozen=True)
class EvaluateResult:
    """What ``evaluate`` returns."""

    metrics: dict[str, Any]
    per_class: list[dict[str, Any]]
    champion: dict[str, Any] | None  # {"version", "metrics", "per_class"} or None
    champion_note: str
    out_dir: Path


def run(params: Params, io: StepIO) -> StepResult:
    """Evaluate the trained model, and the champion when one exists, on the test split.

    The strategy that trained the model adds what only it knows (:meth:`Strategy.evaluation`:
    the domain distance, a reference's or a teacher's scores).

    Args:
        params: Resolved params (reads ``evaluate``, ``model``, ``image``, ``runtime``; the
            registry for ``models:/<register_model.model_name>@champion``).
        io: Inputs ``dataset`` (the test split), ``model`` and, when the model trained on it,
            ``source_dataset``; output ``evaluation``.

    Returns:
        Candidate and champion metrics.
    """
    from tlops.models.init import load_model

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
    champion, champion_version, note = _champion(params, ingest_dir, classes, test)
    flat = {k: finite_or_none(v) for k, v in result["overall"].items()}
    extras = _extras(params, io, model, classes, test, flat)
    evaluated = EvaluateResult(flat, result["per_class"], champion, note, out_dir)
    metrics = {**flat, **_champion_flat(champion), **extras.metrics}
    report = {
        "classes": classes,
        "data_version": ingest["data_version"],
        "overall": metrics,
        "per_class": result["per_class"],
        "confusion_matrix": result["confusion_matrix"],
        "calibration": result["calibration"],
        "champion": champion,
        "champion_note": note,
        "champion_version": champion_version,
        "model": str(model_dir / MODEL_FILE),
        "numerics": result["numerics"],
        **extras.report,
    }
    from tlops.models.device import machine_label
    from tlops.runtime import resolve_device

    machine = machine_label(resolve_device(params.runtime.device))
    _write(out_dir, evaluated, metrics, report, result, test, classes, machine)
    if io.run is not None:
        _log(io, out_dir, result, champion, extras, note)
    primary = params.register_model.gate.primary_metric
    return StepResult(
        f"evaluate: accuracy {flat['accuracy']:.4f}, macro F1 {flat['macro_f1']:.4f}; "
        f"{note}{extras.summary} -> {out_dir}",
        metadata={"evaluation": {"primary_metric": primary, primary: flat.get(primary)}},
        metrics={k: v for k, v in flat.items() if v is not None},
        confusion=(classes, result["confusion_matrix"]),
        views={"summary": out_dir / COMPARISON_FILE},
    )


def _champion(
    params: Params, ingest_dir: Path, classes: list[str], test: SplitTensors
) -> tuple[dict[str, Any] | None, str | None, str]:
    """The champion's scores on the same test split, or why there are none (a note)."""
    from tlops.tracking.registry import CHAMPION, alias_version

    name = params.register_model.model_name
    try:
        version = alias_version(params.tracking, name, CHAMPION)
    except Exception as exc:  # no registry yet, server unreachable...: no comparison
        return None, None, f"no champion: registry not readable ({exc.__class__.__name__})"
    if version is None:
        return None, None, f"no champion yet for {name}"
    return champion_scores(params, ingest_dir, classes, test, version)


def _champion_flat(champion: dict[str, Any] | None) -> dict[str, float | None]:
    if champion is None:
        return {}
    return {f"champion_{k}": finite_or_none(v) for k, v in champion["metrics"].items()}


def _extras(
    params: Params,
    io: StepIO,
    model: TransferModel,
    classes: list[str],
    test: SplitTensors,
    overall: dict[str, Any],
) -> EvalExtras:
    """What the strategy that trained ``model`` adds to its evaluation."""
    model_dir = io.inputs["model"]
    trained = read_json(model_dir / TRAIN_FILE) if (model_dir / TRAIN_FILE).is_file() else {}
    if "strategy" not in trained:
        return EvalExtras()
    strategy = get_strategy(params.train.model_copy(update={"strategy": trained["strategy"]}))
    domains = {"target": io.inputs["dataset"], "source": io.inputs.get("source_dataset")}

    def test_split(domain: str, network: TransferModel) -> SplitTensors | None:
        folder = domains[domain]
        if folder is None:
            return None  # DVC hands every evaluate the source; a run without one has none
        size, align = network.image_size or params.model.image_size, network.align
        if domain == "target" and size == params.model.image_size and align == params.model.align:
            return test
        return load_splits(params, folder, classes, ("test",), image_size=size, align=align)["test"]

    def scored(network: TransferModel, split: SplitTensors) -> dict[str, Any]:
        return score(network, split, params)

    context = EvalContext(
        params, model, model_dir, trained, classes, test, test_split, scored, overall
    )
    return strategy.evaluation(context)


def _write(
    out_dir: Path,
    evaluated: EvaluateResult,
    metrics: dict[str, Any],
    report: dict[str, Any],
    result: dict[str, Any],
    test: SplitTensors,
    classes: list[str],
    machine: str,
) -> None:
    """The ``evaluation`` output, all at once: metrics, report, tables and plots."""
    champion = evaluated.champion
    with atomic_dir(out_dir) as staging:
        # which machine made the figures: kernels differ by CPU, and so does the 4th digit of a
        # loss, so `dvc metrics diff` against a committed baseline says where each side came from
        write_json(staging / METRICS_FILE, {**metrics, "machine": machine})
        (staging / COMPARISON_FILE).write_text(comparison_markdown(evaluated), encoding="utf-8")
        write_json(staging / EVALUATION_FILE, report)
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
            result["overall"]["ece"],
            staging / "reliability.png",
            "candidate · reliability",
        )
        if champion is not None:
            confusion_matrix_png(
                champion["confusion_matrix"],
                classes,
                staging / "champion_confusion_matrix.png",
                f"champion v{champion['version']} · test split",
            )
        else:  # the same files every run: DVC declares it, the compare view lines it up
            message_png(
                staging / "champion_confusion_matrix.png",
                "champion · test split",
                "no champion yet: nothing to compare with",
            )


def _log(
    io: StepIO,
    out_dir: Path,
    result: dict[str, Any],
    champion: dict[str, Any] | None,
    extras: EvalExtras,
    note: str,
) -> None:
    """The test metrics, the champion's, the strategy's extras and the files into MLflow."""
    assert io.run is not None
    io.run.metrics({f"test_{k}": v for k, v in result["overall"].items()})
    if champion is not None:
        io.run.metrics({f"champion_test_{k}": v for k, v in champion["metrics"].items()})
    io.run.metrics(extras.logged)
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


# The step's declaration: what every runner (tlops step, dvc.yaml, KFP) is derived from.
STEP = StepSpec(
    name="evaluate",
    run=run,
    help="Evaluate the model (and the champion, on the same split) on the test split.",
    params=(
        "evaluate",
        "model.backbone",
        "model.pretrained",
        "model.image_size",
        "image",
        "validate_data.classes",
        "register_model.model_name",
        "extract_features.cache_dir",
        "runtime",
        "tracking",
    ),
    inputs=(
        dataset_input(),
        Port("model", "Model", "Output of train.", producer=("train", "model")),
        dataset_input(
            "source_dataset",
            "Output of ingest_data for the source domain (domain adaptation: the distance "
            "of the domains' features before and after training).",
            domain="source",
            optional=True,
        ),
    ),
    outputs=(
        Port(
            "evaluation",
            "Artifact",
            "metrics.json, evaluation.json, per_class.csv, predictions.csv, plots",
            files={
                "metrics.json": "metrics",
                "evaluation.json": "out",
                "comparison.md": "uncached",
                "predictions.csv": "out",
                "per_class.csv": "uncached",
                "confusion_matrix.png": "plots",
                "reliability.png": "plots",
                "champion_confusion_matrix.png": "plots",
            },
        ),
        Port("metrics", "Metrics", "Scalar test metrics.", view=True),
        Port("confusion", "ClassificationMetrics", "The confusion matrix.", view=True),
        Port("summary", "Markdown", "Candidate vs champion on the test split.", view=True),
    ),
    code=(
        "tlops.evaluate.scoring",
        "tlops.evaluate.metrics",
        "tlops.evaluate.plots",
        "tlops.models.inference",
        "tlops.training.contexts",  # what a strategy adds to its model's evaluation
        "tlops.training.strategies",
    ),
    tracking=Tracking.JOINS,
)
