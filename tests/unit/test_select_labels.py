"""Which images to label first: each selector on pools whose right answer is known."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tlops.labeling.select import SELECTORS, plan_round, select


def _blobs(per: int = 30, centers: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated blobs in 8 dimensions, and which blob each point is in."""
    rng = np.random.default_rng(seed)
    middles = rng.normal(0, 20, (centers, 8))
    points = np.vstack([m + rng.normal(0, 1, (per, 8)) for m in middles])
    return points, np.repeat(np.arange(centers), per)


def _probabilities(n: int, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0, 3, (n, 4))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return np.asarray(e / e.sum(1, keepdims=True))


def _inputs(n: int = 150) -> dict[str, np.ndarray]:
    points, _ = _blobs()
    return {"probabilities": _probabilities(len(points)), "embeddings": points}


@pytest.mark.parametrize("selector", SELECTORS)
def test_every_selector_respects_the_budget_is_deterministic_and_skips_earlier_picks(
    selector: str,
) -> None:
    inputs = _inputs()
    earlier = set(range(0, 150, 3))
    first = select(selector, 7, **inputs, exclude=earlier, seed=4)
    again = select(selector, 7, **inputs, exclude=earlier, seed=4)
    assert first == again  # deterministic for a seed
    picked = [p.index for p in first]
    assert len(picked) == 7 == len(set(picked)) and not set(picked) & earlier
    assert all(p.reason for p in first)
    # a budget larger than what is left takes what is left, once each
    everything = select(selector, 500, **inputs, exclude=earlier, seed=4)
    assert sorted(p.index for p in everything) == sorted(set(range(150)) - earlier)


def test_kcenter_and_typiclust_cover_every_blob_first() -> None:
    points, blob = _blobs()
    for selector in ("kcenter", "typiclust"):
        picks = select(selector, 5, embeddings=points, seed=0)
        assert sorted(blob[p.index] for p in picks) == [0, 1, 2, 3, 4], selector
    # with two blobs already labeled, k-center's picks go to the three others first
    labeled = points[[0, 30]]
    picks = select("kcenter", 3, embeddings=points, labeled_embeddings=labeled, exclude={0, 30})
    assert sorted(blob[p.index] for p in picks) == [2, 3, 4]


def test_k_center_covers_within_twice_the_best_radius() -> None:
    """The greedy core-set's guarantee, checked: its covering radius r is at most twice the
    best 10 centers' radius. With the farthest remaining point, its 11 points are pairwise at
    least r apart if it is greedy: any 10 centers leave two of them in one ball, so the best
    radius is at least half their smallest gap, and r <= that gap."""
    points = np.random.default_rng(1).normal(size=(200, 6))
    picks = select("kcenter", 10, embeddings=points)
    chosen = points[[p.index for p in picks]]
    to_picks = np.sqrt(((points[:, None] - chosen[None]) ** 2).sum(-1)).min(1)
    radius, farthest = to_picks.max(), int(to_picks.argmax())
    eleven = np.vstack([chosen, points[farthest]])
    gaps = np.sqrt(((eleven[:, None] - eleven[None]) ** 2).sum(-1))
    assert radius <= gaps[np.triu_indices(11, 1)].min() + 1e-9
    # and it covers better than a random draw of the same size
    drawn = points[[p.index for p in select("random", 10, embeddings=points, seed=0)]]
    assert radius < np.sqrt(((points[:, None] - drawn[None]) ** 2).sum(-1)).min(1).max()


def test_uncertainty_picks_the_closest_calls() -> None:
    probabilities = np.array(
        [[0.9, 0.1, 0.0], [0.5, 0.48, 0.02], [0.34, 0.335, 0.325], [0.6, 0.2, 0.2]]
    )
    margin = select("margin", 2, probabilities=probabilities, classes=["a", "b", "c"])
    assert [p.index for p in margin] == [2, 1] and "between a and b" in margin[0].reason
    entropy = select("entropy", 1, probabilities=probabilities)
    assert entropy[0].index == 2


