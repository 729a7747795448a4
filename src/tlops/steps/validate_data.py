"""Step ``validate_data``: the Great Expectations suite over an ``ingest_data`` output.

Outputs (in ``out_dir``, written all at once):

* ``gx_results.json`` - the Great Expectations validation results, one per table;
* ``data_docs/index.html`` - the Great Expectations Data Docs site;
* ``validation.json`` - pass/fail, every rule with its offending files, the data version;
* ``summary.md`` - a short human summary.

On failure the report is still written (it is complete: it is the evidence of the failure) and
:class:`DataValidationError` is raised with every broken rule and its offending files, so runners
exit non-zero and nothing downstream runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tlops.config import SPLITS, Params
from tlops.io import atomic_dir, read_json, write_json
from tlops.steps.ingest_data import INGEST_FILE, MANIFEST_FILE
from tlops.validate.suite import (
    MAX_LISTED,
    RuleOutcome,
    SuiteRun,
    build_rules,
    derived_tables,
    run_suite,
)

RESULTS_FILE = "gx_results.json"
VALIDATION_FILE = "validation.json"
SUMMARY_FILE = "summary.md"
DOCS_DIR = "data_docs"
MESSAGE_FILE = "message.txt"


class DataValidationError(RuntimeError):
    """The data broke at least one critical rule; the message lists each with its files."""

    def __init__(self, message: str, report_dir: Path) -> None:
        super().__init__(message)
        self.report_dir = report_dir


@dataclass(frozen=True)
class ValidationResult:
    """What ``validate_data`` returns to its runner."""

    passed: bool
    data_version: str
    classes: list[str]
    failures: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    out_dir: Path


def load_manifest(ingest_dir: Path) -> pd.DataFrame:
    """Read ``manifest.csv`` of an ingest output with stable dtypes (labels stay strings)."""
    path = ingest_dir / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found; run ingest_data first")
    return pd.read_csv(
        path,
        dtype={
            "path": str,
            "label": str,
            "split": str,
            "sha256": str,
            "mode": str,
            "decode_status": str,
            "error": str,
        },
        keep_default_na=False,
        na_values={"width": [""], "height": [""]},
        encoding="utf-8",
    ).replace({"mode": {"": None}})


def read_reference_classes(path: Path) -> list[str]:
    """Read a class list: a JSON list, or an object with ``classes`` (a champion's class map).

    Raises:
        ValueError: The file holds neither.
    """
    payload = read_json(path)
    if isinstance(payload, dict):
        payload = payload.get("classes")
    if not isinstance(payload, list) or not all(isinstance(c, str) for c in payload):
        raise ValueError(f"{path}: expected a JSON list of class names or {{'classes': [...]}}")
    return list(payload)


def _describe(outcome: RuleOutcome, data_dir: str, details: dict[str, str]) -> list[str]:
    mark = "FAILED" if outcome.critical else "WARNING"
    lines = [f"  {mark}: {outcome.rule}  [{outcome.table}: {outcome.expectation}]"]
    for item in outcome.offending[:MAX_LISTED]:
        why = details.get(item)
        name = " = ".join(f"{data_dir}/{part}" for part in item.split(" = "))
        lines.append(f"      {name}" + (f"  ({why})" if why else ""))
    if len(outcome.offending) > MAX_LISTED:
        lines.append(
            f"      ... and {len(outcome.offending) - MAX_LISTED} more (see {VALIDATION_FILE})"
        )
    if not outcome.offending and outcome.observed is not None:
        lines.append(f"      observed: {outcome.observed}")
    return lines


def _row_details(manifest: pd.DataFrame) -> dict[str, str]:
    details: dict[str, str] = {}
    for row in manifest.itertuples(index=False):
        if row.decode_status != "ok":
            details[row.path] = (
                f"{row.decode_status}: {row.error}" if row.error else row.decode_status
            )
        else:
            details[row.path] = f"{int(row.width)}x{int(row.height)} {row.mode}"
    return details


def run(
    params: Params,
    ingest_dir: Path,
    out_dir: Path,
    reference_classes: Path | None = None,
) -> ValidationResult:
    """Validate an ingested dataset.

    Args:
        params: Resolved parameters (reads ``validate_data``).
        ingest_dir: Output directory of ``ingest_data``.
        out_dir: Where the report goes (replaced).
        reference_classes: A class list that replaces ``validate_data.classes`` (the champion's
            class map once a champion exists).

    Returns:
        The validation result (only when it passed).

    Raises:
        DataValidationError: A critical rule failed; the report is written first.
        FileNotFoundError: ``ingest_dir`` is not an ingest output.
    """
    cfg = params.validate_data
    ingest: dict[str, Any] = read_json(ingest_dir / INGEST_FILE)
    manifest = load_manifest(ingest_dir)
    if reference_classes is not None:
        classes = read_reference_classes(reference_classes)
        class_source = str(reference_classes)
    elif cfg.classes is not None:
        classes = list(cfg.classes)
        class_source = "params.yaml validate_data.classes"
    else:
        classes = list(ingest["classes"])
        class_source = "the class folders found (validate_data.classes is not set)"
    tables = {
        "manifest": manifest,
        **derived_tables(manifest, classes, ingest["classes"], bool(ingest["explicit_splits"])),
    }
    rules = build_rules(cfg, classes)
    data_dir = str(ingest["data_dir"])
    with atomic_dir(out_dir) as staging:
        suite: SuiteRun = run_suite(tables, rules, staging / DOCS_DIR, Path(data_dir).name)
        details = _row_details(manifest)
        failures = [o for o in suite.outcomes if not o.success and o.critical]
        warnings = [o for o in suite.outcomes if not o.success and not o.critical]
        report = {
            "passed": suite.passed,
            "data_dir": data_dir,
            "data_version": ingest["data_version"],
            "classes": classes,
            "class_source": class_source,
            "n_images": len(manifest),
            "rules": [asdict(o) for o in suite.outcomes],
            "failures": [asdict(o) for o in failures],
            "warnings": [asdict(o) for o in warnings],
            "skipped_files": ingest.get("skipped", []),
        }
        write_json(staging / RESULTS_FILE, suite.gx_results)
        write_json(staging / VALIDATION_FILE, report)
        message = _message(data_dir, ingest, failures, warnings, details, out_dir)
        (staging / SUMMARY_FILE).write_text(_summary_md(ingest, report, message), encoding="utf-8")
        (staging / MESSAGE_FILE).write_text(message + "\n", encoding="utf-8")
    if failures:
        raise DataValidationError(message, out_dir)
    return ValidationResult(
        passed=True,
        data_version=str(ingest["data_version"]),
        classes=classes,
        failures=[],
        warnings=report["warnings"],
        out_dir=out_dir,
    )


def _message(
    data_dir: str,
    ingest: dict[str, Any],
    failures: list[RuleOutcome],
    warnings: list[RuleOutcome],
    details: dict[str, str],
    out_dir: Path,
) -> str:
    head = f"validate_data: {data_dir} (data version {ingest['data_version']}) " + (
        f"FAILED {len(failures)} rule(s)" if failures else "passed"
    )
    lines = [head]
    for outcome in [*failures, *warnings]:
        lines.extend(_describe(outcome, data_dir, details))
    for skipped in ingest.get("skipped", [])[:MAX_LISTED]:
        lines.append(f"  note: skipped {data_dir}/{skipped['path']}: {skipped['reason']}")
    lines.append(
        f"  report: {out_dir / SUMMARY_FILE}; Data Docs: {out_dir / DOCS_DIR / 'index.html'}"
    )
    return "\n".join(lines)


def _summary_md(ingest: dict[str, Any], report: dict[str, Any], message: str) -> str:
    counts: dict[str, dict[str, int]] = ingest["counts"]
    lines = [
        f"# Data validation: {report['data_dir']}",
        "",
        f"- result: **{'passed' if report['passed'] else 'FAILED'}**",
        f"- data version: `{report['data_version']}` ({ingest['version_source']})",
        f"- images: {report['n_images']}, classes: {len(report['classes'])} "
        f"(from {report['class_source']})",
        "",
        "| class | " + " | ".join(SPLITS) + " | total |",
        "|---|" + "---|" * (len(SPLITS) + 1),
    ]
    for label, per_split in counts.items():
        values = [per_split.get(split, 0) for split in SPLITS]
        lines.append(f"| {label} | " + " | ".join(map(str, values)) + f" | {sum(values)} |")
    lines += ["", "```", message, "```", ""]
    return "\n".join(lines)
