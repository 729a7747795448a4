"""The training pipeline, run in-process: every step in order, one MLflow run for all of them.

ingest_data + validate_data (source and target) -> extract_features -> train -> evaluate ->
register_model, on the target domain. A failed step stops the pipeline: nothing after it runs,
the MLflow run is marked FAILED and nothing is registered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tlops.config import Params
from tlops.steps import (
    evaluate,
    extract_features,
    ingest_data,
    register_model,
    train,
    validate_data,
)
from tlops.tracking import runs
from tlops.tracking.registry import champion_classes

ProgressFactory = Callable[
    [str, int | None], contextlib.AbstractContextManager[Callable[[int], None]]
]


@contextlib.contextmanager
def _no_progress(_: str, __: int | None) -> Iterator[Callable[[int], None]]:
    yield lambda _n: None


def run_pipeline(
    params: Params,
    run_dir: Path,
    progress: ProgressFactory = _no_progress,
    run_name: str | None = None,
) -> str:
    """Run every step; see the module docstring.

    Args:
        params: Resolved params.
        run_dir: Where step outputs go (``<run_dir>/<domain>/<step>`` and ``<run_dir>/<step>``).
        progress: Makes a progress callback for a (description, total) pair.
        run_name: MLflow run name (default: the run directory's name).

    Returns:
        The MLflow run id; the step outputs are in ``run_dir`` (see :func:`inprocess_outputs`).

    Raises:
        Whatever the failing step raised, after the MLflow run is marked FAILED.
    """
    from tlops.data.manifest import count_files

    tracking = params.tracking
    run_id = runs.start_run(
        tracking,
        run_name or run_dir.name,
        params.to_flat_dict(),
        {
            "git_sha": runs.git_sha(),
            "backbone": params.model.backbone,
            "strategy": params.train.strategy,
            "run_dir": str(run_dir),
        },
    )
    ok = False
    try:
        reference = champion_classes(
            tracking, params.register_model.model_name, run_dir / "champion_classes.json"
        )
        for domain, data_dir in (("source", params.data.source), ("target", params.data.target)):
            total = count_files(data_dir) if data_dir.is_dir() else None
            with progress(f"ingest_data {domain}", total) as advance:
                ingested = ingest_data.run(
                    params, data_dir, run_dir / domain / "ingest_data", progress=advance
                )
            runs.set_tags(tracking, run_id, {f"data_version.{domain}": ingested.data_version})
            if domain == "target":
                runs.set_tags(tracking, run_id, {"data_version": ingested.data_version})
            with progress(f"validate_data {domain}", None):
                try:
                    validate_data.run(
                        params,
                        run_dir / domain / "ingest_data",
                        run_dir / domain / "validate_data",
                        reference if domain == "target" else None,
                    )
                finally:
                    report = run_dir / domain / "validate_data"
                    runs.log_artifacts(
                        tracking,
                        run_id,
                        [report / "summary.md", report / "validation.json"],
                        f"validate_data/{domain}",
                    )
        target_ingest = run_dir / "target" / "ingest_data"

        with progress("extract_features", None) as advance:
            extract_features.run(
                params, target_ingest, run_dir / "extract_features", run_id, advance
            )

        with progress(f"train ({params.train.strategy})", None) as advance:
            train.run(
                params,
                target_ingest,
                run_dir / "extract_features",
                run_dir / "train",
                run_id,
                progress=advance,
            )

        with progress("evaluate", None):
            evaluate.run(params, target_ingest, run_dir / "train", run_dir / "evaluate", run_id)

        with progress("register_model", None):
            register_model.run(
                params,
                target_ingest,
                run_dir / "train",
                run_dir / "evaluate",
                run_dir / "register_model",
                run_id,
            )
        ok = True
    finally:
        runs.end_run(tracking, run_id, ok)
    return run_id


OUTPUT_FILES = {
    "source": "ingest.json",
    "target": "ingest.json",
    "source_report": "validation.json",
    "target_report": "validation.json",
    "features": "features.json",
    "model": "train.json",
    "evaluation": "evaluation.json",
    "decision": "decision.json",
}


def inprocess_outputs(run_dir: Path) -> dict[str, Path]:
    """The output directories of an in-process run, by pipeline output name."""
    return {
        "source": run_dir / "source" / "ingest_data",
        "target": run_dir / "target" / "ingest_data",
        "source_report": run_dir / "source" / "validate_data",
        "target_report": run_dir / "target" / "validate_data",
        "features": run_dir / "extract_features",
        "model": run_dir / "train",
        "evaluation": run_dir / "evaluate",
        "decision": run_dir / "register_model",
    }


def read_outputs(paths: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The JSON record of each output directory (see :data:`OUTPUT_FILES`)."""
    from tlops.io import read_json

    return {
        name: {**read_json(path / OUTPUT_FILES[name]), "_dir": str(path)}
        for name, path in paths.items()
        if name in OUTPUT_FILES and (path / OUTPUT_FILES[name]).is_file()
    }


def summary_lines(outputs: dict[str, dict[str, Any]], params: Params) -> list[str]:
    """The closing lines after the data tables: metrics, decision, version, how to look."""
    lines: list[str] = []
    trained, evaluation, decision = (
        outputs.get("model"),
        outputs.get("evaluation"),
        outputs.get("decision"),
    )
    if trained is not None:
        lines.append(
            f"train: {trained['strategy']} from {trained['init']}, best epoch "
            f"{trained['best_epoch']}, {trained['seconds']:.0f} s"
        )
    if evaluation is not None:
        m = evaluation["overall"]
        lines.append(
            f"test accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f} "
            f"({m['n_test']} images)"
        )
        champion = evaluation.get("champion")
        if champion is not None:
            c = champion["metrics"]
            lines.append(
                f"champion v{champion['version']} on the same test split: "
                f"accuracy {c['accuracy']:.4f}, macro F1 {c['macro_f1']:.4f}"
            )
    if decision is not None:
        verdict = "PROMOTED to champion" if decision["promote"] else "not promoted"
        lines.append(f"gate: {verdict}")
        lines.extend(f"  - {reason}" for reason in decision["reasons"])
        lines.append(
            f"registered: {decision['model_name']} version {decision['version']}, "
            f"aliases: {', '.join(decision['aliases'])}"
        )
        lines.append(
            f"MLflow run {decision['run_id']} in experiment "
            f"'{params.tracking.experiment}' ({runs.tracking_uri(params.tracking)})"
        )
    lines.append("open the MLflow UI: make ui   (or: tlops ui)")
    return lines
