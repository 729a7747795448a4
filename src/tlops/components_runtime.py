"""What the KFP components in ``components/`` call: params from the pipeline, artifacts in and out.

Each function maps KFP artifacts (objects with ``path`` and ``metadata``) onto the paths of a
``tlops.steps`` function and fills the artifact metadata the KFP UI shows (data version, classes,
backbone). Any failure marks the pipeline's MLflow run FAILED before it propagates, so a
pipeline stopped by bad data or a crash is visible as failed in MLflow too.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tlops.config import Params
from tlops.io import read_json

T = TypeVar("T")


def params_from(raw: str) -> Params:
    """Validate the params (JSON) a pipeline run was given."""
    return Params.model_validate_json(raw)


@contextmanager
def _failing_run(params: Params, run_id: str) -> Iterator[None]:
    try:
        yield
    except BaseException:
        if run_id:
            from tlops.tracking.runs import end_run

            end_run(params.tracking, run_id, ok=False)
        raise


def _guarded(params: Params, run_id: str, step: str, action: Callable[[], T]) -> T:
    """Run a step's body; mark the MLflow run FAILED on error; log the body's own seconds."""
    import time

    from tlops.tracking.runs import log_metrics

    with _failing_run(params, run_id):
        started = time.perf_counter()
        result = action()
        log_metrics(
            params.tracking, run_id or None, {f"step_seconds.{step}": time.perf_counter() - started}
        )
        return result


def ingest(
    raw: str, data_dir: Path, domain: str, expected_version: str, run_id: str, dataset: Any
) -> tuple[str, str]:
    """Component ``ingest_data``; starts the MLflow run when ``run_id`` is empty."""
    from tlops.steps import ingest_data
    from tlops.tracking import runs

    params = params_from(raw)
    if not run_id:
        run_id = runs.start_run(
            params.tracking,
            f"{params.kfp.pipeline_name}",
            params.to_flat_dict(),
            {
                "git_sha": runs.git_sha(),
                "backbone": params.model.backbone,
                "strategy": params.train.strategy,
                "runner": "kfp",
            },
        )

    def body() -> str:
        result = ingest_data.run(params, data_dir, Path(dataset.path))
        if expected_version and result.data_version != expected_version:
            raise ValueError(
                f"{data_dir}: data version {result.data_version} differs from the expected "
                f"{expected_version} (the data changed after the run was submitted)"
            )
        runs.set_tags(params.tracking, run_id, {f"data_version.{domain}": result.data_version})
        if domain == "target":
            runs.set_tags(params.tracking, run_id, {"data_version": result.data_version})
        dataset.metadata.update(
            {
                "data_version": result.data_version,
                "domain": domain,
                "classes": result.classes,
                "n_images": result.n_images,
                "version_source": result.version_source,
            }
        )
        return result.data_version

    return _guarded(params, run_id, f"ingest_data.{domain}", body), run_id


def validate(
    raw: str, dataset: Any, run_id: str, report: Any, data_docs: Any, summary: Any
) -> bool:
    """Component ``validate_data``: raises when the data breaks a critical rule."""
    from tlops.steps import validate_data
    from tlops.tracking import runs

    params = params_from(raw)
    out = Path(report.path)

    def publish() -> None:
        domain = dataset.metadata.get("domain", "data")
        pages = sorted((out / validate_data.DOCS_DIR / "validations").rglob("*.html"))
        if pages:
            shutil.copy(pages[0], data_docs.path)
        shutil.copy(out / validate_data.SUMMARY_FILE, summary.path)
        runs.log_artifacts(
            params.tracking,
            run_id or None,
            [out / validate_data.SUMMARY_FILE, out / validate_data.VALIDATION_FILE],
            f"validate_data/{domain}",
        )

    def body() -> bool:
        import tempfile

        from tlops.tracking.registry import champion_classes

        with tempfile.TemporaryDirectory() as tmp:
            reference = None
            if dataset.metadata.get("domain") == "target":
                # once a champion exists, the target data must carry the champion's classes
                reference = champion_classes(
                    params.tracking,
                    params.register_model.model_name,
                    Path(tmp) / "champion_classes.json",
                )
            try:
                result = validate_data.run(params, Path(dataset.path), out, reference)
            finally:
                if (out / validate_data.SUMMARY_FILE).is_file():
                    publish()
        report.metadata.update(
            {
                "passed": result.passed,
                "data_version": result.data_version,
                "warnings": len(result.warnings),
            }
        )
        return result.passed

    domain = dataset.metadata.get("domain", "data")
    return _guarded(params, run_id, f"validate_data.{domain}", body)


def extract(raw: str, dataset: Any, run_id: str, features: Any) -> float:
    """Component ``extract_features``."""
    from tlops.steps import extract_features

    params = params_from(raw)

    def body() -> float:
        result = extract_features.run(
            params, Path(dataset.path), Path(features.path), run_id or None
        )
        features.metadata.update(
            {
                "backbone": params.model.backbone,
                "key": result.key,
                "reused": result.reused,
                "num_features": result.num_features,
                "data_version": dataset.metadata.get("data_version", ""),
            }
        )
        return result.images_per_s

    return _guarded(params, run_id, "extract_features", body)


def fit(
    raw: str, dataset: Any, features: Any, run_id: str, checkpoint_root: str, model: Any
) -> float:
    """Component ``train``: per-epoch checkpoints under ``checkpoint_root`` survive retries."""
    from tlops.steps import train
    from tlops.steps.common import fingerprint

    params = params_from(raw)

    def body() -> float:
        ckpt = None
        if checkpoint_root:
            key = fingerprint(
                dataset.metadata.get("data_version", ""),
                params.model.model_dump(mode="json"),
                params.train.model_dump(mode="json"),
            )
            ckpt = Path(checkpoint_root) / key
        result = train.run(
            params,
            Path(dataset.path),
            Path(features.path),
            Path(model.path),
            run_id or None,
            checkpoint_dir=ckpt,
        )
        info = read_json(Path(model.path) / train.TRAIN_FILE)
        model.metadata.update(
            {
                "backbone": params.model.backbone,
                "strategy": result.strategy,
                "classes": info["classes"],
                "init": info["init"],
                "data_version": info["data_version"],
                "best_epoch": result.best_epoch,
            }
        )
        return float(result.best_metric)

    return _guarded(params, run_id, "train", body)


def assess(
    raw: str,
    dataset: Any,
    model: Any,
    run_id: str,
    metrics: Any,
    confusion: Any,
    evaluation: Any,
    summary: Any,
) -> float:
    """Component ``evaluate``: scalar metrics, confusion matrix, candidate-vs-champion table."""
    from tlops.steps import evaluate

    params = params_from(raw)

    def body() -> float:
        result = evaluate.run(
            params, Path(dataset.path), Path(model.path), Path(evaluation.path), run_id or None
        )
        for key, value in result.metrics.items():
            if value is not None and not key.startswith("champion_"):
                metrics.log_metric(key, float(value))
        details = read_json(Path(evaluation.path) / evaluate.EVALUATION_FILE)
        confusion.log_confusion_matrix(details["classes"], details["confusion_matrix"])
        Path(summary.path).write_text(comparison_markdown(result), encoding="utf-8")
        primary = result.metrics.get(params.register_model.gate.primary_metric)
        return float(primary) if primary is not None else float("nan")

    return _guarded(params, run_id, "evaluate", body)


def comparison_markdown(result: Any) -> str:
    """Candidate vs champion on the test split, as a Markdown table."""
    champion = (result.champion or {}).get("metrics", {})
    lines = ["| metric | candidate | champion |", "|---|---|---|"]
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc_ovr", "log_loss", "ece"):
        value = result.metrics.get(key)
        other = champion.get(key)
        lines.append(
            f"| {key} | {value if value is None else f'{value:.4f}'} | "
            f"{'-' if other is None else f'{other:.4f}'} |"
        )
    return f"## Test split\n\n{result.champion_note}\n\n" + "\n".join(lines) + "\n"


def register(
    raw: str, dataset: Any, model: Any, evaluation: Any, run_id: str, decision: Any, summary: Any
) -> str:
    """Component ``register_model``: closes the MLflow run as FINISHED."""
    from tlops.steps import register_model
    from tlops.tracking.runs import end_run, start_run

    params = params_from(raw)
    if not run_id:
        run_id = start_run(params.tracking, "register_model", params.to_flat_dict(), {})

    def body() -> str:
        result = register_model.run(
            params,
            Path(dataset.path),
            Path(model.path),
            Path(evaluation.path),
            Path(decision.path),
            run_id,
        )
        decision.metadata.update(
            {
                "version": result.version,
                "aliases": list(result.aliases),
                "promote": result.decision.promote,
                "model_name": result.model_name,
            }
        )
        verdict = "promoted to champion" if result.decision.promote else "not promoted"
        reasons = "\n".join(f"- {reason}" for reason in result.decision.reasons)
        Path(summary.path).write_text(
            f"## {result.model_name} version {result.version}: {verdict}\n\n{reasons}\n\n"
            f"aliases: {', '.join(result.aliases)}\n",
            encoding="utf-8",
        )
        return result.version

    version = _guarded(params, run_id, "register_model", body)
    end_run(params.tracking, run_id, ok=True)
    return version
