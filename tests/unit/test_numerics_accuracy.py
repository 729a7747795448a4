"""bf16 must not buy speed with accuracy: fp32 where decisions are read, evidence, the probe.

Nothing here assumes which precision is faster on this machine: the choices are made up, and
bf16 autocast runs on every CPU (emulated where there are no bf16 units: slower, the same
arithmetic).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from tlops.models.evidence import EVIDENCE_FILE, Evidence, lookup, record
from tlops.models.numerics import Choice, Numerics, fall_back, parse

CPU = torch.device("cpu")
FAMILY = "timm:tf_efficientnet_lite0"


def test_the_augmentation_warps_in_fp32_under_bf16_autocast() -> None:
    from tlops.data.tensors import Augment, augment_batch

    x = torch.randn(4, 3, 32, 32)
    aug = Augment(10.0, (0.9, 1.1), 0.08, True)
    plain = augment_batch(x, aug, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = augment_batch(x, aug, torch.Generator().manual_seed(0))
    assert under.dtype == torch.float32
    assert torch.equal(under, plain)  # not a bf16-rounded sampling grid


def test_validation_is_computed_in_fp32_whatever_the_run_trains_in(loop_inputs: Any) -> None:
    from tlops.training.strategies.finetune import FineTune

    model, data, cfg = loop_inputs()
    strategy = FineTune(cfg)
    strategy.prepare(model, data, CPU)
    seen: list[torch.dtype] = []
    model.head.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    model.eval()
    strategy.numerics = Numerics("fp32")
    fp32, _ = strategy.val_logits(model, data, CPU)
    strategy.numerics = Numerics("bf16")
    bf16_run, labels = strategy.val_logits(model, data, CPU)
    assert set(seen) == {torch.float32}
    assert torch.equal(fp32, bf16_run) and len(labels) == data.val_size


def test_evidence_round_trips_and_a_bad_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "evidence.json"
    assert lookup(FAMILY, "bf16", path) is None  # no file: no evidence
    verdict = {"holds": False, "mean_points": -0.9, "worst_points": -1.8, "seeds": [0, 1, 2]}
    record(FAMILY, "bf16", {**verdict, "machine": "a CPU"}, path)
    found = lookup(FAMILY, "bf16", path)
    assert found == Evidence(FAMILY, "bf16", False, -0.9, -1.8, 3, "a CPU")
    assert "bf16 loses" in found.describe() and "-1.80" in found.describe()
    assert (
        lookup(FAMILY, "fp16", path) is None and lookup("torchvision:vgg11", "bf16", path) is None
    )
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"evidence\.json: not the JSON"):
        lookup(FAMILY, "bf16", path)
    path.write_text(json.dumps({FAMILY: {"bf16": {"holds": True}}}))
    with pytest.raises(ValueError, match=re.escape(f"evidence.json: {FAMILY} bf16")):
        lookup(FAMILY, "bf16", path)


def test_the_shipped_evidence_covers_the_benchmarked_families() -> None:
    for family in (FAMILY, "torchvision:resnet18"):
        evidence = lookup(family, "bf16", EVIDENCE_FILE)
        assert evidence is not None and evidence.seeds >= 5, family


def _faster_bf16() -> Choice:
    timings = {
        "fp32+channels_last+eager": 1.0,
        "bf16+channels_last+eager": 0.5,
        "bf16+contiguous+eager": 0.6,
        "fp32+contiguous+eager": 0.9,
    }
    return Choice(parse("bf16+channels_last+eager") or Numerics(), "calibrated", "fastest",
                  timings=timings, speedup=2.0, key="k")  # fmt: skip


def _gate(loop_inputs: Any, evidence: Evidence | None, monkeypatch: Any, epochs: int) -> Choice:
    import tlops.training.calibration as calibration
    from tlops.training.strategies.finetune import FineTune

    monkeypatch.setattr(calibration, "lookup", lambda family, precision: evidence)
    model, data, cfg = loop_inputs()
    strategy = FineTune(cfg.model_copy(update={"epochs": epochs}))
    return calibration._accuracy_gate(_faster_bf16(), strategy, model, data, CPU, 0)


def test_a_family_known_to_lose_accuracy_trains_in_the_fastest_fp32(
    loop_inputs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    loses = Evidence(FAMILY, "bf16", False, -0.9, -1.8, 5, "a CPU")
    choice = _gate(loop_inputs, loses, monkeypatch, epochs=8)
    assert choice.numerics.spec == "fp32+contiguous+eager"  # the fastest fp32 timed
    assert "bf16 loses" in choice.accuracy and choice.probe is None
    assert "fp32 for accuracy (bf16 was 2.00x the default)" in choice.reason
    assert "accuracy: bf16 loses" in choice.describe()


def test_a_family_known_to_hold_keeps_the_faster_precision_without_a_probe(
    loop_inputs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    holds = Evidence(FAMILY, "bf16", True, -0.1, -0.7, 5, "a CPU")
    choice = _gate(loop_inputs, holds, monkeypatch, epochs=8)
    assert choice.numerics.spec == "bf16+channels_last+eager"
    assert "bf16 holds" in choice.accuracy and choice.probe is None


def test_without_evidence_a_short_run_stays_fp32_and_a_long_one_is_probed(
    loop_inputs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = _gate(loop_inputs, None, monkeypatch, epochs=2)
    assert short.numerics.precision == "fp32" and short.probe is None
    assert "no accuracy evidence" in short.accuracy and "1/2 of the run" in short.accuracy
    probed = _gate(loop_inputs, None, monkeypatch, epochs=4)
    assert probed.numerics.spec == "bf16+channels_last+eager"
    assert probed.probe is not None and probed.probe["epoch"] == 0.0
    assert 0.0 <= probed.probe["val_accuracy"] <= 1.0
    assert "fp32 probe epoch" in probed.accuracy and "1/4 of the run" in probed.accuracy


def test_a_bf16_run_behind_the_fp32_probe_falls_back_and_says_so(
    loop_inputs: Any, tmp_path: Path
) -> None:
    from tlops.training.loop import fit
    from tlops.training.strategies.finetune import FineTune

    model, data, cfg = loop_inputs()
    unreachable = {"val_accuracy": 1.5}  # no epoch can reach it: the guard must fire
    outcome = fit(FineTune(cfg), model, data, cfg, tmp_path / "a", "k", CPU, None,
                  Numerics("bf16"), probe=unreachable)  # fmt: skip
    assert outcome.numerics == "fp32+channels_last+eager"
    assert outcome.fallback and "bf16 epoch 1 val_accuracy" in outcome.fallback
    assert "trails the fp32 probe's 1.5000" in outcome.fallback
    reference, data, cfg = loop_inputs()
    pinned = fit(FineTune(cfg), reference, data, cfg, tmp_path / "b", "k", CPU, None, Numerics())
    strip = [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in outcome.history]
    assert strip == [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in pinned.history]
    model, data, cfg = loop_inputs()
    kept = fit(FineTune(cfg), model, data, cfg, tmp_path / "c", "k", CPU, None,
               Numerics("bf16"), probe={"val_accuracy": 0.0})  # fmt: skip
    assert kept.fallback is None and kept.numerics == "bf16+channels_last+eager"


def test_the_console_says_the_choice_its_speed_its_evidence_and_a_fallback() -> None:
    from tlops.cli.summary import _train_lines

    choice = _faster_bf16()
    choice.reason = "fastest of 4 timed, 2.00x the default fp32+channels_last+eager"
    choice.accuracy = "bf16 holds for timm:x (5 seeds)"
    trained = {"strategy": "finetune", "init": "imagenet:x", "best_epoch": 4, "epochs_run": 7,
               "_run": {"train_seconds": 30.0, "numerics_described": choice.describe()},
               "numerics": "fp32+channels_last+eager",
               "fallback": "bf16 epoch 1 val_accuracy 0.8 trails the fp32 probe's 0.9"}  # fmt: skip
    lines = _train_lines(trained)
    assert lines[0] == "train: finetune from imagenet:x, best epoch 4 of 7, 30 s"
    assert lines[1] == (
        "  numerics bf16+channels_last+eager (calibrated: fastest of 4 timed, 2.00x the default "
        "fp32+channels_last+eager; accuracy: bf16 holds for timm:x (5 seeds))"
    )
    assert lines[2] == (
        "  trained in fp32+channels_last+eager after all: bf16 epoch 1 val_accuracy 0.8 "
        "trails the fp32 probe's 0.9"
    )
    assert len(_train_lines({**trained, "fallback": None})) == 2


def test_the_guard_tolerates_noise_not_a_lag() -> None:
    from tlops.training.callbacks import tolerance

    assert tolerance("val_accuracy", 0.9, 1000) == 0.01  # 1 point
    assert tolerance("val_macro_f1", 0.9, 50) == pytest.approx(0.04)  # 2 images of 50
    assert tolerance("val_loss", 0.4, 50) == pytest.approx(0.02)  # 5 %


def test_a_fallback_for_accuracy_is_cached_with_its_reason(tmp_path: Path) -> None:
    cache = tmp_path / "numerics.json"
    choice = _faster_bf16()
    why = "bf16 epoch 1 val_accuracy 0.8000 trails the fp32 probe's 0.9000 by more than 0.0100"
    fall_back(choice, f"{why}; trained again from the start in fp32", cache)
    assert choice.numerics.spec == "fp32+channels_last+eager"
    assert choice.reason == f"fp32 after {why}"
    assert "trails the fp32 probe" in cache.read_text()


def test_the_figures_the_gate_reads_are_computed_in_fp32_on_any_device(
    loop_inputs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tlops.models.inference as inference

    model, data, _ = loop_inputs()
    asked: list[tuple[Any, Any]] = []

    def spy(*args: Any, **kwargs: Any) -> Choice:
        asked.append((args[4], kwargs.get("default")))  # the search, the starting point
        return Choice(Numerics(), "default", "spy")

    monkeypatch.setattr(inference, "choose", spy)
    for device in (CPU, torch.device("cuda")):  # CUDA's own default is mixed precision
        inference.inference_numerics("auto", model, [data.val], 8, device, None, decides=True)
        search, default = asked[-1]
        assert search.precisions == ("fp32",) and default == Numerics("fp32")
    inference.inference_numerics("auto", model, [data.val], 8, CPU, None)
    assert asked[-1][1] is None  # features: the device's own default and precisions


def test_bf16_frozen_computes_the_training_stages_in_fp32_and_the_frozen_ones_in_bf16(
    loop_inputs: Any,
) -> None:
    import copy

    from tlops.models.mixed import fp32_where_training

    model, _, _ = loop_inputs()
    model.freeze(1)  # only the top stage (and the head) trains
    model.train()
    fp32_where_training(model, True)
    top = model.backbone.get_submodule(model.stages[-1][0])
    low = model.backbone.get_submodule(model.stages[1][0])
    out: dict[str, torch.dtype] = {}
    top.register_forward_hook(lambda _m, _i, o: out.__setitem__("top", o.dtype))
    low.register_forward_hook(lambda _m, _i, o: out.__setitem__("low", o.dtype))
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x).float().sum().backward()
        assert torch.is_autocast_enabled("cpu")  # switched back on after the stage
    assert out == {"low": torch.bfloat16, "top": torch.float32}
    model.eval()  # nothing trains: bf16 everywhere
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    assert out == {"low": torch.bfloat16, "top": torch.bfloat16}
    copied = copy.deepcopy(model).train()  # the calibration's copies carry the policy
    fp32_where_training(model, False)  # ... and disarming the original leaves them armed
    with torch.autocast("cpu", dtype=torch.bfloat16):
        copied(x)  # the copy's stages carry the spies too
    assert out == {"low": torch.bfloat16, "top": torch.float32}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.train()(x)
    assert out == {"low": torch.bfloat16, "top": torch.bfloat16}  # disarmed: bf16 everywhere


def test_bf16_frozen_is_a_setting_and_a_training_candidate_only() -> None:
    from tlops.models.numerics import Search

    assert parse("bf16-frozen") == Numerics("bf16-frozen")
    assert parse("bf16-frozen+contiguous+eager") == Numerics("bf16-frozen", False, False)
    with pytest.raises(ValueError, match="bf16-frozen"):
        parse("bf16frozen")
    with torch.autocast("cpu", enabled=False), Numerics("bf16-frozen").autocast(CPU):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    training = Search.on(CPU, images=True, training=True).precisions
    inference = Search.on(CPU, images=True).precisions
    assert "bf16-frozen" not in inference
    assert ("bf16-frozen" in training) == ("bf16" in training)  # only where bf16 is timed
