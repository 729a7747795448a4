"""What changed since the champion's data, and the retraining policy (pure functions)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.helpers import changed, repo_params
from tlops.evaluate.change import ADAPT, ASK, NO_NEW_DATA, RETRAIN, SKIP, compare_manifests, decide
from tlops.evaluate.drift import LabelShift, MMDResult


def _manifest(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"path": p, "label": label, "sha256": sha, "split": "train", "decode_status": "ok"}
            for p, label, sha in rows
        ]
    )


def test_counts_added_removed_changed_per_class() -> None:
    before = _manifest([("0/a.png", "0", "h1"), ("0/b.png", "0", "h2"), ("1/c.png", "1", "h3")])
    after = _manifest(
        [
            ("0/a.png", "0", "h1"),  # unchanged
            ("0/b.png", "0", "h9"),  # changed content
            ("1/d.png", "1", "h4"),  # added
            ("1/e.png", "1", "h3"),  # a renamed copy of c: added by path, not new content
        ]
    )
    counts = compare_manifests(before, after)
    assert (counts.added, counts.removed, counts.changed, counts.unchanged) == (2, 1, 1, 1)
    assert counts.new_content == 2  # h9 and h4
    assert counts.per_class == {
        "0": {"added": 0, "removed": 0, "changed": 1},
        "1": {"added": 2, "removed": 1, "changed": 0},
    }
    assert not compare_manifests(before, before).any


def test_undecodable_rows_do_not_count() -> None:
    before = _manifest([("0/a.png", "0", "h1")])
    after = pd.concat([before, _manifest([("0/x.png", "0", "")]).assign(decode_status="truncated")])
    assert not compare_manifests(before, after).any


def _mmd(p: float) -> MMDResult:
    return MMDResult(0.01, p, 1.0, 100, 100, 1000, False)


def _counts(new: int, unlabeled: int = 0) -> object:
    before = _manifest([("0/a.png", "0", "h0")])
    after = _manifest([("0/a.png", "0", "h0")] + [(f"0/{i}.png", "0", f"n{i}") for i in range(new)])
    loose = _manifest([(f"u/{i}.png", "", f"u{i}") for i in range(unlabeled)]).assign(
        split="unlabeled"
    )
    return compare_manifests(before, pd.concat([after, loose]))


CFG = changed(repo_params().detect_change, min_new_images=100, alpha=0.01, max_label_shift=0.1)


def test_no_champion_retrains() -> None:
    decision = decide(CFG, None, None, None, None)
    assert decision.retrain and decision.reasons == ["no champion yet"]


def test_same_data_is_skipped_as_no_new_data() -> None:
    decision = decide(CFG, "3", None, None, None, same_version=True)
    assert not decision.retrain and decision.reasons[0].startswith(NO_NEW_DATA)
    forced = decide(CFG.model_copy(update={"force": True}), "3", None, None, None, True)
    assert forced.retrain and forced.reasons[0].startswith("forced")


def test_enough_new_images_retrain() -> None:
    many = decide(CFG, "3", _counts(120), _mmd(0.5), None)  # type: ignore[arg-type]
    assert many.retrain and many.triggers == 1
    assert many.reasons[0].startswith("120 new images >= 100")
    assert any(r.startswith("no drift") for r in many.reasons)
    few = decide(CFG, "3", _counts(30), _mmd(0.5), None)  # type: ignore[arg-type]
    assert not few.retrain and few.triggers == 0
    assert any(r.startswith("30 new images < 100") for r in few.reasons)


def test_drift_alone_retrains() -> None:
    decision = decide(CFG, "3", _counts(30), _mmd(0.001), None)  # type: ignore[arg-type]
    assert decision.retrain and decision.reasons[0].startswith("drift detected: p-value 0.0010")
    both = decide(CFG, "3", _counts(150), _mmd(0.001), None)  # type: ignore[arg-type]
    assert both.triggers == 2 and both.reasons[0].startswith("drift detected")


def test_label_shift_alone_retrains() -> None:
    shift = LabelShift(0.25, 0.001, {"0": 0.5, "1": 0.5}, {"0": 0.75, "1": 0.25})
    decision = decide(CFG, "3", _counts(30), None, shift)  # type: ignore[arg-type]
    assert decision.retrain and decision.reasons[0].startswith("label shift 0.250")
    assert any("drift not tested" in r for r in decision.reasons)


def test_unknown_image_list_retrains_on_a_new_version() -> None:
    decision = decide(CFG, "3", None, None, None)
    assert decision.retrain and "its image list is unknown" in decision.reasons[0]


def test_new_unlabeled_images_are_counted_apart() -> None:
    counts = _counts(3, unlabeled=5)
    assert counts.new_content == 8 and counts.new_unlabeled == 5  # type: ignore[attr-defined]


@pytest.mark.parametrize("policy", [ADAPT, ASK, SKIP])
def test_unlabeled_new_data_follows_the_policy(policy: str) -> None:
    cfg = changed(CFG, unlabeled=policy)
    decision = decide(cfg, "3", _counts(0, unlabeled=150), _mmd(0.001), None)  # type: ignore[arg-type]
    assert decision.action == policy and decision.retrain == (policy == ADAPT)
    assert decision.triggers == 2  # drift and the count still say why
    assert decision.reasons[2].startswith("the 150 new images are unlabeled")
    assert f"detect_change.unlabeled: {policy}" in decision.reasons[2]


def test_labeled_new_data_retrains_whatever_the_unlabeled_policy() -> None:
    cfg = changed(CFG, unlabeled=SKIP)
    mixed = decide(cfg, "3", _counts(120, unlabeled=50), _mmd(0.5), None)  # type: ignore[arg-type]
    assert mixed.action == RETRAIN and mixed.retrain
    forced = decide(
        changed(cfg, force=True),
        "3",
        _counts(0, unlabeled=150),
        None,
        None,  # type: ignore[arg-type]
    )
    assert forced.action == RETRAIN
    few = decide(cfg, "3", _counts(0, unlabeled=10), _mmd(0.5), None)  # type: ignore[arg-type]
    assert few.action == SKIP and not any("unlabeled" in r for r in few.reasons)


def test_a_held_adaptation_to_the_same_data_is_not_repeated() -> None:
    decision = decide(CFG, "3", _counts(0, unlabeled=150), _mmd(0.001), None, held="5")  # type: ignore[arg-type]
    assert decision.action == SKIP and not decision.retrain
    assert decision.reasons[0].startswith("v5 was adapted to these 150 unlabeled images")


def test_a_label_for_an_image_known_unlabeled_is_new() -> None:
    before = _manifest([("0/a.png", "0", "h0")])
    before = pd.concat(
        [before, _manifest([("_unlabeled/u.png", "", "hu")]).assign(split="unlabeled")]
    )
    after = pd.concat(
        [before, _manifest([("_labeled/test/3/u.png", "3", "hu")]).assign(split="test")]
    )
    counts = compare_manifests(before, after)
    assert counts.new_content == 1 and counts.new_unlabeled == 0
    assert compare_manifests(before, before).new_content == 0


def _served(p: float = 0.5, confidence: float = 0.9, mix: float = 0.05, images: int = 200):  # type: ignore[no-untyped-def]
    from tlops.evaluate.change import TrafficCheck

    return TrafficCheck(images, 0.0, 1.0, _mmd(p), 0.92, confidence, mix)


def test_traffic_that_moved_while_the_data_did_not_leads_the_reasons_and_trains_nothing() -> None:
    decision = decide(CFG, "3", None, None, None, True, traffic=_served(p=0.001, confidence=0.6))
    assert not decision.retrain and decision.action == SKIP and decision.triggers == 2
    assert decision.reasons[0].startswith("served traffic drift: p-value 0.0010 (200 served")
    assert decision.reasons[1] == (
        "served mean confidence 0.600 vs held-out 0.920: drop +0.320 > 0.1"
    )
    assert decision.reasons[2].startswith("the served images moved away")
    assert "tlops data traffic" in decision.reasons[2]
    assert any(r.startswith(NO_NEW_DATA) for r in decision.reasons)


def test_quiet_traffic_is_a_passed_check_and_a_class_mix_shift_a_trigger() -> None:
    quiet = decide(CFG, "3", None, None, None, True, traffic=_served())
    assert quiet.triggers == 0 and quiet.action == SKIP
    assert any(r.startswith("served traffic drift: p-value 0.5000") for r in quiet.reasons)
    assert any("served class mix shift 0.050 (total variation) <= 0.1" in r for r in quiet.reasons)
    mixed = decide(CFG, "3", None, None, None, True, traffic=_served(mix=0.3))
    assert mixed.triggers == 1 and mixed.reasons[0].startswith("served class mix shift 0.300")


def test_served_triggers_join_the_data_triggers_of_a_retrain() -> None:
    decision = decide(CFG, "3", _counts(150), _mmd(0.5), None, traffic=_served(p=0.001))  # type: ignore[arg-type]
    assert decision.retrain and decision.triggers == 2
    assert decision.reasons[0].startswith("served traffic drift")


def test_too_little_or_unreadable_traffic_is_said_and_decides_nothing() -> None:
    from tlops.evaluate.change import TrafficCheck

    few = decide(CFG, "3", None, None, None, True, traffic=TrafficCheck(7, 0.0, 1.0))
    assert few.triggers == 0
    assert any(
        r.startswith("served traffic: 7 images since the last check < 50") for r in few.reasons
    )
    down = decide(
        CFG, "3", None, None, None, True, traffic=TrafficCheck(0, 0.0, 1.0, error="s3 down")
    )
    assert "served traffic not read: s3 down" in down.reasons
