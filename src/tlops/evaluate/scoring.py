"""A model scored on a split: every test metric, in fp32 (``evaluate.numerics`` picks the layout).

And the champion scored the same way, on the same split at its own resolution and alignment
(the evaluate step compares them; register_model re-gates on them under its lock).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlops.config import Params
from tlops.evaluate.metrics import classification_metrics
from tlops.layout import NUMERICS_CACHE
from tlops.runtime import resolve_device

if TYPE_CHECKING:
    from tlops.data.tensors import SplitTensors
    from tlops.models.model import TransferModel


def score(model: TransferModel, test: SplitTensors, params: Params) -> dict[str, Any]:
    """All metrics of ``model`` on a split."""
    import torch

    from tlops.models.inference import inference_numerics, predict_logits

    device = resolve_device(params.runtime.device)
    batch_size = params.evaluate.batch_size
    choice = inference_numerics(
        params.evaluate.numerics,
        model,
        [test],
        batch_size,
        device,
        params.extract_features.cache_dir / NUMERICS_CACHE,
        decides=True,  # the gate compares these figures: fp32, whatever is faster
    )
    logits = predict_logits(model.to(device), test, batch_size, device, choice.numerics)
    probs = torch.softmax(logits, dim=1).numpy().astype(np.float64)
    result = classification_metrics(
        probs, test.labels, model.classes, params.evaluate.calibration_bins
    )
    result["predicted"] = probs.argmax(axis=1).tolist() if len(probs) else []
    result["confidence"] = probs.max(axis=1).tolist() if len(probs) else []
    result["numerics"] = choice.as_dict()
    return result


def _champion(
    params: Params, classes: list[str], version: str
) -> tuple[TransferModel | None, str | None, str]:
    from tlops.models.init import model_from_checkpoint, resolve_init

    name = params.register_model.model_name
    payload = resolve_init(f"models:/{name}/{version}").checkpoint or {}
    if list(payload.get("classes", [])) != classes:
        return (
            None,
            version,
            (
                f"champion v{version} has classes {payload.get('classes')}, "
                f"not {classes}: not comparable"
            ),
        )
    model = model_from_checkpoint(payload)
    size = f" at its own {model.image_size} px" if model.image_size else ""
    return model, version, f"champion v{version} evaluated on the same test split{size}"


def champion_scores(
    params: Params,
    ingest_dir: Path,
    classes: list[str],
    test: SplitTensors,
    version: str,
) -> tuple[dict[str, Any] | None, str | None, str]:
    """The champion's scores on the test split (``test`` is at ``model.image_size``).

    Args:
        params: Resolved params.
        ingest_dir: The ingest output (the split is decoded again at the champion's own
            resolution when it differs).
        classes: The candidate's classes; a champion with others is not comparable.
        test: The decoded test split.
        version: The champion's version of ``register_model.model_name``.

    Returns:
        ``({"version", "metrics", "per_class", "confusion_matrix"} or None, the version found,
        a note for the report)``.
    """
    from tlops.data.dataset import load_splits

    champion_model, champion_version, note = _champion(params, classes, version)
    if champion_model is None:
        return None, champion_version, note
    size = champion_model.image_size or params.model.image_size
    align = champion_model.align
    champion_test = (
        test
        if size == params.model.image_size and align == params.model.align
        else load_splits(params, ingest_dir, classes, ("test",), image_size=size, align=align)[
            "test"
        ]
    )
    champion_result = score(champion_model, champion_test, params)
    champion = {
        "version": champion_version,
        "metrics": champion_result["overall"],
        "per_class": champion_result["per_class"],
        "confusion_matrix": champion_result["confusion_matrix"],
    }
    return champion, champion_version, note
