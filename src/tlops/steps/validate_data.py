"""Step ``validate_data``: the Great Expectations suite over an ``ingest_data`` output.

Outputs (in the ``report`` directory, written all at once):

* ``gx_results.json`` - the Great Expectations validation results, one per table;
* ``data_docs/index.html`` - the Great Expectations Data Docs site, made to render offline;
* ``report.html`` - the whole validation on one self-contained page (KFP's HTML view);
* ``validation.json`` - pass/fail, every rule with its offending files, the data version;
* ``summary.md`` - a short human summary.

On failure the report is still written (it is complete: it is the evidence of the failure) and
:class:`DataValidationError` is raised with every broken rule and its offending files, so runners
exit non-zero and nothing downstream runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.config import SPLITS, Params
from tlops.data.dataset import load_manifest
from tlops.io import atomic_dir, read_json, write_json
from tlops.layout import (
    DOCS_DIR,
    INGEST_FILE,
    MESSAGE_FILE,
    SUMMARY_FILE,
    UNLABELED_DIR,
    VALIDATION_FILE,
)
from tlops.runner.spec import Port, StepFailure, StepIO, StepResult, StepSpec, Tracking
from tlops.steps.ingest_data import dataset_input
from tlops.tracking.registry import champion_classes
from tlops.validate.offline import REPORT_FILE, make_offline, write_report

if TYPE_CHECKING:
    import pandas as pd

    from tlops.validate.suite import (
        RuleOutcome,
        SuiteRun,
    )

RESULTS_FILE = "gx_results.json"


class DataValidationError(StepFailure):
    """The data broke at least one critical rule; the message lists each with its files."""


def _where(path: str, data_dir: str, ingest: dict[str, Any]) -> str:
    """The file a manifest path stands for: under the data directory, or the unlabeled one."""
    unlabeled = ingest.get("unlabeled")
    head, _, rest = path.partition("/")
    if unlabeled and head == UNLABELED_DIR and rest:
        return f"{unlabeled['data_dir']}/{rest}"
    return f"{data_dir}/{path}"


def _describe(
    outcome: RuleOutcome, data_dir: str, ingest: dict[str, Any], details: dict[str, str]
) -> list[str]:
    from tlops.validate.suite import MAX_LISTED

    mark = "FAILED" if outcome.critical else "WARNING"
    lines = [f"  {mark}: {outcome.rule}  [{outcome.table}: {outcome.expectation}]"]
    for item in outcome.offending[:MAX_LISTED]:
        why = details.get(item)
        name = " = ".join(_where(part, data_dir, ingest) for part in item.split(" = "))
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


def _listed(classes: list[str]) -> str:
    return "[" + ", ".join(classes) + "]"


@dataclass(frozen=True)
class ExpectedClasses:
    """The class set the data must have, where it comes from, and what it overrides."""

    classes: list[str]
    source: str
    found: list[str]  # the data's class folders (ingest_data), empty ones included
    champion: str | None = None  # "<model> v<version>" when the champion's class map is imposed
    overridden: list[str] | None = None  # validate_data.classes, when that map replaced it

    @property
    def conflict(self) -> str | None:
        """One line when the data's classes differ from the champion's class map, else None.

        A changed class set fails several rules at once (labels, images per class...); this
        line says why before them: the champion's map is imposed, and how to let it change.
        """
        if self.champion is None:
            return None
        missing = [c for c in self.classes if c not in self.found]
        extra = [c for c in self.found if c not in self.classes]
        if not missing and not extra:
            return None
        differs = [
            *([f"missing from the data: {', '.join(missing)}"] if missing else []),
            *([f"extra in the data: {', '.join(extra)}"] if extra else []),
        ]
        overrides = (
            f"; it overrides validate_data.classes {_listed(self.overridden)}"
            if self.overridden is not None
            else ""
        )
        return (
            f"validate_data: the data's classes differ from champion {self.champion}'s class "
            f"map: champion {_listed(self.classes)}, data {_listed(self.found)} "
            f"({'; '.join(differs)}){overrides}; to retrain with another class set (a new "
            f"head), set validate_data.allow_class_change: true"
        )

    @property
    def note(self) -> str | None:
        """A note when the champion's class map replaced an explicit ``validate_data.classes``."""
        if self.overridden is None:
            return None
        return (
            f"validate_data.classes {_listed(self.overridden)} is overridden by champion "
            f"{self.champion}'s class map {_listed(self.classes)} "
            f"(validate_data.allow_class_change: true validates against it instead)"
        )


