"""``tlops retrain`` (the retraining pipeline, locally) and ``tlops retrain-demo`` (its story)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from tlops.cli.common import ParamsOpt, SetOpt, console, guard, read_params, wide
from tlops.cli.run import LocalPipeline, ParallelOpt, RunnerOpt, run_pipeline

if TYPE_CHECKING:
    from pipelines.retrain_demo import Chapter

RETRAINING = LocalPipeline("retrain", "retraining", "retrain-%Y%m%d-%H%M%S", data_tables=False)


def retrain(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default: runs/retrain-<timestamp>).")
    ] = None,
    runner: RunnerOpt = "warm",
    parallel: ParallelOpt = None,
) -> None:
    """Run the retraining pipeline once, locally (KFP local), on the configured target data.

    detect_change compares the data with the champion's (new images, drift in the champion's
    feature space, label shift) and decides; on retrain, the model is trained warm-started from
    the champion, evaluated against it on the same test split and promoted only if the gate
    says so. Without a retrain, the MLflow run records why.
    """
    run_pipeline(RETRAINING, params, set_, out, runner, parallel)


def retrain_demo(
    workdir: Annotated[
        Path, typer.Option(help="Where the story runs (replaced): its own git, DVC, MLflow.")
    ] = Path("runs/retrain-demo"),
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """The retraining story on the demo data: first champion, new data, nothing new, drift.

    Each step is a real `tlops retrain` in a project of its own: drop 1 (first champion), drop
    2 added and committed (retrain, promoted or not), the same again (skipped: no new data),
    the drifted drop (drift detected, retrain). Ends with a table of the runs.
    """

    def body() -> None:
        from pipelines.retrain_demo import registry_now, run_story

        read_params(params)  # a broken params file fails here, not in the third subprocess
        chapters = run_story(
            workdir, params, lambda line: console.print(line, highlight=False, soft_wrap=True)
        )
        out = wide()
        out.print(_story_table(workdir, chapters))
        out.print(
            "registry now: "
            + ", ".join(
                f"v{version} [{', '.join(aliases) or 'no alias'}] data {data[:12]}"
                for version, aliases, data in registry_now(workdir)
            ),
            highlight=False,
            markup=False,
        )
        console.print(
            f"MLflow store: {workdir / 'mlflow.db'} (to browse it: cd {workdir} && tlops ui)",
            highlight=False,
            soft_wrap=True,
        )

    guard(body)


def _story_table(workdir: Path, chapters: list[Chapter]) -> Table:
    """One row per step of the story: its data, detect_change's decision, the model version."""
    table = Table(title=f"retraining story ({workdir})", title_justify="left")
    for column in (
        "step",
        "data version",
        "detect_change",
        "drift p",
        "model version",
        "aliases then",
        "primary metric (champion's)",
    ):
        table.add_column(column)
    for chapter in chapters:
        decided = ("retrain: " if chapter.retrain else "skipped: ") + chapter.why
        table.add_row(
            chapter.name,
            chapter.data_version[:12],
            decided,
            "-" if chapter.drift_p is None else f"{chapter.drift_p:.4f}",
            "-"
            if chapter.version is None
            else (f"v{chapter.version} " + ("promoted" if chapter.promoted else "kept out")),
            chapter.aliases or "-",
            _metric_text(chapter),
        )
    return table


def _metric_text(chapter: Chapter) -> str:
    """The chapter's primary metric, and the champion's it was compared with, if any."""
    if chapter.metric is None:
        return "-"
    text = f"{chapter.metric:.4f}"
    if chapter.champion_metric is not None:
        text += f" ({chapter.champion_metric:.4f})"
    return text


def label_demo(
    workdir: Annotated[
        Path, typer.Option(help="Where the story runs (replaced): its own git, DVC, MLflow.")
    ] = Path("runs/label-demo"),
    params: ParamsOpt = Path("params.yaml"),
    venv: Annotated[Path, typer.Option(help="Label Studio's venv (make label-studio).")] = Path(
        ".venv-labelstudio"
    ),
) -> None:
    """The labeling story: the drifted drop arrives unlabeled, is adapted to, labeled, gated.

    Drop 1 (the champion); the drifted drop without labels (adapted with mcc, held; 10 images
    per class and a 100-image audit picked); a Label Studio started for the demo, answered by
    a scripted annotator from the demo's ground truth; the pulled labels (a retrain from the
    held model, gated on the audit). Ends with the accuracy on the audit at each stage.
    """

    def body() -> None:
        from pipelines.label_demo import run_story

        read_params(params)
        rows = run_story(
            workdir,
            params,
            venv.resolve(),
            lambda line: console.print(line, highlight=False, soft_wrap=True),
        )
        table = Table(title=f"labeling story ({workdir}): the audit", title_justify="left")
        for column in ("model", "version", "aliases now", "accuracy on the audit", "labels"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row.stage, f"v{row.version}", row.aliases or "-", f"{row.accuracy:.3f}",
                str(row.labels),
            )  # fmt: skip
        wide().print(table)

    guard(body)


def serve_demo(
    workdir: Annotated[
        Path, typer.Option(help="Where the story runs (replaced): its own git, DVC, MLflow.")
    ] = Path("runs/serve-demo"),
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """The serving story: the champion served, asked about drifted digits, and the check.

    Drop 1 (the champion); tlops serve on loopback recording its traffic; a client sends the
    demo's drifted digits over the Open Inference Protocol; tlops retrain with the data
    unchanged reports the drift from the served traffic alone.
    """

    def body() -> None:
        from pipelines.serve_demo import run_story

        read_params(params)
        story = run_story(
            workdir, params, lambda line: console.print(line, highlight=False, soft_wrap=True)
        )
        console.print(
            f"\nthe V2 request (POST /v2/models/<name>/infer), shortened:\n"
            f"{story.request_example}\nits answer, shortened:\n{story.answer_example}",
            highlight=False,
            soft_wrap=True,
        )

    guard(body)
