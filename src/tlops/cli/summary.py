"""What ``tlops run`` and ``tlops retrain`` print after a run: data tables and closing lines.

Everything here is read back from the records the pipeline's steps wrote (``ingest.json``,
``evaluation.json``, ...), so what is shown is what the run recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from tlops.cli.common import console
from tlops.config import SPLITS, Params

# the record each pipeline output carries, by the kind of output (its name's first word)
OUTPUT_RECORDS = {
    "dataset": "ingest.json",
    "report": "validation.json",
    "features": "features.json",
    "model": "train.json",
    "evaluation": "evaluation.json",
    "decision": "decision.json",
    "change": "change.json",
    "deployment": "deploy.json",
}

Outputs = dict[str, dict[str, Any]]


def read_outputs(paths: dict[str, Path]) -> Outputs:
    """The JSON record of each pipeline output (``dataset_target`` -> its ingest.json, ...)."""
    from tlops.io import read_json
    from tlops.tracking.lifecycle import run_facts

    records = {}
    for name, path in paths.items():
        record = path / OUTPUT_RECORDS.get(name.split("_")[0], "")
        if record.is_file():
            # with the facts of the run that made it (times, speeds: step.json)
            records[name] = {**read_json(record), "_dir": str(path), "_run": run_facts(path)}
    return records


def print_data(outputs: Outputs) -> None:
    """Per domain ingested: its images by class and split, its data version, its validation."""
    for domain in ("source", "target"):
        ingested, report = outputs.get(f"dataset_{domain}"), outputs.get(f"report_{domain}")
        if ingested is None:
            continue
        console.print(_counts_table(domain, ingested))
        console.print(f"  data version: {ingested['data_version']} ({ingested['version_source']})")
        if report is not None:
            docs = Path(report["_dir"]) / "data_docs" / "index.html"
            console.print(
                f"  validation: [green]passed[/] ({len(report['warnings'])} "
                f"warning(s)); Data Docs: {docs}"
            )


def _counts_table(domain: str, ingested: dict[str, Any]) -> Table:
    """The images of one domain by class and split, with the totals."""
    counts: dict[str, dict[str, int]] = ingested["counts"]
    table = Table(
        title=f"{domain}: {ingested['n_images']} images, {len(ingested['classes'])} classes",
        title_justify="left",
    )
    table.add_column("class")
    for split in SPLITS:
        table.add_column(split, justify="right")
    table.add_column("total", justify="right")
    for label, per_split in counts.items():
        values = [per_split[s] for s in SPLITS]
        table.add_row(label, *map(str, values), str(sum(values)))
    totals = [sum(counts[c][s] for c in counts) for s in SPLITS]
    table.add_row("all", *map(str, totals), str(sum(totals)), style="bold")
    return table


def summary_lines(outputs: Outputs, params: Params) -> list[str]:
    """The closing lines after the data tables: metrics, decision, version, how to look."""
    from tlops.tracking.runs import tracking_uri

    lines = [
        *_change_lines(outputs.get("change")),
        *_train_lines(outputs.get("model")),
        *_evaluation_lines(outputs.get("evaluation")),
    ]
    decision = outputs.get("decision")
    if decision is not None:
        uri = tracking_uri(params.tracking)
        lines.extend(_decision_lines(decision, params.tracking.experiment, uri))
        deployment = outputs.get("deployment")
        if deployment is not None:  # the deploy step's own line (what it did, or that it did not)
            lines.append(str(deployment["line"]).splitlines()[0])
        if _is_server(uri):  # a tracking server has its own UI; the embedded store needs one
            return lines
    lines.append("open the MLflow UI: make ui   (or: tlops ui)")
    return lines


def _is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _change_lines(change: dict[str, Any] | None) -> list[str]:
    """detect_change's decision and its reasons (retraining only)."""
    if change is None:
        return []
    action = change.get("action") or ("retrain" if change["retrain"] else "skip")
    words = {
        "retrain": "RETRAIN",
        "adapt": "ADAPT without labels, and ask for labels",
        "ask": "ASK for labels, no retrain",
        "skip": "no retrain",
    }
    return [
        f"detect_change: {words[action]}",
        *(f"  - {reason}" for reason in change["reasons"]),
    ]


def _train_lines(trained: dict[str, Any] | None) -> list[str]:
    """What was trained, from what, its best epoch and how long it took."""
    if trained is None:
        return []
    from tlops.tracking.report import best_epoch_text

    run = trained.get("_run", {})
    seconds = run.get("train_seconds")
    lines = [
        f"train: {trained['strategy']} from {trained['init']}, best epoch "
        f"{best_epoch_text(trained)}" + (f", {seconds:.0f} s" if seconds is not None else "")
    ]
    if trained.get("stop_reason"):
        lines.append(f"  {trained['stop_reason']}")
    if run.get("numerics_described"):
        lines.append(f"  {run['numerics_described']}")
    if trained.get("fallback"):
        lines.append(f"  trained in {trained['numerics']} after all: {trained['fallback']}")
    return lines


def _evaluation_lines(evaluation: dict[str, Any] | None) -> list[str]:
    """The test metrics, and the champion's on the same split when there is one."""
    if evaluation is None:
        return []
    m = evaluation["overall"]
    lines = [
        f"test accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f} ({m['n_test']} images)"
    ]
    champion = evaluation.get("champion")
    if champion is not None:
        c = champion["metrics"]
        lines.append(
            f"champion v{champion['version']} on the same test split: "
            f"accuracy {c['accuracy']:.4f}, macro F1 {c['macro_f1']:.4f}"
        )
    return lines


def _decision_lines(decision: dict[str, Any], experiment: str, uri: str) -> list[str]:
    """The gate's verdict and reasons, the registered version, the MLflow run and its page."""
    from tlops.evaluate.gate import verdict_of
    from tlops.tracking.report import run_url

    server = _is_server(uri)
    page = run_url(
        uri if server else "http://127.0.0.1:5000", decision["experiment_id"], decision["run_id"]
    )
    where = "" if server else " (after `make ui`)"
    return [
        f"gate: {verdict_of(decision['promote'], decision.get('released', True))}",
        *(f"  - {reason}" for reason in decision["reasons"]),
        f"registered: {decision['model_name']} version {decision['version']}, "
        f"aliases: {', '.join(decision['aliases']) or 'none'}",
        f"MLflow run {decision['run_id']} in experiment '{experiment}' ({uri})",
        f"the run in the MLflow UI{where}: {page}",
    ]