def expected_classes(params: Params, ingest: dict[str, Any]) -> ExpectedClasses:
    """The class set the data must have, and where it comes from.

    The champion's class map once a champion is registered (a model is only ever compared with,
    and warm-started from, a champion of the same classes), else ``validate_data.classes``, else
    the class folders found. With ``validate_data.allow_class_change`` the champion's map is not
    imposed (a retrain may then add or drop classes, with a new head).
    """
    name = params.register_model.model_name
    given = params.validate_data.classes
    found = list(ingest["classes"])
    champion = None
    if not params.validate_data.allow_class_change:
        champion = champion_classes(params.tracking, name)
    if champion is not None:
        classes, version = champion
        return ExpectedClasses(
            classes,
            f"the class map of champion {name} v{version} (MLflow registry)",
            found,
            champion=f"{name} v{version}",
            # the order counts too: it is the order of the head's outputs
            overridden=list(given) if given is not None and list(given) != classes else None,
        )
    if given is not None:
        return ExpectedClasses(list(given), "params.yaml validate_data.classes", found)
    return ExpectedClasses(
        found, "the class folders found (validate_data.classes is not set)", found
    )


def run(params: Params, io: StepIO) -> StepResult:
    """Validate an ingested dataset.

    Args:
        params: Resolved parameters (reads ``validate_data``, the registry for the champion).
        io: Input ``dataset`` (an ingest_data output); output ``report`` (replaced).

    Returns:
        The validation result (only when it passed): the console line, the ``report``
        metadata and the summary and Data Docs views.

    Raises:
        DataValidationError: A critical rule failed; the report is written first.
        FileNotFoundError: ``dataset`` is not an ingest output.
    """
    from tlops.validate.suite import MAX_LISTED, build_rules, derived_tables, run_suite

    ingest_dir, out_dir = io.inputs["dataset"], io.outputs["report"]
    cfg = params.validate_data
    ingest: dict[str, Any] = read_json(ingest_dir / INGEST_FILE)
    manifest = load_manifest(ingest_dir)
    expected = expected_classes(params, ingest)
    classes = expected.classes
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
        report = _report(ingest, len(manifest), expected, suite, (failures, warnings))
        write_json(staging / RESULTS_FILE, suite.gx_results)
        write_json(staging / VALIDATION_FILE, report)
        make_offline(staging / DOCS_DIR)  # no CDN: the pages render on a machine offline
        write_report(staging, report, staging / DOCS_DIR, MAX_LISTED)
        message = _message(data_dir, ingest, failures, warnings, details, out_dir, expected)
        (staging / SUMMARY_FILE).write_text(_summary_md(ingest, report, message), encoding="utf-8")
        (staging / MESSAGE_FILE).write_text(message + "\n", encoding="utf-8")
    if failures:
        raise DataValidationError(message, out_dir)
    data_version = str(ingest["data_version"])
    return StepResult(
        f"validate_data: {data_dir} passed, {len(warnings)} warning(s), data version "
        f"{data_version} -> {out_dir}" + (f"; note: {expected.note}" if expected.note else ""),
        metadata={
            "report": {
                "passed": True,
                "data_version": data_version,
                "domain": ingest.get("domain", ""),
                "warnings": len(warnings),
            }
        },
        # the whole report, every table (KFP's HTML view of the step)
        views={"summary": out_dir / SUMMARY_FILE, "data_docs": out_dir / REPORT_FILE},
    )


