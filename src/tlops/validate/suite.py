"""The data validation suite: Great Expectations 1.x over the manifest and tables derived from it.

Rules that concern single images run on the manifest itself; rules about groups (images per
class, per class and split, content shared between splits, class balance) run on small tables
derived from it, so every rule is a plain built-in expectation and every failure lists the
offending rows. Each table has a ``path`` column naming what a failure is about: an image file,
a class folder, or the files that share a content hash.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tlops.config import SPLITS, UNLABELED_SPLIT, ValidateConfig
from tlops.data.images import DecodeStatus
from tlops.data.manifest import MANIFEST_COLUMNS

MAX_LISTED = 20  # offending items listed per rule in messages (all are in the JSON result)


@dataclass(frozen=True)
class Rule:
    """One expectation with the human name of the rule it enforces."""

    table: str
    name: str
    expectation: Any  # a great_expectations.expectations.Expectation
    critical: bool = True


@dataclass
class RuleOutcome:
    """The outcome of one rule, with the offending items (file or folder names)."""

    table: str
    rule: str
    expectation: str
    critical: bool
    success: bool
    offending: list[str] = field(default_factory=list)
    observed: Any = None


def _with_details(manifest: pd.DataFrame) -> pd.Series:
    """A readable 'why' per manifest row, used in failure messages."""
    status = manifest["decode_status"].fillna("")
    error = manifest["error"].fillna("")
    return status.where(error == "", status + ": " + error)


def derived_tables(
    manifest: pd.DataFrame, classes: Sequence[str], class_folders: Sequence[str], explicit: bool
) -> dict[str, pd.DataFrame]:
    """Build the tables the group rules run on.

    Args:
        manifest: The manifest (one row per image).
        classes: The expected class set.
        class_folders: Class folders found by ingestion, including empty ones.
        explicit: Whether the data has train/val/test folders (changes how folders are named).

    Returns:
        ``{"labels", "class_counts", "class_split_counts", "content", "balance"}`` tables, each
        with a ``path`` column. Images of the ``unlabeled`` split (``data.target_unlabeled``) are
        in no label rule; for leakage they count as training images, so one that is also a val
        or test image is caught.
    """
    labeled = manifest[manifest["split"] != UNLABELED_SPLIT]
    usable = labeled[labeled["decode_status"] == DecodeStatus.OK.value]
    per_class = usable.groupby("label").size()
    every_class = sorted(set(classes) | set(class_folders) | set(labeled["label"]))
    class_counts = pd.DataFrame(
        {
            "path": [
                f"{label}/" if label in class_folders else f"{label}/ (missing)"
                for label in every_class
            ],
            "label": every_class,
            "images": [int(per_class.get(label, 0)) for label in every_class],
        }
    )
    per_split = usable.groupby(["label", "split"]).size()
    rows = []
    for label in classes:
        for split in SPLITS:
            folder = f"{split}/{label}/" if explicit else f"{label}/ ({split} split)"
            rows.append(
                {
                    "path": folder,
                    "label": label,
                    "split": split,
                    "images": int(per_split.get((label, split), 0)),
                }
            )
    class_split_counts = pd.DataFrame(rows, columns=["path", "label", "split", "images"])

    hashed = manifest[manifest["sha256"].fillna("") != ""]
    hashed = hashed.assign(role=hashed["split"].replace({UNLABELED_SPLIT: "train"}))
    groups = hashed.groupby("sha256")
    content = pd.DataFrame(
        {
            "sha256": list(groups.groups),
            "n_files": groups.size().to_numpy(),
            "n_splits": groups["role"].nunique().to_numpy(),
            "path": groups["path"].agg(lambda p: " = ".join(sorted(p))).to_numpy(),
            "splits": groups["split"].agg(lambda s: ",".join(sorted(set(s)))).to_numpy(),
        }
    )
    content = content[content["n_files"] > 1].reset_index(drop=True)
    expected_counts = [int(per_class.get(label, 0)) for label in classes]
    smallest = min(expected_counts) if expected_counts else 0
    largest = max(expected_counts) if expected_counts else 0
    ratio = float("inf") if smallest == 0 and largest > 0 else largest / max(smallest, 1)
    balance = pd.DataFrame(
        {
            "path": [f"largest {largest} / smallest {smallest} images per class"],
            "imbalance_ratio": [ratio],
        }
    )
    return {
        "labels": labeled[["path", "label"]].reset_index(drop=True),
        "class_counts": class_counts,
        "class_split_counts": class_split_counts,
        "content": content,
        "balance": balance,
    }


def build_rules(cfg: ValidateConfig, classes: Sequence[str]) -> list[Rule]:
    """The expectations of the suite, each tagged with its table and rule name."""
    # the order is the report's: the manifest's shape and labels, each image, then the groups
    return [*_dataset_rules(classes), *_image_rules(cfg), *_group_rules(cfg)]


def _severity(critical: bool) -> Any:
    """GX's severity of a rule that may be demoted to a warning by params."""
    from great_expectations.expectations.metadata_types import FailureSeverity

    return FailureSeverity.CRITICAL if critical else FailureSeverity.WARNING


