"""Looking at the tracked runs: ``tlops ui`` (the MLflow UI), ``tlops runs``, ``tlops compare``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tlops.cli.common import ParamsOpt, console, guard, read_params, wide


def runs_(
    params: ParamsOpt = Path("params.yaml"),
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs.", min=1)] = 10,
) -> None:
    """The recent runs of the experiment: strategy, data version, test metric, decision."""

    def body() -> None:
        from datetime import datetime

        from tlops.tracking.review import recent_runs

        resolved = read_params(params)
        primary = resolved.register_model.gate.primary_metric
        rows = recent_runs(resolved.tracking, limit, primary)
        if not rows:
            console.print(f"no runs yet in experiment '{resolved.tracking.experiment}'")
            return
        table = Table(title=f"experiment '{resolved.tracking.experiment}'", title_justify="left")
        for column in ("run", "started", "status", "strategy", "data", f"test {primary}"):
            table.add_column(column, no_wrap=column == "run")
        table.add_column("registered (release or experiment model)")
        for row in rows:
            when = datetime.fromtimestamp(row.started / 1000).strftime("%Y-%m-%d %H:%M")
            table.add_row(
                row.name,
                when,
                row.status,
                row.strategy,
                row.data_version[:12],
                "-" if row.metric is None else f"{row.metric:.4f}",
                row.decision,
            )
        wide().print(table)

    guard(body)


# metrics that count something: shown as whole numbers
COUNTS = ("n_test", "best_epoch", "_params")


def compare(
    run_a: Annotated[str, typer.Argument(help="A run id or its first characters (#a81f03).")],
    run_b: Annotated[str, typer.Argument(help="Another run.")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Two runs side by side: the params that differ, their metrics, their decisions."""

    def body() -> None:
        from tlops.tracking.review import compare_runs

        resolved = read_params(params)
        found = compare_runs(resolved.tracking, run_a, run_b)
        # short column headers: the run names (60 characters) are the legend above the tables
        a, b = (f"#{run_id[:6]}" for run_id in found.ids)
        out = wide()
        for label, name, decision in zip((a, b), found.names, found.decisions, strict=True):
            out.print(f"{label}: {name} ({decision})", highlight=False)
        table = Table(title="params that differ", title_justify="left")
        for column in ("param", a, b):
            table.add_column(column)
        for key, old, new in found.params:
            table.add_row(key, old, new)
        if not found.params:
            table.add_row("(none: same params)", "", "")
        out.print(table)
        table = Table(title="metrics", title_justify="left")
        for column in ("metric", a, f"{b}", f"{b} - {a}"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for key, va, vb in found.metrics:
            count = key.endswith(COUNTS)
            shown = ["-" if v is None else f"{v:.0f}" if count else f"{v:.4f}" for v in (va, vb)]
            delta = (
                "-"
                if va is None or vb is None
                else f"{vb - va:+.0f}"
                if count
                else (f"{vb - va:+.4f}")
            )
            table.add_row(key, *shown, delta)
        out.print(table)

    guard(body)


def ui(
    params: ParamsOpt = Path("params.yaml"),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open the MLflow UI on the embedded store (http://127.0.0.1:PORT)."""
    from tlops.tracking.report import experiment_url
    from tlops.tracking.review import experiment_id
    from tlops.tracking.runs import tracking_uri

    resolved = read_params(params)
    uri = tracking_uri(resolved.tracking)
    base = f"http://127.0.0.1:{port}"
    found = experiment_id(resolved.tracking)
    where = experiment_url(base, found) if found is not None else base
    console.print(
        f"MLflow UI on {base} (store {uri}); Ctrl-C stops it\n"
        f"  the runs of experiment '{resolved.tracking.experiment}': {where}",
        highlight=False,
        soft_wrap=True,
    )
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        resolved.tracking.artifact_location.resolve().as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # MLflow's app, with the training view as a fresh browser's default view
        "--app-name",
        "tlops",
        # one reviewer on loopback: one worker is enough, and fewer processes start and stop
        "--workers",
        "1",
    ]
    env = {
        **os.environ,
        # MLflow's background job runner (GenAI evaluation jobs) has nothing to do here
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # upstream's (mlflow/mlflow#24074: MLflow imports starlette.middleware.wsgi), printed
        # once per worker; only that one message is filtered
        "PYTHONWARNINGS": "ignore:starlette.middleware.wsgi is deprecated",
    }
    sys.stdout.flush()
    # the server takes this process's place: Ctrl-C and SIGTERM reach it, nothing is orphaned
    os.execve(sys.executable, command, env)
