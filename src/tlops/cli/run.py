"""``tlops run``: the training pipeline, locally; and the local run that ``retrain`` shares."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from tlops.cli.common import ParamsOpt, SetOpt, console, guard, read_params
from tlops.cli.summary import print_data, read_outputs, summary_lines


@dataclass(frozen=True)
class LocalPipeline:
    """How a command runs a pipeline with KFP's local runner, and what it prints after.

    Attributes:
        command: The ``tlops`` command, named in the first line (``tlops run``).
        pipeline: ``training`` or ``retraining``.
        run_dir: The default run directory's name under ``runs/``, a ``time.strftime`` format.
        data_tables: Print the ingested data's tables before the closing lines.
    """

    command: str
    pipeline: str
    run_dir: str
    data_tables: bool


TRAINING = LocalPipeline("run", "training", "%Y%m%d-%H%M%S", data_tables=True)
RunnerOpt = Annotated[
    str,
    typer.Option(
        help="How KFP's local tasks run: warm (each forked from a process that imported "
        "kfp, torch and mlflow once), subprocess (KFP's stock runner: a fresh interpreter "
        "per task) or docker (KFP's DockerRunner: each task in kfp.base_image as "
        "kfp.task_uid, through the Docker API at DOCKER_HOST; needs an MLflow server).",
    ),
]
ParallelOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="With the warm runner: at most this many independent tasks at once (default: "
        "this machine's cores; 1: one at a time).",
    ),
]


def run(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default: runs/<timestamp>).")
    ] = None,
    runner: RunnerOpt = "warm",
    parallel: ParallelOpt = None,
) -> None:
    """Run the training pipeline on the configured data (the embedded demo by default).

    The Kubeflow pipeline that `tlops compile` produces, run by KFP's local runner: each step
    a subprocess with typed artifacts. ingest_data and validate_data on the target domain (and
    the source domain when the strategy uses it), extract_features when the strategy trains on
    features, then train, evaluate and register_model, logged into one MLflow run.
    """
    run_pipeline(TRAINING, params, set_, out, runner, parallel)


def run_pipeline(
    how: LocalPipeline,
    params: Path,
    overrides: list[str] | None,
    out: Path | None,
    runner: str = "warm",
    parallel: int | None = None,
) -> None:
    """Run a pipeline locally and print what its steps recorded (the body of run and retrain).

    Args:
        how: Which pipeline, for which command.
        params: The params file.
        overrides: ``-S key=value`` overrides of it.
        out: The run directory (default: ``runs/`` + ``how.run_dir``, formatted now).
        runner: How KFP's tasks run: ``warm`` (forked from this process) or ``subprocess``.
        parallel: With ``warm``: at most this many independent tasks at once (None: the
            machine's cores).
    """

    def body() -> None:
        from pipelines.local import run_local

        resolved = read_params(params, overrides)
        run_dir = out or Path("runs") / time.strftime(how.run_dir)
        console.print(f"[bold]tlops {how.command}[/] (KFP local) -> {run_dir}")
        local = run_local(
            resolved,
            run_dir,
            echo=lambda line: console.print(f"  {line}", highlight=False),
            pipeline_name=how.pipeline,
            runner=runner,
            parallel=parallel,
        )
        outputs = read_outputs(local.outputs)
        if how.data_tables:
            print_data(outputs)
        for line in summary_lines(outputs, resolved):
            console.print(line, highlight=False)

    guard(body)
