"""``tlops labels``: a labeling round in Label Studio, and its answers back as a labeled drop.

``studio`` starts Label Studio on loopback (from ``.venv-labelstudio``); ``push`` sends the
images ``select_labels`` listed as tasks, the champion's answer as a pre-annotation; ``pull``
turns the finished annotations into a labeled drop (audit -> test split, selected -> train),
tracked by DVC. Any Label Studio works: give ``--url`` and ``--token`` (or the environment's
``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tlops.cli.common import ParamsOpt, console, dvc_add, dvc_root, guard, read_params

labels_app = typer.Typer(
    help="Label the images select_labels picked, in Label Studio.", no_args_is_help=True
)

UrlOpt = Annotated[
    str,
    typer.Option(envvar="LABEL_STUDIO_URL", help="Label Studio's address."),
]
TokenOpt = Annotated[
    str,
    typer.Option(envvar="LABEL_STUDIO_API_KEY", help="An API token of a Label Studio user."),
]
ProjectOpt = Annotated[
    str | None,
    typer.Option(help="The Label Studio project (default: '<register_model.model_name> labels')."),
]
DEFAULT_URL, DEFAULT_TOKEN = "http://127.0.0.1:8080", "tlops-local-token"


def _classes_and_title(params_path: Path, project: str | None) -> tuple[list[str], str]:
    cfg = read_params(params_path)
    if not cfg.validate_data.classes:
        raise ValueError(f"{params_path}: validate_data.classes is empty: the labels to offer")
    return list(cfg.validate_data.classes), project or f"{cfg.register_model.model_name} labels"


@labels_app.command("studio")
def studio(
    data_dir: Annotated[
        Path, typer.Option(help="Its database and media (kept between starts).")
    ] = Path(".labelstudio"),
    port: Annotated[int, typer.Option(help="Loopback port.")] = 8080,
    venv: Annotated[Path, typer.Option(help="Label Studio's venv.")] = Path(".venv-labelstudio"),
) -> None:
    """Start Label Studio on loopback until Ctrl-C (first start: a minute or two)."""
    from tlops.labeling.server import StudioServer

    server = StudioServer(venv.resolve(), data_dir.resolve(), port)
    log = data_dir.resolve() / "label-studio.log"

    def body() -> None:
        process = server.start(log)
        try:
            server.wait(process, log)
            console.print(
                f"Label Studio at {server.url} (user {server.username}, password "
                f"{server.password}, API token {server.token}); Ctrl-C stops it"
            )
            process.wait()
        finally:
            process.terminate()

    guard(body)


@labels_app.command("push")
def push(
    selection: Annotated[Path, typer.Argument(help="select_labels' output (to_label.csv in it).")],
    params: ParamsOpt = Path("params.yaml"),
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = DEFAULT_TOKEN,
    project: ProjectOpt = None,
) -> None:
    """Send the selected and audit images as tasks; images already sent are not sent again."""
    from tlops.labeling.studio import Studio, tasks_from_selection

    def body() -> None:
        classes, title = _classes_and_title(params, project)
        listed = selection / "to_label.csv" if selection.is_dir() else selection
        tasks = tasks_from_selection(listed)
        server = Studio(url, token)
        project_id = server.project(title, classes)
        sent = server.push(project_id, tasks)
        console.print(
            f"Label Studio project {title!r} (id {project_id}): {sent} tasks sent, "
            f"{len(tasks) - sent} already there; {url}/projects/{project_id}"
        )

    guard(body)


@labels_app.command("pull")
def pull(
    out: Annotated[Path, typer.Argument(help="The labeled drop to write (replaced whole).")],
    params: ParamsOpt = Path("params.yaml"),
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = DEFAULT_TOKEN,
    project: ProjectOpt = None,
    export: Annotated[
        Path | None,
        typer.Option(help="A Label Studio JSON export file instead of a server (offline)."),
    ] = None,
    dvc: Annotated[bool, typer.Option(help="Track the drop with `dvc add`.")] = True,
) -> None:
    """Write the finished annotations as a labeled drop: test/ (audit), train/ (selected)."""
    from tlops.labeling.drop import read_export, write_drop
    from tlops.labeling.studio import Studio

    def body() -> None:
        classes, title = _classes_and_title(params, project)
        if dvc and dvc_root(out.parent) is None:  # before anything is written
            raise FileNotFoundError(f"{out}: not inside a DVC repository; pull with --no-dvc")
        if export is not None:
            tasks = json.loads(export.read_text(encoding="utf-8"))
        else:
            server = Studio(url, token)
            found = server.find(title)
            if found is None:
                raise LookupError(f"Label Studio at {url} has no project {title!r}; push first")
            tasks = server.export(found)
        pulled = read_export(tasks, classes)
        write_drop(pulled, out)
        by_role = {r: sum(row["role"] == r for row in pulled.rows) for r in ("audit", "select")}
        console.print(
            f"{out}: {by_role['audit']} audit images (test split), {by_role['select']} selected "
            f"(train split); {len(pulled.skipped)} skipped by annotators, "
            f"{len(pulled.unfinished)} not labeled yet (left out)"
        )
        if dvc:
            dvc_add([out])
            console.print(f"tracked by DVC: {out}.dvc")

    guard(body)
