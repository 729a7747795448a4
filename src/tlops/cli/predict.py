"""``tlops predict``: classify image files with a registered model, as the scoring server does."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from tlops.cli.common import ParamsOpt, console, guard, read_params, wide

if TYPE_CHECKING:
    import pandas as pd

    from tlops.config import ImageConfig, TrackingConfig


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
        from tlops.models.init import is_mlflow_uri

        resolved = read_params(params)
        spec = model or f"models:/{resolved.register_model.model_name}@champion"
        _check_images(images, resolved.image)

        from tlops.tracking.runs import client
        from tlops.tracking.serving import BadImage, load_classifier

        if is_mlflow_uri(spec):
            client(resolved.tracking)
        shown = f"{spec}{_resolved_version(spec, resolved.tracking)}"
        classifier = load_classifier(spec, resolved.image)
        try:
            pixels = classifier.prepare([p.read_bytes() for p in images])
        except BadImage:  # the files, not the request rows, are what the user knows
            bad = []
            for path in images:
                try:
                    classifier.prepare([path.read_bytes()])
                except BadImage as exc:
                    bad.append(f"{path}: {exc.reason}")
            raise ValueError(_refused(bad, f" by {shown}")) from None
        answer = classifier.answer(classifier.probabilities(pixels))
        if as_json:
            _print_json(images, answer, shown)
        else:
            _print_table(shown, images, answer, top)

    guard(body)


def _check_images(images: list[Path], image: ImageConfig) -> None:
    """Fail on a missing file, or one that no image reader can take.

    Raises:
        FileNotFoundError: A file does not exist.
        ValueError: A file no image reader takes.
    """
    from tlops.data.images import DecodeStatus, ImageDecodeError, load_image

    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such image file: {', '.join(missing)}")
    # A file that no image reader can take fails now, before a model is fetched and loaded
    # (seconds, or a download). The pixel limit and the mode come with the model's own
    # preprocessing, so a file that breaks only those is left for it to judge.
    bad = []
    for path in images:
        try:
            load_image(path, image)
        except ImageDecodeError as exc:
            if exc.status not in (
                DecodeStatus.CONVERSION_FAILED,
                DecodeStatus.DECOMPRESSION_BOMB,
            ):
                bad.append(str(exc))
    if bad:
        raise ValueError(_refused(bad, ""))


def _refused(bad: list[str], by: str) -> str:
    """Every refused file with its rule, one per line (one file: one line)."""
    if len(bad) == 1:
        return bad[0] + (f" (refused{by})" if by else "")
    return f"{len(bad)} image files refused{by}:\n" + "\n".join(f"  {line}" for line in bad)


def _resolved_version(spec: str, tracking: TrackingConfig) -> str:
    """`` (version 3)`` for ``models:/<name>@<alias>``: which version the alias named now."""
    from tlops.tracking.runs import client

    if not spec.startswith("models:/") or "@" not in spec:
        return ""
    name, alias = spec[len("models:/") :].split("@", 1)
    try:
        found = client(tracking).get_model_version_by_alias(name, alias)
        return f" (version {found.version})"
    except Exception:
        return ""


def _print_json(images: list[Path], answer: pd.DataFrame, model: str) -> None:
    """One JSON object per image, on one line each, with the model that answered."""
    import json

    for path, (_, row) in zip(images, answer.iterrows(), strict=True):
        record = {"image": str(path), **row.to_dict(), "model": model}
        console.print_json(json.dumps(record), indent=None)


def _print_table(spec: str, images: list[Path], answer: pd.DataFrame, top: int) -> None:
    """A table: per image its class, the probability, and the next ``top - 1`` classes."""
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
    wide().print(table)
