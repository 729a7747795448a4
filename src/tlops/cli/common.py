"""What every ``tlops`` command shares: the consoles, the params options, errors, progress."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tlops.config import ConfigError, Params, load_params, parse_overrides

# soft wrap: a long path or id stays whole on one line (a pipe is not an 80-column screen)
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

ParamsOpt = Annotated[
    Path, typer.Option("--params", "-p", help="The params file (every default lives there).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="Override a param, e.g. -S ingest_data.salt=v2 (repeatable)."),
]
# the cluster commands also take --param (the name KFP users know) and show a train example
ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-S", "--param", help="Override a param, e.g. -S train.lr=0.001 (repeatable)."
    ),
]
PipelineOpt = Annotated[
    str, typer.Option("--pipeline", help="training, or retraining (detect_change first).")
]


def read_params(path: Path, overrides: list[str] | None = None, flag: str = "-S") -> Params:
    """The params file at ``path`` with the ``-S key=value`` overrides applied."""
    return load_params(path, parse_overrides(overrides, flag), flag)


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (on stderr, so piped output stays clean)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
        disable=not errors.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def fail(message: str, code: int = 1) -> None:
    """Print ``message`` as an error on stderr and leave with exit ``code``."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def guard(action: Callable[[], Any]) -> Any:
    """Run a command body, turning expected failures into a clear message and exit code 1."""
    from tlops.data.manifest import DataDirError
    from tlops.runner.spec import StepFailure

    try:
        return action()
    except StepFailure as exc:
        errors.print(str(exc), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    except (
        ConfigError,
        DataDirError,
        FileNotFoundError,
        ValueError,
        LookupError,
        RuntimeError,
    ) as exc:
        fail(str(exc).replace("[", r"\["))


def wide() -> Console:
    """The console for tables: piped output has no terminal width to squeeze them into."""
    return console if console.is_terminal else Console(width=200)


def dvc_root(path: Path) -> Path | None:
    """The DVC repository ``path`` is in (the folder with ``.dvc/``), or None."""
    for folder in [path.resolve(), *path.resolve().parents]:
        if (folder / ".dvc").is_dir():
            return folder
    return None


def dvc_add(paths: list[Path]) -> None:
    """Track ``paths`` with DVC (``dvc add``) in the DVC repo that holds them."""
    root = dvc_root(paths[0].parent)
    if root is None:
        raise FileNotFoundError(f"{paths[0]}: not inside a DVC repository (no .dvc/ above it)")
    subprocess.run(
        [sys.executable, "-m", "dvc", "add", "--quiet", *(str(p.resolve()) for p in paths)],
        cwd=root,
        check=True,
    )
