"""``tlops submit``: compile the training pipeline and start a run on a Kubeflow endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tlops.cli.common import ParamOpt, ParamsOpt, console, guard, read_params


def submit(
    host: Annotated[str, typer.Option(help="KFP API endpoint, e.g. http://127.0.0.1:8888.")],
    params: ParamsOpt = Path("params.yaml"),
    set_: ParamOpt = None,
    run_name: Annotated[str, typer.Option(help="Name of the run.")] = "tlops-training",
    experiment: Annotated[str, typer.Option(help="KFP experiment.")] = "tlops",
    namespace: Annotated[str | None, typer.Option(help="Kubeflow namespace.")] = None,
) -> None:
    """Compile the pipeline (with the overrides) and start a run on a Kubeflow endpoint."""

    def body() -> None:
        from pipelines.cluster import submit as do_submit

        resolved = read_params(params, set_)
        run_id, versions = do_submit(resolved, host, run_name, experiment, namespace)
        console.print(f"submitted run {run_id} to {host}")
        if versions:
            pinned = ", ".join(
                f"{k.removeprefix('data_version_')} {v}" for k, v in versions.items()
            )
            console.print(f"data versions: {pinned} (the cache key of the data steps)")
        else:
            console.print(
                "data versions: unknown here (the data is not in this checkout), so the data "
                "steps run uncached"
            )

    guard(body)
