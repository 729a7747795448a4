"""``tlops rollback``: the champion alias back to the previous champion."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tlops.cli.common import ParamsOpt, console, guard, read_params


def rollback(
    reason: Annotated[
        str, typer.Option(help="Why (recorded on both model versions and in an MLflow run).")
    ],
    params: ParamsOpt = Path("params.yaml"),
    model_name: Annotated[
        str | None, typer.Option(help="Registered model (default: register_model.model_name).")
    ] = None,
) -> None:
    """Move the champion alias back to the previous champion, recording why."""

    def body() -> None:
        from tlops.tracking.promotion import rollback_guarded

        resolved = read_params(params)
        name = model_name or resolved.register_model.model_name
        cfg = resolved.register_model
        demoted, restored, run_id = rollback_guarded(
            resolved.tracking, name, reason, cfg.lock_timeout_s, cfg.lock_lease_s
        )
        console.print(
            f"{name}: champion is version {restored} again (version {demoted} demoted); "
            f"recorded in MLflow run {run_id}"
        )

    guard(body)