def test_the_audit_is_uniform_disjoint_from_the_selection_and_the_same_for_any_selector() -> None:
    inputs = _inputs()
    rounds = {s: plan_round(s, 10, 30, **inputs, exclude={1, 2}, seed=7) for s in SELECTORS}
    audits = {tuple(r.audit) for r in rounds.values()}
    assert len(audits) == 1  # drawn before the selection, on a stream of its own
    (audit,) = audits
    assert len(audit) == 30 and not {1, 2} & set(audit)
    for r in rounds.values():
        assert len(r.selected) == 10 and not {p.index for p in r.selected} & set(audit)
    # the hard cases are not the test set: margin's picks are harder than the audit on average
    p = inputs["probabilities"]
    top = np.sort(p, 1)[:, ::-1]
    margins = top[:, 0] - top[:, 1]
    chosen = [q.index for q in rounds["margin"].selected]
    assert margins[chosen].mean() < margins[list(audit)].mean()


def test_bad_settings_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"select_labels\.selector 'best': expected one of random"):
        select("best", 3, probabilities=_probabilities(5))
    with pytest.raises(ValueError, match="kcenter: needs the champion's embeddings"):
        select("kcenter", 3, probabilities=_probabilities(5))
    with pytest.raises(ValueError, match="margin: needs the champion's predictions"):
        select("margin", 3, embeddings=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="disagree on the pool size"):
        select("hybrid", 3, probabilities=_probabilities(5), embeddings=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="budget -1: must be 0 or more"):
        select("random", -1, probabilities=_probabilities(5))
    with pytest.raises(ValueError, match="audit_size -2"):
        plan_round("random", 1, -2, probabilities=_probabilities(5))


def test_the_step_plans_rounds_over_the_unlabeled_images_and_never_resends_one(
    params: Any, make_tree: Any, tmp_path: Path
) -> None:
    """Cold start (no champion in the store): the backbone's features, typiclust for hybrid."""
    from tests.helpers import ingest, run_step, save_image
    from tlops.config import apply_overrides
    from tlops.io import read_json

    target = make_tree("target")
    folder = tmp_path / "new"
    for i in range(14):
        save_image(folder / f"n_{i:02d}.png", 9000 + i)
    p = apply_overrides(
        params,
        {
            "data.target_unlabeled": str(folder),
            "extract_features.cache_dir": str(tmp_path / "cache"),
            "select_labels.budget": 4,
            "select_labels.audit_size": 3,
        },
    )
    ingest(p, target, tmp_path / "ingest")
    result = run_step(
        "select_labels", p, {"dataset": tmp_path / "ingest"}, {"selection": tmp_path / "r1"}
    )
    assert "4 to label by typiclust (hybrid needs a champion's predictions" in result.summary
    first = _rows(tmp_path / "r1" / "to_label.csv")
    roles = [row["role"] for row in first]
    assert roles.count("audit") == 3 and roles.count("select") == 4
    assert len({row["sha256"] for row in first}) == 7 and all(row["reason"] for row in first)
    assert all(row["path"].startswith("_unlabeled/") for row in first)
    assert all(Path(row["file"]).parent == folder for row in first)  # where to find it
    info = read_json(tmp_path / "r1" / "selection.json")
    assert (info["pool"], info["selector_used"], info["picked_before"]) == (14, "typiclust", 0)
    # the same inputs, the same round
    run_step("select_labels", p, {"dataset": tmp_path / "ingest"}, {"selection": tmp_path / "r1b"})
    assert _rows(tmp_path / "r1b" / "to_label.csv") == first
    # the next round never sends an image of the first again
    again = apply_overrides(p, {"select_labels.picked": str(tmp_path / "r1" / "to_label.csv")})
    run_step(
        "select_labels", again, {"dataset": tmp_path / "ingest"}, {"selection": tmp_path / "r2"}
    )
    second = _rows(tmp_path / "r2" / "to_label.csv")
    assert len(second) == 7 and not {r["sha256"] for r in second} & {r["sha256"] for r in first}


