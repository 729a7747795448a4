"""Numerics: settings, the calibration's decisions, its cache, and the fp32 fallback.

The calibration is tested with made-up timings and a fake clock: nothing here depends on how
fast this machine is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from tlops.config import ConfigError, load_params
from tlops.models.device import machine
from tlops.models.numerics import (
    COMPILE_SECONDS,
    MARGIN,
    Choice,
    Measurement,
    Numerics,
    Search,
    choose,
    default_numerics,
    fall_back,
    parse,
)
from tlops.models.numerics_cache import cache_key, read_cache, write_cache

CPU = torch.device("cpu")
FULL = Search(("fp32", "bf16"), layouts=True, compile=True)
PARTS = {"purpose": "train", "model": "m", "image_size": 64, "batch_size": 64}
REPO = Path(__file__).resolve().parents[2]


class Timer:
    """A measure function with fixed step times per spec, and a clock it advances.

    Timing one candidate takes its 4 steps, its setup (compile) and 1 s of copying.
    """

    def __init__(self, step: dict[str, float], setup: dict[str, float] | None = None) -> None:
        self.step, self.setup, self.now, self.calls = step, setup or {}, 0.0, []

    def clock(self) -> float:
        return self.now

    def measure(self, numerics: Numerics) -> Measurement:
        self.calls.append(numerics.spec)
        seconds = self.step[numerics.spec]
        self.now += 4 * seconds + self.setup.get(numerics.spec, 0.0) + 1.0
        return Measurement(seconds, self.setup.get(numerics.spec, 0.0))


def pick(
    timer: Timer, units: int, cache: Path | None, setting: str = "auto", search: Search = FULL
) -> Any:
    return choose(setting, CPU, units, timer.measure, search, cache, PARTS, timer.clock)


def test_settings_parse_and_bad_ones_are_refused_naming_the_forms() -> None:
    assert parse("auto") is None
    assert parse("bf16") == Numerics("bf16", True, False)
    assert parse("fp16+contiguous+compile") == Numerics("fp16", False, True)
    assert parse(Numerics("bf16", False, True).spec) == Numerics("bf16", False, True)
    with pytest.raises(ValueError, match="expected auto"):
        parse("fp8")
    with pytest.raises(ConfigError, match=r"train\.numerics.*'half' is not a numerics setting"):
        load_params(REPO / "params.yaml", {"train.numerics": "half"})
    for setting in ("bf16-frozen", "bf16-frozen+contiguous+eager"):
        assert load_params(REPO / "params.yaml", {"train.numerics": setting}).train.numerics


def test_the_fastest_candidate_is_chosen_cached_and_reused(tmp_path: Path) -> None:
    cache = tmp_path / "numerics.json"
    timer = Timer(
        {
            "fp32+channels_last+eager": 1.0,
            "bf16+channels_last+eager": 0.5,
            "bf16+contiguous+eager": 0.6,
            "bf16+channels_last+compile": 0.45,
        }
    )
    first = pick(timer, units=20_000, cache=cache)
    # coordinate search: precision, then layout from bf16, then compile from the best so far
    assert timer.calls == [
        "fp32+channels_last+eager",
        "bf16+channels_last+eager",
        "bf16+contiguous+eager",
        "bf16+channels_last+compile",
    ]
    assert (first.source, first.numerics.spec) == ("calibrated", "bf16+channels_last+compile")
    assert first.timings["bf16+channels_last+eager"] == 0.5
    assert first.spent_seconds <= first.budget_seconds
    again = Timer({})  # measuring anything now would raise KeyError
    second = pick(again, units=20_000, cache=cache)
    assert (second.source, second.numerics) == ("cache", first.numerics)
    assert again.calls == [] and second.timings == first.timings
    entry = read_cache(cache, second.key)
    assert entry is not None and entry["machine"] == machine(CPU)


def test_a_pinned_choice_is_respected_without_measuring(tmp_path: Path) -> None:
    cache = tmp_path / "numerics.json"
    pick(Timer({"fp32+channels_last+eager": 1.0, "bf16+channels_last+eager": 0.5}), 180, cache)
    timer = Timer({})
    pinned = pick(timer, 20_000, cache, setting="fp32+contiguous+eager")
    assert (pinned.source, pinned.numerics) == ("pinned", Numerics("fp32", False, False))
    assert timer.calls == []


def test_a_short_run_keeps_the_default_untimed_and_caches_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "numerics.json"
    timer = Timer({})
    short = pick(timer, units=100, cache=cache)
    assert (short.source, short.numerics.spec) == ("default", "fp32+channels_last+eager")
    assert "too short" in short.reason and timer.calls == [] and not cache.exists()


def test_candidates_that_do_not_fit_the_budget_are_skipped(tmp_path: Path) -> None:
    timer = Timer({"fp32+channels_last+eager": 1.0, "bf16+channels_last+eager": 0.5})
    # 180 steps of 1 s: a 9 s budget; timing the default costs 5 s, bf16 an estimated 4 s;
    # then 8 s are spent and neither the other layout (2 s) nor compiling (62 s) fits
    choice = pick(timer, units=180, cache=tmp_path / "n.json")
    assert timer.calls == ["fp32+channels_last+eager", "bf16+channels_last+eager"]
    assert choice.numerics.spec == "bf16+channels_last+eager"
    assert set(choice.skipped) == {"bf16+contiguous+eager", "bf16+channels_last+compile"}


def test_a_win_within_the_noise_margin_does_not_change_the_choice(tmp_path: Path) -> None:
    timer = Timer(
        {
            "fp32+channels_last+eager": 1.0,
            "bf16+channels_last+eager": 0.99,  # 1 % faster: noise
            "fp32+contiguous+eager": 1.5,
            "fp32+channels_last+compile": 0.98,
        }
    )
    choice = pick(timer, units=20_000, cache=tmp_path / "n.json")
    assert choice.numerics.spec == "fp32+channels_last+eager"


def test_compile_is_chosen_only_when_it_pays_back_within_the_run(tmp_path: Path) -> None:
    steps = {"fp32+channels_last+eager": 1.0, "fp32+channels_last+compile": 0.8}
    search = Search(("fp32",), layouts=False, compile=True)
    # 0.2 s saved per step: 3,000 steps save 600 s, more than a 100 s compile...
    timer = Timer(steps, {"fp32+channels_last+compile": 100.0})
    long = pick(timer, 3_000, tmp_path / "a.json", search=search)
    assert long.numerics.compile and long.setup["fp32+channels_last+compile"] == 100.0
    # ... 1,500 steps save 300 s, less than a 400 s compile
    timer = Timer(steps, {"fp32+channels_last+compile": 400.0})
    short = pick(timer, 1_500, tmp_path / "b.json", search=search)
    assert "fp32+channels_last+compile" in short.timings  # timed (the estimate fit the budget)
    assert short.numerics.spec == "fp32+channels_last+eager"  # and rejected
    assert COMPILE_SECONDS < 0.05 * 1_500


def test_a_fallback_is_cached_so_the_next_auto_run_starts_in_fp32(tmp_path: Path) -> None:
    cache = tmp_path / "numerics.json"
    timer = Timer({"fp32+channels_last+eager": 1.0, "bf16+channels_last+eager": 0.5})
    choice = pick(timer, units=180, cache=cache)
    assert choice.numerics.precision == "bf16"
    fall_back(choice, "loss is nan at epoch 0, step 3 in bf16", cache)
    assert choice.numerics.spec == "fp32+channels_last+eager" and choice.fallback
    later = pick(Timer({}), units=180, cache=cache)
    assert (later.source, later.numerics.spec) == ("cache", "fp32+channels_last+eager")
    assert "nan" in (later.fallback or "")


def test_a_corrupt_cache_costs_a_calibration_not_a_run(tmp_path: Path) -> None:
    cache = tmp_path / "numerics.json"
    cache.write_text("{not json")
    assert read_cache(cache, "x") is None
    write_cache(cache, "x", {"numerics": "fp32"})
    assert read_cache(cache, "x") == {"numerics": "fp32"}
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1})
    timer = Timer({"fp32+channels_last+eager": 1.0, "bf16+channels_last+eager": 0.5})
    good = pick(timer, units=180, cache=cache)
    write_cache(cache, good.key, {"numerics": "fp8"})  # hand-edited
    again = pick(Timer(timer.step), units=180, cache=cache)
    assert (again.source, again.numerics.spec) == ("calibrated", "bf16+channels_last+eager")


# --- the loop's fallback, on a real model and tiny data --------------------------------------


def _diverges_in_reduced_precision() -> type:
    from tlops.training.strategies.finetune import FineTune

    class Fragile(FineTune):  # the shape of a bf16 overflow: inf only under autocast
        name = "fragile"

        def loss(self, model: Any, batch: Any, generator: torch.Generator) -> torch.Tensor:
            loss = super().loss(model, batch, generator)
            if torch.is_autocast_enabled("cpu"):
                return loss * float("inf")
            return loss

    return Fragile


def test_a_non_finite_bf16_loss_falls_back_to_what_an_fp32_run_gives(
    loop_inputs: Any, tmp_path: Path
) -> None:
    from tlops.training.loop import fit
    from tlops.training.strategies.finetune import FineTune

    fragile = _diverges_in_reduced_precision()
    model, data, cfg = loop_inputs()
    outcome = fit(fragile(cfg), model, data, cfg, tmp_path / "a", "k", CPU, None, Numerics("bf16"))
    assert outcome.numerics == "fp32+channels_last+eager"
    assert outcome.fallback and "inf" in outcome.fallback and "bf16" in outcome.fallback
    reference, data, cfg = loop_inputs()
    pinned = fit(FineTune(cfg), reference, data, cfg, tmp_path / "b", "k", CPU, None, Numerics())
    assert pinned.fallback is None
    strip = [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in outcome.history]
    assert strip == [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in pinned.history]
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_a_non_finite_fp32_loss_is_an_error(loop_inputs: Any, tmp_path: Path) -> None:
    from tlops.training.loop import NonFiniteLoss, fit
    from tlops.training.strategies.finetune import FineTune

    class Broken(FineTune):
        def loss(self, model: Any, batch: Any, generator: torch.Generator) -> torch.Tensor:
            return super().loss(model, batch, generator) * float("nan")

    model, data, cfg = loop_inputs()
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at epoch 0, step 0 in fp32.*train\.lr"):
        fit(Broken(cfg), model, data, cfg, tmp_path / "c", "k", CPU)


def test_a_checkpoint_of_other_numerics_is_not_resumed(loop_inputs: Any, tmp_path: Path) -> None:
    from tlops.training.loop import fit
    from tlops.training.strategies.finetune import FineTune

    model, data, cfg = loop_inputs()
    fit(FineTune(cfg), model, data, cfg, tmp_path / "ckpt", "k", CPU, None, Numerics("bf16"))
    model, data, cfg = loop_inputs()
    other = fit(FineTune(cfg), model, data, cfg, tmp_path / "ckpt", "k", CPU, None, Numerics())
    assert other.resumed_from_epoch is None


def _replay(search: Search, choice: Choice) -> tuple[list[str], Numerics]:
    """What a calibration promises, replayed on the timings it recorded.

    Each stage's candidates start from the previous stage's winner: the precisions, then the
    other layout, then compiling; a candidate replaces the best only when ``MARGIN`` faster. No
    precision is assumed to win: which one does is read from the recorded timings, so this holds
    on a CPU with bf16 units (AMX, AVX512-BF16) and on one without.

    Returns:
        The specs to be timed, in order (skipped ones left out), and the choice to be kept.
    """
    best = default_numerics(CPU)
    order = [best.spec]
    stages: list[Callable[[Numerics], list[Numerics]]] = [
        lambda b: [replace(b, precision=p) for p in search.precisions if p != b.precision]
    ]
    if search.layouts:
        stages.append(lambda b: [replace(b, channels_last=not b.channels_last)])
    if search.compile:
        stages.append(lambda b: [replace(b, compile=True)])
    for stage in stages:
        for candidate in stage(best):
            if candidate.spec in choice.skipped:
                continue
            order.append(candidate.spec)
            # eager candidates have no setup time: the whole step's totals compare as steps do
            if choice.timings[candidate.spec] < choice.timings[best.spec] * (1 - MARGIN):
                best = candidate
    return order, best


def test_a_real_calibration_times_copies_and_leaves_the_model_alone(
    loop_inputs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tlops.training.calibration as train_numerics
    from tlops.training.calibration import training_numerics
    from tlops.training.strategies.finetune import FineTune

    # compile fits the budget only on a slow (loaded) machine, where it then costs minutes:
    # keep it out, so what this test does does not depend on how busy the machine is
    monkeypatch.setattr("tlops.models.numerics.COMPILE_SECONDS", 1e9)
    timed: list[str] = []
    real_measure = train_numerics._measure

    def recording(*args: Any) -> Callable[[Numerics], Measurement]:
        measure = real_measure(*args)

        def record(numerics: Numerics) -> Measurement:
            timed.append(numerics.spec)
            return measure(numerics)

        return record

    monkeypatch.setattr(train_numerics, "_measure", recording)
    # the timings alone decide here (the accuracy gate is tests/unit/test_numerics_accuracy.py)
    monkeypatch.setattr(train_numerics, "lookup", lambda family, precision: None)

    model, data, cfg = loop_inputs()
    long = cfg.model_copy(update={"epochs": 2_000})  # long enough to be worth calibrating
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cache = tmp_path / "numerics.json"
    choice = training_numerics("auto", FineTune(long), model, data, CPU, cache)
    assert choice.source == "calibrated", choice
    search = Search.on(CPU, images=True, training=True)
    expected, kept = _replay(search, choice)
    # every stage timed from the previous stage's winner, in order, each candidate once
    assert timed == expected, (timed, choice.timings)
    assert set(choice.timings) == set(timed)
    assert choice.numerics == kept, choice  # the fastest beyond the noise margin
    # within the budget every eager candidate is timed; a compile (1e9 s here) never fits
    assert set(choice.skipped) == ({replace(kept, compile=True).spec} if search.compile else set())
    assert all(seconds > 0 for seconds in choice.timings.values())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    timed.clear()
    again = training_numerics("auto", FineTune(long), model, data, CPU, cache)
    assert (again.source, again.numerics, timed) == ("cache", choice.numerics, [])
    other_batch = long.model_copy(update={"batch_size": 4})
    assert training_numerics("auto", FineTune(other_batch), model, data, CPU, cache).source != (
        "cache"
    )