def _dataset_rules(classes: Sequence[str]) -> list[Rule]:
    """The manifest's columns, that it has rows, and the labels' class set."""
    import great_expectations.expectations as gxe

    return [
        Rule(
            "manifest",
            "manifest has the expected columns",
            gxe.ExpectTableColumnsToMatchSet(column_set=list(MANIFEST_COLUMNS), exact_match=True),
        ),
        Rule(
            "manifest",
            "the data directory holds images",
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
        ),
        Rule(
            "labels",
            "labels are in the expected class set",
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(classes)),
        ),
    ]


def _image_rules(cfg: ValidateConfig) -> list[Rule]:
    """Rules on each image (a manifest row): decoding, size, mode, frames, split, duplicates."""
    import great_expectations.expectations as gxe

    multi_frame_critical = cfg.multi_frame == "fail"
    return [
        Rule(
            "manifest",
            "every file decodes",
            gxe.ExpectColumnValuesToBeInSet(
                column="decode_status", value_set=[DecodeStatus.OK.value]
            ),
        ),
        Rule(
            "manifest",
            f"width within {cfg.min_width}..{cfg.max_width}",
            gxe.ExpectColumnValuesToBeBetween(
                column="width", min_value=cfg.min_width, max_value=cfg.max_width
            ),
        ),
        Rule(
            "manifest",
            f"height within {cfg.min_height}..{cfg.max_height}",
            gxe.ExpectColumnValuesToBeBetween(
                column="height", min_value=cfg.min_height, max_value=cfg.max_height
            ),
        ),
        Rule(
            "manifest",
            f"image mode in {list(cfg.modes)}",
            gxe.ExpectColumnValuesToBeInSet(column="mode", value_set=list(cfg.modes)),
        ),
        Rule(
            "manifest",
            "single-frame images (of a multi-frame file only the first frame is used)",
            gxe.ExpectColumnValuesToBeBetween(
                column="frames", max_value=1, severity=_severity(multi_frame_critical)
            ),
            critical=multi_frame_critical,
        ),
        Rule(
            "manifest",
            "split is train, val, test or unlabeled",
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=[*SPLITS, UNLABELED_SPLIT]),
        ),
        Rule(
            "manifest",
            "no duplicate files",
            gxe.ExpectColumnValuesToBeUnique(
                column="sha256", severity=_severity(cfg.fail_on_duplicates)
            ),
            critical=cfg.fail_on_duplicates,
        ),
    ]