def test_the_step_names_what_is_missing(params: Any, make_tree: Any, tmp_path: Path) -> None:
    from tests.helpers import ingest, run_step
    from tlops.config import apply_overrides
    from tlops.runner.spec import StepFailure

    ingest(params, make_tree("target"), tmp_path / "ingest")  # no unlabeled folder
    with pytest.raises((StepFailure, ValueError), match="no unlabeled images to choose from"):
        run_step(
            "select_labels", params, {"dataset": tmp_path / "ingest"}, {"selection": tmp_path / "s"}
        )
    assert not (tmp_path / "s").exists()  # nothing half-written
    missing = apply_overrides(params, {"select_labels.picked": str(tmp_path / "nope.csv")})
    with pytest.raises((StepFailure, FileNotFoundError), match=r"nope\.csv: no such file"):
        run_step(
            "select_labels",
            missing,
            {"dataset": tmp_path / "ingest"},
            {"selection": tmp_path / "s"},
        )


def _rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_with_a_champion_its_predictions_drive_the_uncertainty_and_go_to_the_annotator(
    params: Any, make_tree: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The champion as the registry gives it (its checkpoint), without a training run."""
    import tlops.models.init as init
    import tlops.steps.select_labels as step
    from tests.helpers import ingest, run_step, save_image
    from tlops.config import apply_overrides
    from tlops.io import read_json
    from tlops.models.init import create_model
    from tlops.tracking.registry import VersionInfo

    champion = create_model("timm:tf_efficientnet_lite0", ["cat", "dog", "fox"], pretrained=True)
    champion.image_size = 32
    checkpoint = champion.checkpoint()
    monkeypatch.setattr(
        step, "version_with_alias", lambda *_: VersionInfo("tlops-digits", "3", "r" * 32, {})
    )
    real = init.resolve_init
    monkeypatch.setattr(
        init,
        "resolve_init",
        lambda spec, *a: (
            init.Init(checkpoint["spec"], False, checkpoint, source=spec)
            if spec == "models:/tlops-digits/3"
            else real(spec, *a)
        ),
    )
    folder = tmp_path / "new"
    for i in range(10):
        save_image(folder / f"n_{i:02d}.png", 7000 + i)
    p = apply_overrides(
        params,
        {
            "data.target_unlabeled": str(folder),
            "extract_features.cache_dir": str(tmp_path / "cache"),
            "select_labels.selector": "margin",
            "select_labels.budget": 3,
            "select_labels.audit_size": 2,
        },
    )
    ingest(p, make_tree("target"), tmp_path / "ingest")
    run_step("select_labels", p, {"dataset": tmp_path / "ingest"}, {"selection": tmp_path / "s"})
    rows = _rows(tmp_path / "s" / "to_label.csv")
    picked = [r for r in rows if r["role"] == "select"]
    assert len(picked) == 3 and all(r["predicted"] in ("cat", "dog", "fox") for r in rows)
    assert all(0 < float(r["probability"]) <= 1 for r in rows)
    margins = [float(r["score"]) for r in picked]
    assert margins == sorted(margins) and all(r["reason"].startswith("margin ") for r in picked)
    assert read_json(tmp_path / "s" / "selection.json")["model"] == "champion tlops-digits v3"


def test_hybrid_is_typicality_alone_while_the_budget_is_low() -> None:
    embeddings, _ = _blobs()
    probabilities = _probabilities(len(embeddings))  # 4 classes: low while < 20 labels
    few = select("hybrid", 6, probabilities=probabilities, embeddings=embeddings, seed=3)
    assert few == select("typiclust", 6, embeddings=embeddings, seed=3)
    bought = embeddings[:20]
    many = select(
        "hybrid", 6, probabilities=probabilities, embeddings=embeddings, labeled_embeddings=bought
    )
    assert sum("margin" in p.reason for p in many) == 3  # past it: half the boundary
    # a round plans from what earlier rounds sent (exclude) as the labels bought so far
    later = plan_round(
        "hybrid", 6, 0, probabilities=probabilities, embeddings=embeddings, exclude=range(20)
    )
    assert sum("margin" in p.reason for p in later.selected) == 3
