"""``tlops compile`` (a pipeline to KFP YAML) and ``tlops generate`` (files from declarations)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tlops.cli.common import ParamOpt, ParamsOpt, PipelineOpt, console, guard, read_params


def compile_(
    params: ParamsOpt = Path("params.yaml"),
    set_: ParamOpt = None,
    pipeline: PipelineOpt = "training",
    out: Annotated[
        Path | None,
        typer.Option(help="Where the YAML goes (default: pipelines/compiled/<pipeline>.yaml)."),
    ] = None,
) -> None:
    """Compile a pipeline (defaults and cluster settings from params.yaml) to YAML."""

    def body() -> None:
        from pipelines.cluster import compile_pipeline

        target = out or Path("pipelines/compiled") / f"{pipeline}.yaml"
        path = compile_pipeline(read_params(params, set_), target, pipeline)
        console.print(f"compiled the {pipeline} pipeline -> {path}")

    guard(body)


def generate(
    ctx: typer.Context,
    check: Annotated[
        bool, typer.Option("--check", help="Only report files that are out of date (exit 1).")
    ] = False,
) -> None:
    """Write what is derived from the declarations: components/, dvc.yaml, the docs' reference.

    Run from the repository root after changing a declaration (make generate).
    """

    def body() -> None:
        from tlops.runner.generate import generated_files
        from tlops.steps import STEPS

        stale = []
        root = ctx.find_root().command  # the CLI itself, as the user runs it
        files = {**generated_files(Path.cwd(), STEPS), **reference_pages(Path.cwd(), root)}
        for path, text in files.items():
            if path.is_file() and path.read_text(encoding="utf-8") == text:
                continue
            stale.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
        verb = "out of date" if check else "written"
        for path in stale:
            console.print(f"{verb}: {path}", highlight=False)
        if check and stale:
            raise ValueError("generated files are stale: run `make generate` and commit them")
        if not stale:
            console.print("every generated file is up to date")

    guard(body)


def reference_pages(repo: Path, root: Any) -> dict[Path, str]:
    """The documentation's generated pages: the parameters and the command line.

    Args:
        repo: The repository root.
        root: The ``tlops`` command (click's root command of the running CLI).
    """
    import tlops.steps  # noqa: F401 - the steps register their own sections
    from tlops import plugins
    from tlops.cli.reference import cli_page
    from tlops.config import Params
    from tlops.config.reference import parameters_page

    sections: dict[str, Any] = {
        name: field.annotation for name, field in Params.model_fields.items() if name != "plugins"
    }
    sections.update(plugins.step_sections())
    params = (repo / "params.yaml").read_text(encoding="utf-8")
    reference = repo / "docs" / "reference"
    return {
        reference / "parameters.md": parameters_page(params, sections),
        reference / "cli.md": cli_page(root),
    }
