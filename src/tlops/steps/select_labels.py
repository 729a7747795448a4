"""Step ``select_labels``: which of the new, unlabeled target images a person should label first.

The pool is the unlabeled images an ingest holds (``data.target_unlabeled``: the manifest's
split ``unlabeled``). The champion embeds them (its pooled features and, through its head, its
class probabilities) and one labeling round is planned (:mod:`tlops.labeling.select`):
``select_labels.audit_size`` images drawn uniformly (the audit: the new data's test split, never
chosen for being hard) and ``select_labels.budget`` picked by ``select_labels.selector`` among
the rest. Images listed in ``select_labels.picked`` (the ``to_label.csv`` of earlier rounds) are
never picked again.

Without a champion (cold start) the ImageNet backbone's features stand in; the selectors that
need predictions then fall back to ``typiclust``, which is what works at very small budgets,
and say so.

Output ``selection``: ``to_label.csv`` (one row per image: its file where it came from, its
path in the ingest, content hash, role ``select`` or ``audit``, score, reason, the champion's
class and probability) and ``selection.json`` (what ran and the counts).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from tlops.config import UNLABELED_SPLIT, Params, StrategyParams
from tlops.data.dataset import ingest_info, load_manifest
from tlops.io import atomic_dir, fingerprint, write_json
from tlops.layout import IMAGES_DIR, UNLABELED_DIR
from tlops.runner.spec import Port, StepIO, StepResult, StepSpec
from tlops.steps.ingest_data import dataset_input
from tlops.tracking.registry import CHAMPION, version_with_alias

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from tlops.labeling.select import Round

SELECTION_FILE, SELECTION_JSON = "to_label.csv", "selection.json"
COLUMNS = ("file", "path", "sha256", "role", "score", "reason", "predicted", "probability")


class SelectLabelsParams(StrategyParams):
    """``select_labels``: one labeling round (declared here, held in params.yaml)."""

    selector: Literal["random", "margin", "entropy", "kcenter", "typiclust", "hybrid"]
    budget: int = Field(ge=0)  # images picked for labeling per round
    audit_size: int = Field(ge=0)  # uniformly drawn images per round: the new data's test split
    seed: int
    picked: Path | None  # to_label.csv of earlier rounds (never picked again); null: none
    batch_size: int = Field(ge=1)


def _earlier(path: Path | None) -> set[str]:
    """The content hashes earlier rounds sent for labeling."""
    if path is None:
        return set()
    if not path.is_file():
        raise FileNotFoundError(f"select_labels.picked = {path}: no such file (null: no rounds)")
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "sha256" not in rows[0]:
        raise ValueError(f"{path}: not a to_label.csv of select_labels (no sha256 column)")
    return {row["sha256"] for row in rows}


def _original(params: Params, path: str) -> str:
    """Where an unlabeled image came from (``data.target_unlabeled``), for the person labeling."""
    folder = params.data.target_unlabeled
    inside = path.removeprefix(f"{UNLABELED_DIR}/")
    return str(folder / inside) if isinstance(folder, Path) else f"{folder}/{inside}"


def _embedded(
    params: Params, pairs: list[tuple[str, Path]], classes: list[str]
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Features (and the champion's probabilities) of the pool, and which model gave them."""
    import torch

    from tlops.models.embed import embed_images
    from tlops.models.init import create_model, model_from_checkpoint, resolve_init
    from tlops.models.model import TransferModel
    from tlops.runtime import resolve_device

    cfg: SelectLabelsParams = params.section("select_labels")
    device = resolve_device(params.runtime.device)
    champion = version_with_alias(params.tracking, params.register_model.model_name, CHAMPION)
    loaded: list[TransferModel] = []

    def model() -> TransferModel:
        if not loaded:
            if champion is not None:
                loaded.append(model_from_checkpoint(resolve_init(champion.uri).checkpoint or {}))
            else:
                backbone = create_model(params.model.backbone, classes, pretrained=True)
                backbone.image_size = params.model.image_size
                loaded.append(backbone)
        return loaded[0]

    who = (
        f"champion {champion.name} v{champion.version}"
        if champion is not None
        else f"{params.model.backbone} (no champion yet)"
    )
    key = fingerprint(
        who, champion.run_id if champion else "", params.image.model_dump(mode="json")
    )
    cache = params.extract_features.cache_dir / "select_labels" / f"{key}.npz"
    features, _ = embed_images(model, pairs, params.image, cache, cfg.batch_size, device)
    if champion is None:
        return features, None, who
    head = model().head.eval()
    with torch.no_grad():
        logits = head(torch.from_numpy(features))
    return features, torch.softmax(logits, dim=1).numpy().astype("float64"), who


