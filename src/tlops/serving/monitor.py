"""Watching the served traffic: has what the champion is asked about moved from what it knows?

``detect_change`` calls :func:`check_traffic` with the champion and its **held-out** images (val
and test: the same reference as its drift test of new data, for the same reason: training
images sit too tight in the model's own feature space). The traffic is what the champion's
predictors recorded (:mod:`tlops.serving.recorder`) since the last check, its version only
(embeddings of another version live in another feature space). Three figures:

* drift: the MMD permutation test of the served embeddings against the held-out ones;
* confidence: the served images' mean top-class probability against the held-out images';
* class mix: the total variation between the predicted classes of the served images and of
  the held-out ones.

A check reads the record files written since the previous tested check (a window of too few
images is not tested, and the next check reads it again with what came after).

:func:`last_check` finds where the previous check stopped (a tag of its MLflow run).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tlops.config import Params
from tlops.evaluate.change import TrafficCheck
from tlops.evaluate.drift import label_shift, mmd_test
from tlops.tracking.registry import VersionInfo

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from tlops.models.model import TransferModel

HELD_OUT = ("val", "test")
UNTIL_TAG = "detect_change.traffic_until"  # where a check stopped reading (unix seconds)
WRITE_MARGIN_S = 2.0


@dataclass
class HeldOut:
    """The champion's held-out images and a cached way to their features."""

    pairs: list[tuple[str, Path]]  # (sha256, file) of the held-out images present now
    missing: int  # held-out images no longer in the data
    params: Params
    champion: VersionInfo
    _model: list[TransferModel]

    def model(self) -> TransferModel:
        """The champion (loaded once, and only if needed)."""
        from tlops.models.init import model_from_checkpoint, resolve_init

        if not self._model:
            self._model.append(
                model_from_checkpoint(resolve_init(self.champion.uri).checkpoint or {})
            )
        return self._model[0]

    def embed(self, pairs: list[tuple[str, Path]]) -> tuple[np.ndarray, int]:
        """Features of ``pairs`` in the champion's space (cached per image content)."""
        from tlops.io import fingerprint
        from tlops.models.embed import embed_images

        params, champion = self.params, self.champion
        key = fingerprint(
            champion.name, champion.version, champion.run_id, params.image.model_dump(mode="json")
        )
        cache_file = params.extract_features.cache_dir / "drift" / f"{key}.npz"
        return embed_images(
            self.model,
            pairs,
            params.image,
            cache_file,
            params.detect_change.batch_size,
            _device(params),
        )


def held_out(
    params: Params,
    champion: VersionInfo,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    images_root: Path,
) -> HeldOut:
    """The champion's val and test images, read from the current snapshot (or the cache)."""
    usable = current[current["decode_status"] == "ok"]
    rows = reference[reference["split"].isin(HELD_OUT) & (reference["decode_status"] == "ok")]
    where = dict(zip(usable["sha256"], usable["path"], strict=True))
    pairs = [(sha, images_root / where[sha]) for sha in rows["sha256"] if sha in where]
    return HeldOut(pairs, int(len(rows) - len(pairs)), params, champion, [])


def _device(params: Params) -> torch.device:
    from tlops.runtime import resolve_device

    return resolve_device(params.runtime.device)


def last_check(params: Params, champion: VersionInfo) -> float:
    """Where the previous traffic check stopped; else when the champion was registered."""
    from tlops.tracking.runs import client

    mlflow = client(params.tracking)
    start = (champion.created_ms or 0) / 1000.0
    experiment = mlflow.get_experiment_by_name(params.tracking.experiment)
    if experiment is None:
        return start
    found = mlflow.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{UNTIL_TAG}` LIKE '%'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        return start
    return max(start, float(found[0].data.tags[UNTIL_TAG]))


def check_traffic(
    params: Params, reference: HeldOut, since: float, until: float | None = None
) -> TrafficCheck:
    """The champion's served traffic of ``[since, until)`` against its held-out images.

    A store that cannot be read is a check that says so (monitoring never blocks a retrain
    decision on data).
    """
    from tlops.serving.traffic import TrafficError, read_traffic

    cfg, uri = params.detect_change, params.serve.record.uri
    # a file whose name is a moment ago is surely listed: the next check starts from here
    until = time.time() - WRITE_MARGIN_S if until is None else until
    if uri is None:
        return TrafficCheck(0, since, until, error="serve.record.uri is null: nothing recorded")
    try:
        traffic = read_traffic(uri, since, until, written=True)
    except TrafficError as exc:
        return TrafficCheck(0, since, until, error=str(exc))
    served = traffic.where(traffic.version == reference.champion.version).ok
    check = TrafficCheck(len(served), since, until)
    if len(served) < cfg.traffic.min_images or len(reference.pairs) < 2:
        return check
    ref_features, _ = reference.embed(reference.pairs)
    width = ref_features.shape[1]
    drift = mmd_test(
        ref_features, served.embedding[:, :width], cfg.permutations, cfg.seed, cfg.max_samples
    )
    probs = _probabilities(reference.model(), ref_features)
    classes = reference.model().classes
    predicted = [classes[i] for i in probs.argmax(axis=1)]
    mix = label_shift(predicted, list(served.predicted), classes)
    return TrafficCheck(
        len(served),
        since,
        until,
        drift=drift,
        confidence_reference=float(probs.max(axis=1).mean()),
        confidence_served=float(np.mean(served.confidence)),
        class_mix=mix.total_variation if mix is not None else math.nan,
    )


def _probabilities(model: TransferModel, features: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        logits = model.cpu().eval().head(torch.from_numpy(features))
        return torch.softmax(logits, dim=1).numpy()
