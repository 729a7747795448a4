"""Where a training run starts: warm from the champion a retrain names, or the backbone.

Both are decided before any image is read: :func:`warm_start` from ``detect_change``'s
decision and the params, :func:`build_model` from the strategy (pretrained or a random init of
the same architecture).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.config import Params
from tlops.io import read_json
from tlops.layout import CHANGE_FILE, TUNED_FILE
from tlops.plugins import Need
from tlops.training.strategies import Strategy

if TYPE_CHECKING:
    from tlops.models.model import TransferModel


def for_change(params: Params, change_dir: Path | None) -> Params:
    """The params a retrain trains with: ``detect_change``'s overrides applied (adapt runs).

    An ``adapt`` decision trains the label-free strategy (``detect_change.adapt_strategy``,
    ``train.target_labels: 0``) instead of ``train.strategy``; any other decision, or no
    ``detect_change`` before the step, leaves the params as they are.
    """
    if change_dir is None:
        return params
    from tlops.config.load import apply_overrides

    overrides = read_json(change_dir / CHANGE_FILE).get("overrides") or {}
    if not overrides:
        return params
    return apply_overrides(params, overrides, f"{change_dir / CHANGE_FILE} (overrides)")


def tuned(params: Params, tuned_dir: Path | None) -> tuple[Params, dict[str, Any] | None]:
    """The params with the ``tune`` step's best params applied, and what was applied.

    No ``tune`` before the step, or a search where no trial completed: the params as they
    are (and None).
    """
    if tuned_dir is None:
        return params, None
    from tlops.config.load import apply_overrides

    study = read_json(tuned_dir / TUNED_FILE)
    if not study.get("params"):
        return params, None
    applied = apply_overrides(params, study["params"], f"{tuned_dir / TUNED_FILE} (best trial)")
    record = {k: study[k] for k in ("params", "best_trial", "best_value", "metric", "engine")}
    return applied, record


def warm_start(params: Params, strategy: Strategy, change_dir: Path | None) -> str | None:
    """The champion version a retrain starts from (``models:/<name>/<version>``), or None.

    From ``detect_change``'s output, when ``detect_change.warm_start`` is on and the strategy
    fine-tunes pretrained weights on images. A strategy on cached features does not: its
    features are the backbone's, not the champion's. The version, not the alias, so a champion
    promoted by a concurrent run while this one trains changes nothing here.
    """
    if change_dir is None:
        return None
    change = read_json(change_dir / CHANGE_FILE)
    if not change["retrain"]:
        raise ValueError(
            f"{change_dir / CHANGE_FILE}: detect_change decided not to retrain "
            f"({change['reasons'][0]}); nothing is trained on its decision"
        )
    if not params.detect_change.warm_start:
        return None
    if not strategy.pretrained or Need.IMAGES not in strategy.needs:
        return None
    # the champion, or the held challenger adapted to the images whose labels arrived
    start = change.get("warm_start") or change.get("champion")
    return str(start["uri"]) if start else None


def build_model(
    params: Params, strategy: Strategy, classes: list[str], start: str | None = None
) -> TransferModel:
    """The model ``strategy`` starts from: ``start`` (a warm start) or ``model.backbone``."""
    from tlops.models.init import create_model, resolve_init

    spec = start or params.model.backbone
    if not strategy.pretrained:
        # the same architecture as the start model, randomly initialised
        spec = resolve_init(spec, False).spec
    pretrained = params.model.pretrained and strategy.pretrained
    model = create_model(spec, classes, pretrained=pretrained, dropout=params.model.dropout)
    model.image_size = params.model.image_size
    model.align = params.model.align
    return model
