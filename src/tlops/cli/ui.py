"""Looking at the tracked runs: ``tlops ui`` (the MLflow UI), ``tlops runs``, ``tlops compare``."""

from __future__ import annotations

import subprocess
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
        table.add_column("decision")
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
        a, b = found.names
        out = wide()
        table = Table(title="params that differ", title_justify="left")
        for column in ("param", a, b):
            table.add_column(column)
        for key, old, new in found.params:
            table.add_row(key, old, new)
        if not found.params:
            table.add_row("(none: same params)", "", "")
        out.print(table)
        table = Table(title="metrics", title_justify="left")
        for column in ("metric", a, b, "b - a"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for key, va, vb in found.metrics:
            delta = "-" if va is None or vb is None else f"{vb - va:+.4f}"
            shown = ["-" if v is None else f"{v:.4f}" for v in (va, vb)]
            table.add_row(key, *shown, delta)
        out.print(table)
        out.print(f"decision: {a}: {found.decisions[0]}; {b}: {found.decisions[1]}")

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
    raise typer.Exit(
        subprocess.call(
            [
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
            ]
        )
    )
