"""``tlops schedule``: a pipeline as a recurring run on a Kubeflow endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tlops.cli.common import ParamOpt, ParamsOpt, PipelineOpt, console, guard, read_params


def schedule(
    host: Annotated[str, typer.Option(help="KFP API endpoint.")],
    cron: Annotated[str, typer.Option(help='Cron, e.g. "0 3 * * 1" (Mondays 03:00).')],
    params: ParamsOpt = Path("params.yaml"),
    set_: ParamOpt = None,
    name: Annotated[str, typer.Option(help="Name of the recurring run.")] = "tlops-retrain",
    experiment: Annotated[str, typer.Option(help="KFP experiment.")] = "tlops",
    namespace: Annotated[str | None, typer.Option(help="Kubeflow namespace.")] = None,
    pipeline: PipelineOpt = "training",
) -> None:
    """Schedule a pipeline as a recurring run (one at a time, no catch-up).

    With --pipeline retraining, each run first checks for new data and drift and retrains
    only when the policy (params detect_change) says so.
    """

    def body() -> None:
        from pipelines.cluster import schedule as do_schedule

        resolved = read_params(params, set_)
        job = do_schedule(resolved, host, cron, name, experiment, namespace, pipeline)
        console.print(f"scheduled recurring run {job} ({pipeline}, {cron}) on {host}")

    guard(body)