def _group_rules(cfg: ValidateConfig) -> list[Rule]:
    """Rules on the derived tables: images per class (and split), leakage, class balance."""
    import great_expectations.expectations as gxe

    return [
        Rule(
            "class_counts",
            f"at least {cfg.min_images_per_class} images per class",
            gxe.ExpectColumnValuesToBeBetween(column="images", min_value=cfg.min_images_per_class),
        ),
        Rule(
            "class_split_counts",
            f"at least {cfg.min_images_per_split_class} images per class in each split",
            gxe.ExpectColumnValuesToBeBetween(
                column="images", min_value=cfg.min_images_per_split_class
            ),
        ),
        Rule(
            "content",
            "no image shared between splits (leakage)",
            gxe.ExpectColumnValuesToBeBetween(column="n_splits", max_value=1),
        ),
        Rule(
            "balance",
            f"class imbalance ratio at most {cfg.max_imbalance_ratio:g}",
            gxe.ExpectColumnValuesToBeBetween(
                column="imbalance_ratio", max_value=cfg.max_imbalance_ratio
            ),
        ),
    ]


@dataclass
class SuiteRun:
    """Outcomes of every rule, the raw GX results and where Data Docs were written."""

    outcomes: list[RuleOutcome]
    gx_results: list[dict[str, Any]]
    docs_index: Path | None

    @property
    def passed(self) -> bool:
        """True when no critical rule failed."""
        return all(o.success or not o.critical for o in self.outcomes)


def _context(docs_dir: Path) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # Analytics off: this machine may have no network, and a run must not try to reach one.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            "tlops": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def run_suite(
    tables: dict[str, pd.DataFrame], rules: list[Rule], docs_dir: Path, suite_prefix: str
) -> SuiteRun:
    """Run the rules over the tables with Great Expectations and build Data Docs.

    Args:
        tables: Table name -> dataframe (each with a ``path`` column).
        rules: Expectations tagged with the table they run on.
        docs_dir: Where the Data Docs site is written.
        suite_prefix: Prefix of the suite names shown in Data Docs (e.g. the dataset name).

    Returns:
        The outcome of every rule.
    """
    import great_expectations as gx

    context = _context(docs_dir)
    source = context.data_sources.add_pandas("tlops")
    outcomes: list[RuleOutcome] = []
    gx_results: list[dict[str, Any]] = []
    for table_name, frame in tables.items():
        table_rules = [rule for rule in rules if rule.table == table_name]
        if not table_rules:
            continue
        asset = source.add_dataframe_asset(table_name)
        batch = asset.add_batch_definition_whole_dataframe(f"{table_name}_all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{suite_prefix}.{table_name}"))
        for rule in table_rules:
            rule.expectation.meta = {"rule": rule.name}
            suite.add_expectation(rule.expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite_prefix}.{table_name}", data=batch, suite=suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": frame},
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": ["path"],
                "return_unexpected_index_query": False,
            },
        )
        payload = result.to_json_dict()
        gx_results.append(payload)
        # GX does not keep the suite's order in its results: match them by the rule's name
        by_rule = {item["expectation_config"]["meta"]["rule"]: item for item in payload["results"]}
        for rule in table_rules:
            outcomes.append(_outcome(rule, by_rule[rule.name]))
    context.build_data_docs()
    index = docs_dir / "index.html"
    return SuiteRun(outcomes, gx_results, index if index.is_file() else None)


def _outcome(rule: Rule, item: dict[str, Any]) -> RuleOutcome:
    result = item.get("result") or {}
    offending: list[str] = []
    for entry in result.get("unexpected_index_list") or []:
        if isinstance(entry, dict) and "path" in entry:
            offending.append(str(entry["path"]))
    observed = result.get("observed_value")
    if not offending and not item["success"] and isinstance(result.get("details"), dict):
        mismatched = result["details"].get("mismatched")
        if mismatched:
            offending.append(f"columns: {mismatched}")
    return RuleOutcome(
        table=rule.table,
        rule=rule.name,
        expectation=str(item["expectation_config"]["type"]),
        critical=rule.critical,
        success=bool(item["success"]),
        offending=offending,
        observed=observed,
    )