def _write(
    params: Params,
    out_dir: Path,
    planned: Round,
    pool: pd.DataFrame,
    probabilities: np.ndarray | None,
    classes: list[str],
    summary: dict[str, Any],
) -> None:
    """The ``selection`` output, all at once: to_label.csv (audit first) and selection.json."""
    rows = [
        (i, "audit", 0.0, "uniform random audit sample (the new data's test split)")
        for i in planned.audit
    ]
    rows += [(p.index, "select", p.score, p.reason) for p in planned.selected]
    with atomic_dir(out_dir) as staging:
        with (staging / SELECTION_FILE).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for index, role, score, reason in rows:
                predicted, probability = "", ""
                if probabilities is not None:  # the champion's answer, for the annotator
                    best = int(probabilities[index].argmax())
                    predicted, probability = classes[best], f"{probabilities[index, best]:.4f}"
                path = str(pool["path"].iloc[index])
                writer.writerow(
                    [_original(params, path), path, pool["sha256"].iloc[index], role,
                     f"{score:.6g}", reason, predicted, probability]
                )  # fmt: skip
        write_json(staging / SELECTION_JSON, summary)


def run(params: Params, io: StepIO) -> StepResult:
    """Plan one labeling round over the unlabeled images of the ingest.

    Args:
        params: Resolved params (reads ``select_labels``, ``register_model.model_name``,
            ``model``, ``image``, ``tracking``, ``runtime``, ``extract_features.cache_dir``).
        io: Input ``dataset`` (the target's ingest); output ``selection`` (replaced).

    Raises:
        ValueError: No unlabeled images, a bad ``picked`` file.
    """
    from tlops.labeling.select import NEEDS_PROBABILITIES, plan_round

    cfg: SelectLabelsParams = params.section("select_labels")
    earlier = _earlier(cfg.picked)  # a bad file is named before anything is read or embedded
    ingest_dir, out_dir = io.inputs["dataset"], io.outputs["selection"]
    ingest = ingest_info(ingest_dir)
    manifest = load_manifest(ingest_dir)
    pool = manifest[(manifest["split"] == UNLABELED_SPLIT) & (manifest["decode_status"] == "ok")]
    if pool.empty:
        raise ValueError(
            f"{ingest_dir}: no unlabeled images to choose from: set data.target_unlabeled to a "
            "folder of new target images (without class folders)"
        )
    hashes = list(pool["sha256"])
    exclude = {i for i, sha in enumerate(hashes) if sha in earlier}
    classes = list(ingest["classes"])
    pairs = [
        (sha, ingest_dir / IMAGES_DIR / path)
        for sha, path in zip(hashes, pool["path"], strict=True)
    ]
    features, probabilities, who = _embedded(params, pairs, classes)
    selector, note = cfg.selector, ""
    if probabilities is None and selector in NEEDS_PROBABILITIES:
        selector, note = "typiclust", f"{cfg.selector} needs a champion's predictions: typiclust"
    planned = plan_round(
        selector,
        cfg.budget,
        cfg.audit_size,
        probabilities=probabilities,
        embeddings=features,
        exclude=exclude,
        classes=classes,
        seed=cfg.seed,
    )
    summary: dict[str, Any] = {
        "selector": cfg.selector,
        "selector_used": selector,
        "note": note,
        "model": who,
        "pool": len(hashes),
        "picked_before": len(exclude),
        "selected": len(planned.selected),
        "audit": len(planned.audit),
        "seed": cfg.seed,
        "data_version": ingest["data_version"],
    }
    _write(params, out_dir, planned, pool, probabilities, classes, summary)
    return StepResult(
        f"select_labels: {len(planned.selected)} to label by {selector}"
        + (f" ({note})" if note else "")
        + f", {len(planned.audit)} audit images, of {len(hashes)} unlabeled "
        f"({len(exclude)} sent before); embedded by {who} -> {out_dir / SELECTION_FILE}"
    )


# The step's declaration: what every runner (tlops step, KFP components) is derived from.
STEP = StepSpec(
    name="select_labels",
    run=run,
    help="Pick the unlabeled target images a person should label first (params select_labels), "
    "beside a uniform audit sample; writes to_label.csv.",
    params=(
        "select_labels",
        "register_model.model_name",
        "model",
        "image",
        "extract_features.cache_dir",
        "runtime",
        "tracking",
    ),
    inputs=(dataset_input(),),
    outputs=(
        Port(
            "selection",
            "Artifact",
            "to_label.csv (file, hash, role select/audit, score, reason, prediction), "
            "selection.json",
        ),
    ),
    code=("tlops.labeling.select", "tlops.models.embed", "tlops.tracking.registry"),
    section=SelectLabelsParams,
    dvc=False,
)
