"""Reviewing runs from the terminal: the recent runs, and two runs side by side.

What ``tlops runs`` and ``tlops compare`` print; read from the MLflow store the runs were
logged to, nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tlops.config import TrackingConfig
from tlops.tracking.runs import client, metric_key, store_exists

SEARCHED = 1000  # runs looked through to resolve a short id


@dataclass(frozen=True)
class RunRow:
    """One run, as ``tlops runs`` lists it."""

    run_id: str
    name: str
    started: int  # ms since the epoch
    status: str
    strategy: str
    data_version: str
    metric: float | None
    decision: str


def experiment_id(cfg: TrackingConfig) -> str | None:
    """The experiment's id, or None (no store, or no such experiment yet)."""
    if not store_exists(cfg):
        return None
    experiment = client(cfg).get_experiment_by_name(cfg.experiment)
    return None if experiment is None else str(experiment.experiment_id)


def decision_of(tags: dict[str, str]) -> str:
    """A run's outcome in a few words: promoted, registered, skipped, failed."""
    if tags.get("failed_step") or tags.get("error"):
        return f"failed: {tags.get('error') or tags.get('failed_step')}"[:80]
    if tags.get("detect_change.retrain") == "false":
        return "skipped: " + tags.get("detect_change.reasons", "").split(" | ")[0]
    version = tags.get("registered.version")
    if version is None:
        return "not registered"
    verdict = "promoted" if tags.get("gate.promote") == "true" else "not promoted"
    model = tags.get("registered.model")
    return f"{model + ' ' if model else ''}v{version} {verdict}"


def recent_runs(cfg: TrackingConfig, limit: int, primary: str) -> list[RunRow]:
    """The newest ``limit`` runs of the experiment, newest first (none without a store)."""
    experiment = experiment_id(cfg)
    if experiment is None:
        return []
    found = client(cfg).search_runs(
        [experiment], order_by=["attributes.start_time DESC"], max_results=limit
    )
    key = metric_key(f"test_{primary}")
    return [
        RunRow(
            run_id=run.info.run_id,
            name=run.data.tags.get("mlflow.runName", run.info.run_name or ""),
            started=int(run.info.start_time or 0),
            status=run.info.status,
            strategy=run.data.tags.get("strategy", "-"),
            data_version=run.data.tags.get("data_version", "-"),
            metric=run.data.metrics.get(key),
            decision=decision_of(run.data.tags),
        )
        for run in found
    ]


def find_run(cfg: TrackingConfig, ref: str) -> Any:
    """The run a full id or a unique id prefix (as run names show it, ``#a81f03``) names.

    Raises:
        LookupError: No run, or more than one, matches.
    """
    import mlflow

    ref = ref.lstrip("#")
    if len(ref) == 32:
        try:
            return client(cfg).get_run(ref)
        except mlflow.exceptions.MlflowException as exc:
            raise LookupError(f"run {ref}: not in the store ({exc.__class__.__name__})") from None
    experiment = experiment_id(cfg)
    if experiment is None:
        raise LookupError(f"run {ref}: there is no experiment '{cfg.experiment}' in the store")
    runs = client(cfg).search_runs([experiment], max_results=SEARCHED)
    matches = [run for run in runs if run.info.run_id.startswith(ref)]
    if not matches:
        raise LookupError(
            f"run {ref}: no run of experiment '{cfg.experiment}' has an id starting with "
            f"{ref} (`tlops runs` lists the recent ones)"
        )
    if len(matches) > 1:
        raise LookupError(
            f"run {ref}: {len(matches)} runs of experiment '{cfg.experiment}' have ids starting "
            f"with {ref}: give more of the id"
        )
    return matches[0]


@dataclass(frozen=True)
class Comparison:
    """Two runs side by side: what differs in their params, their metrics, their outcome."""

    names: tuple[str, str]
    ids: tuple[str, str]
    params: list[tuple[str, str, str]]  # key, a, b (only those that differ)
    metrics: list[tuple[str, float | None, float | None]]  # key, a, b
    decisions: tuple[str, str]


def compare_runs(cfg: TrackingConfig, a: str, b: str) -> Comparison:
    """Compare two runs (ids or unique prefixes) of the experiment.

    Metrics: the test, champion and training summaries (not the numerics timings).
    """
    first, second = find_run(cfg, a), find_run(cfg, b)
    pa, pb = first.data.params, second.data.params
    params = [
        (key, pa.get(key, "-"), pb.get(key, "-"))
        for key in sorted(set(pa) | set(pb))
        if pa.get(key) != pb.get(key)
    ]
    ma, mb = first.data.metrics, second.data.metrics
    shown = [
        key
        for key in sorted(set(ma) | set(mb))
        if key.split("/")[0] in ("test", "test_champion", "test_source_only", "transfer")
        or key in ("train/best_epoch", "train/seconds")
    ]
    metrics = [(key, ma.get(key), mb.get(key)) for key in shown]
    return Comparison(
        names=(
            first.data.tags.get("mlflow.runName", first.info.run_id),
            second.data.tags.get("mlflow.runName", second.info.run_id),
        ),
        ids=(first.info.run_id, second.info.run_id),
        params=params,
        metrics=metrics,
        decisions=(decision_of(first.data.tags), decision_of(second.data.tags)),
    )
