"""``tlops step <name>``: one command per declared step (what dvc.yaml and KFP components call).

The commands are built from the declarations (``tlops.steps``): one option per
input, output and argument of the step, so the CLI cannot drift from the components and stages.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from tlops.cli.common import ParamsOpt, SetOpt, console, guard, progress, read_params
from tlops.runner.spec import StepSpec
from tlops.steps import STEPS

step_app = typer.Typer(
    help="Run one pipeline step (what dvc.yaml stages and KFP components call).",
    no_args_is_help=True,
)


def _step_command(spec: StepSpec) -> Callable[..., None]:
    """The ``tlops step <name>`` command of a declared step: one option per port and argument."""

    def command(**options: Any) -> None:
        def body() -> None:
            from tlops.runner.execute import execute

            resolved = read_params(options["params"], options["set_"])
            inputs = {p.name: options[p.name] for p in spec.inputs if options[p.name] is not None}
            outputs = {p.name: options[p.name] for p in spec.dirs}
            args = {a.name: options[a.name] for a in spec.args if options[a.name] is not None}
            with progress(spec.name, None) as advance:
                result = execute(spec, resolved, inputs, outputs, args, advance)
            if result.summary:  # a data-parallel process other than rank 0 has nothing to say
                console.print(result.summary, highlight=False)

        guard(body)

    # typer reads the options from the signature: build it from the declaration
    command.__signature__ = inspect.Signature(_parameters(spec))  # type: ignore[attr-defined]
    command.__doc__ = spec.help
    command.__name__ = spec.name
    return command


def _parameters(spec: StepSpec) -> list[inspect.Parameter]:
    """The command's keyword parameters: inputs, outputs, arguments, then --params and --set."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    return [
        *(
            inspect.Parameter(
                port.name,
                keyword,
                annotation=Annotated[
                    Path | None if port.optional else Path,
                    typer.Option(option_name(port.name), help=f"(in) {port.help}"),
                ],
                default=None if port.optional else inspect.Parameter.empty,
            )
            for port in spec.inputs
        ),
        *(
            inspect.Parameter(
                port.name,
                keyword,
                annotation=Annotated[
                    Path, typer.Option(option_name(port.name), help=f"(out) {port.help}")
                ],
            )
            for port in spec.dirs
        ),
        *(
            inspect.Parameter(
                arg.name,
                keyword,
                annotation=Annotated[
                    str | None, typer.Option(option_name(arg.name), help=arg.help)
                ],
                default=arg.default or None,
            )
            for arg in spec.args
        ),
        inspect.Parameter("params", keyword, annotation=ParamsOpt, default=Path("params.yaml")),
        inspect.Parameter("set_", keyword, annotation=SetOpt, default=None),
    ]


def option_name(name: str) -> str:
    """The CLI option of a port or argument: ``checkpoint_root`` -> ``--checkpoint-root``."""
    return "--" + name.replace("_", "-")


for _spec in STEPS:
    step_app.command(_spec.name)(_step_command(_spec))