def _report(
    ingest: dict[str, Any],
    n_images: int,
    expected: ExpectedClasses,
    suite: SuiteRun,
    broken: tuple[list[RuleOutcome], list[RuleOutcome]],
) -> dict[str, Any]:
    """validation.json's content; ``broken``: the failed critical rules, then the warnings."""
    failures, warnings = broken
    return {
        "passed": suite.passed,
        "data_dir": str(ingest["data_dir"]),
        "domain": ingest.get("domain", ""),
        "data_version": ingest["data_version"],
        "unlabeled_data_version": (ingest.get("unlabeled") or {}).get("data_version"),
        "classes": expected.classes,
        "class_source": expected.source,
        # the champion's map replaced an explicit validate_data.classes: said, not silent
        "overridden_classes": expected.overridden,
        "class_conflict": expected.conflict,
        "n_images": n_images,
        "rules": [asdict(o) for o in suite.outcomes],
        "failures": [asdict(o) for o in failures],
        "warnings": [asdict(o) for o in warnings],
        "skipped_files": ingest.get("skipped", []),
    }


def _message(
    data_dir: str,
    ingest: dict[str, Any],
    failures: list[RuleOutcome],
    warnings: list[RuleOutcome],
    details: dict[str, str],
    out_dir: Path,
    expected: ExpectedClasses,
) -> str:
    from tlops.validate.suite import MAX_LISTED

    head = f"validate_data: {data_dir} (data version {ingest['data_version']}) " + (
        f"FAILED {len(failures)} rule(s)" if failures else "passed"
    )
    # a changed class set is the cause of the rules it fails: it is said first, in one line
    lines = [expected.conflict, head] if expected.conflict else [head]
    if expected.note and not expected.conflict:  # the conflict line names what it overrides
        lines.append(f"  note: {expected.note}")
    for outcome in [*failures, *warnings]:
        lines.extend(_describe(outcome, data_dir, ingest, details))
    for skipped in ingest.get("skipped", [])[:MAX_LISTED]:
        where = _where(skipped["path"], data_dir, ingest)
        lines.append(f"  note: skipped {where}: {skipped['reason']}")
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
        *(
            [f"- validate_data.classes `{_listed(given)}`: overridden by {report['class_source']}"]
            if (given := report.get("overridden_classes"))
            else []
        ),
        *(
            [
                f"- unlabeled images: {unlabeled['n_images']} from {unlabeled['data_dir']} "
                f"(data version `{unlabeled['data_version']}`)"
            ]
            if (unlabeled := ingest.get("unlabeled"))
            else []
        ),
        "",
        "| class | " + " | ".join(SPLITS) + " | total |",
        "|---|" + "---|" * (len(SPLITS) + 1),
    ]
    for label, per_split in counts.items():
        values = [per_split.get(split, 0) for split in SPLITS]
        lines.append(f"| {label} | " + " | ".join(map(str, values)) + f" | {sum(values)} |")
    lines += ["", "```", message, "```", ""]
    return "\n".join(lines)


# The step's declaration: what every runner (tlops step, dvc.yaml, KFP) is derived from.
STEP = StepSpec(
    name="validate_data",
    run=run,
    help="Validate an ingested dataset with Great Expectations (against the champion's "
    "classes once there is one); fails listing every broken rule.",
    params=("validate_data", "register_model.model_name", "tracking"),
    inputs=(dataset_input(domain=None),),
    outputs=(
        Port("report", "Artifact", "GX results, Data Docs, validation.json, summary.md"),
        Port("data_docs", "HTML", "The Data Docs page of this validation.", view=True),
        Port("summary", "Markdown", "The validation summary.", view=True),
    ),
    code=("tlops.validate.suite", "tlops.tracking.registry"),
    # not cached: the champion's class map it checks against lives in the registry
    tracking=Tracking.FAILURE,
    per_domain=True,
)


def report_input(
    name: str = "report",
    help: str = "Output of validate_data (it must have passed).",
    domain: str = "target",
    optional: bool = False,
) -> Port:
    """An input of another step that reads this step's ``report`` (the data must have passed).

    Args:
        name: The input's name in the reading step.
        help: One line on what the reader takes from it.
        domain: Which domain's validation.
        optional: The reader can do without it.
    """
    return Port(name, "Artifact", help, ("validate_data", "report"), domain, optional)
