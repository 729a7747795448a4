"""The ``tlops`` command line: demo data, single steps, and whole pipeline runs.

One module per command group (``run``, ``retrain``, ``step``, ``data``, ...); this one only
assembles them into ``app``, which :func:`main` (the console script's entry point) runs. The
command modules import torch, MLflow, KFP and pandas inside their commands, so ``tlops --help``
stays fast.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys

import typer

from tlops.cli import compile, predict, retrain, rollback, run, schedule, serve, submit, ui
from tlops.cli.data import data_app
from tlops.cli.labels import labels_app
from tlops.cli.step import step_app

__all__ = ["app", "main"]

app = typer.Typer(
    help="Transfer learning of vision models as validated, tracked, versioned pipelines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(step_app, name="step")
app.add_typer(labels_app, name="labels")
# `tlops --help` lists the commands in this order
app.command("generate")(compile.generate)
app.command("run")(run.run)
app.command("retrain")(retrain.retrain)
app.command("retrain-demo")(retrain.retrain_demo)
app.command("label-demo")(retrain.label_demo)
app.command("serve-demo")(retrain.serve_demo)
app.command("compile")(compile.compile_)
app.command("submit")(submit.submit)
app.command("schedule")(schedule.schedule)
app.command("rollback")(rollback.rollback)
app.command("predict")(predict.predict)
app.command("serve")(serve.serve)
app.command("runs")(ui.runs_)
app.command("compare")(ui.compare)
app.command("ui")(ui.ui)


def main() -> None:
    """The ``tlops`` console script: run ``app``, then leave without tearing modules down.

    A ``tlops run`` process has imported torch, torchvision, Great Expectations and mlflow
    (the warm task runner's parent); the interpreter's teardown of their modules took 2.4 s
    of a 25 s ``tlops run -S train.epochs=1`` on a 2-core CPU (timed by hand, with and
    without this exit), for nothing. The exit handlers still run and the standard
    streams are flushed; then the process ends with the command's exit code.
    """
    code: object = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # what SystemExit("message") prints
        code = 1
    atexit._run_exitfuncs()  # mlflow's, logging's, tempfile cleanups
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code or 0)
