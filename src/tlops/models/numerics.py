"""The numerics a step computes with: precision, memory layout, torch.compile; pinned or timed.

No fixed rule is fastest: on a CPU with bf16 units (AMX, AVX512-BF16) bf16 autocast can speed
a ResNet up yet slow depthwise convolutions down; on a CPU without them bf16 is emulated and
slower everywhere (bench/train_speed.py); on a GPU the gain depends on the model and the input
size. So ``auto`` measures.

A setting (``train.numerics``, ``extract_features.numerics``, ``evaluate.numerics``) is
``auto``, a precision (``fp32``, ``bf16``, ``fp16``: channels-last, eager) or a full choice as
logged by an earlier run, ``<precision>+<channels_last|contiguous>+<eager|compile>``, which
pins it for exact reproduction.

``auto`` (:func:`choose`):

1. A choice cached for the same key (model, image size, batch, strategy, machine) is reused:
   no calibration.
2. A step shorter than ``2 * (WARMUP + TIMED) / BUDGET_FRACTION`` (160) steps or batches
   keeps the device default, untimed. Otherwise the default is timed (``WARMUP`` untimed
   steps, then the median of ``TIMED`` steps), which also estimates the step's compute time.
   The calibration budget is ``BUDGET_FRACTION`` (5 %) of that estimate, the default's own
   timing included; a candidate whose estimated cost does not fit in what is left of it is
   not tried (if none is, the run keeps the default and says so).
3. Coordinate search, each stage from the best so far: the precisions the device supports (bf16
   autocast on CPUs with bf16 units and GPUs that have it, else fp16 with a gradient scaler on
   GPUs), then the other memory layout, then ``torch.compile`` (tried only when
   ``COMPILE_SECONDS`` fits in the budget: a cold compile of the training step took 44 s
   (ResNet-18) and 84 s (EfficientNet-Lite0) on a 2-core CPU: bench/step_parts.py). A candidate
   replaces the best when its time over the whole step (compile time included) is ``MARGIN`` (3
   %) lower: timing noise does not flip choices.
4. The choice and every candidate's timing are cached and returned for MLflow.
5. For training, a reduced precision the timings favour is then kept only on accuracy
   evidence or behind an fp32 probe (:mod:`tlops.training.calibration`); figures a decision
   reads (validation, evaluate's metrics) are computed in fp32 whatever is faster.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from tlops.config import NUMERICS_FORMS
from tlops.layout import NUMERICS_CACHE
from tlops.models.device import bf16_units, can_compile, machine, precisions
from tlops.models.numerics_cache import cache_key, read_cache, write_cache

AUTO = "auto"
# bf16-frozen: bf16 autocast in the frozen stages, fp32 in the stages that train
# (tlops.models.mixed: why); a training precision only
PRECISIONS = ("fp32", "bf16", "bf16-frozen", "fp16")
LAYOUTS = {"channels_last": True, "contiguous": False}
MODES = {"eager": False, "compile": True}
BUDGET_FRACTION = 0.05
MARGIN = 0.03
COMPILE_SECONDS = 60.0
WARMUP = 1
TIMED = 3
CACHE_FILE = NUMERICS_CACHE


@dataclass(frozen=True)
class Numerics:
    """How a model computes: autocast precision, memory layout of its inputs, compiled or not."""

    precision: str = "fp32"
    channels_last: bool = True
    compile: bool = False

    @property
    def spec(self) -> str:
        """The pinnable form, e.g. ``bf16+channels_last+eager``."""
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"{self.precision}+{layout}+{'compile' if self.compile else 'eager'}"

    @property
    def memory_format(self) -> torch.memory_format:
        """The memory format of the model and its input batches."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def needs_scaler(self) -> bool:
        """fp16 gradients underflow without a loss scaler; bf16 has fp32's range."""
        return self.precision == "fp16"

    def autocast(self, device: torch.device) -> AbstractContextManager[Any]:
        """The autocast context for this precision on ``device`` (disabled for fp32)."""
        if self.precision == "fp32":
            return torch.autocast(device.type, enabled=False)
        dtype = torch.bfloat16 if self.precision.startswith("bf16") else torch.float16
        return torch.autocast(device.type, dtype=dtype)


def parse(setting: str) -> Numerics | None:
    """The pinned :class:`Numerics` of a setting, None for ``auto``.

    Raises:
        ValueError: Not a setting (the message lists the accepted forms).
    """
    if setting == AUTO:
        return None
    parts = setting.split("+")
    if len(parts) == 1 and parts[0] in PRECISIONS:
        return Numerics(parts[0])
    if len(parts) == 3 and parts[0] in PRECISIONS and parts[1] in LAYOUTS and parts[2] in MODES:
        return Numerics(parts[0], LAYOUTS[parts[1]], MODES[parts[2]])
    raise ValueError(f"numerics {setting!r}: expected {NUMERICS_FORMS}")


def default_numerics(device: torch.device) -> Numerics:
    """What a step uses without calibration: mixed precision on CUDA, fp32 on CPU."""
    if device.type == "cuda":
        return Numerics("bf16" if bf16_units(device) else "fp16")
    return Numerics("fp32")


@dataclass(frozen=True)
class Measurement:
    """One candidate timed: seconds per step (median) and the one-off setup (compile) time."""

    step_seconds: float
    setup_seconds: float = 0.0


@dataclass
class Choice:
    """The numerics a step runs with, why, and what was measured to decide."""

    numerics: Numerics
    source: str  # pinned | cache | calibrated | default
    reason: str
    timings: dict[str, float] = field(default_factory=dict)  # spec -> seconds per step
    setup: dict[str, float] = field(default_factory=dict)  # spec -> compile seconds
    skipped: dict[str, str] = field(default_factory=dict)  # spec -> why it was not timed
    budget_seconds: float = 0.0
    spent_seconds: float = 0.0
    fallback: str | None = None  # set when reduced precision diverged and fp32 took over
    key: str | None = None  # the cache entry (None for a pinned choice)
    speedup: float | None = None  # the whole step's time, the default's over the choice's
    accuracy: str = ""  # why a reduced precision may be trusted (or was not): the evidence
    probe: dict[str, float] | None = None  # the fp32 probe's first validation row, if run

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``numerics`` as its spec."""
        return {**asdict(self), "numerics": self.numerics.spec}

    def describe(self) -> str:
        """One line for the console and the logs."""
        accuracy = f"; accuracy: {self.accuracy}" if self.accuracy else ""
        return f"numerics {self.numerics.spec} ({self.source}: {self.reason}{accuracy})"


@dataclass(frozen=True)
class Search:
    """What may be tried on a device for a step."""

    precisions: tuple[str, ...]
    layouts: bool  # image inputs: channels-last vs contiguous matters
    compile: bool

    @classmethod
    def on(
        cls, device: torch.device, images: bool, compile_: bool = True, training: bool = False
    ) -> Search:
        """The search on ``device``; ``images``: the model eats image batches (layout matters).

        ``training``: also ``bf16-frozen`` where bf16 is a candidate (in inference nothing
        trains, so it would be bf16 again).
        """
        found = precisions(device)
        if training and "bf16" in found:
            found.append("bf16-frozen")
        return cls(tuple(found), images, compile_ and can_compile(device))


def _stages(search: Search) -> Iterator[Callable[[Numerics], list[Numerics]]]:
    yield lambda b: [replace(b, precision=p) for p in search.precisions if p != b.precision]
    if search.layouts:
        yield lambda b: [replace(b, channels_last=not b.channels_last)]
    if search.compile:
        yield lambda b: [] if b.compile else [replace(b, compile=True)]


def choose(
    setting: str,
    device: torch.device,
    units: int,
    measure: Callable[[Numerics], Measurement],
    search: Search,
    cache_file: Path | None,
    key_parts: dict[str, Any],
    clock: Callable[[], float] = time.perf_counter,
    default: Numerics | None = None,
) -> Choice:
    """Resolve a numerics setting (see the module docstring for ``auto``).

    Args:
        setting: The params value (``auto`` or a pinned form).
        device: Where the step computes (its default and supported precisions).
        units: Steps (or batches) the whole step will run: the budget is a fraction of it.
        measure: Times one candidate (``WARMUP`` + ``TIMED`` units).
        search: The candidates allowed here.
        cache_file: Where choices are cached (None: no cache).
        key_parts: What the choice depends on besides the machine (model, size, batch...).
        clock: Seconds (tests pass a fake one).
        default: Where the search starts (None: the device's, :func:`default_numerics`).

    Returns:
        The choice with its source, reason and the timings behind it.
    """
    pinned = parse(setting)
    if pinned is not None:
        return Choice(pinned, "pinned", f"numerics: {setting}")
    key = cache_key({**key_parts, "machine": machine(device)})
    cached = _cached(read_cache(cache_file, key), key)
    if cached is not None:
        return cached
    default = default or default_numerics(device)
    untimed = _untimed(default, search, units, key)
    if untimed is not None:
        return untimed
    choice = _calibrate(default, units, measure, search, clock, key)
    if choice.source == "calibrated":
        _remember(cache_file, choice, {"parts": key_parts, "machine": machine(device)})
    return choice


def _cached(entry: dict[str, Any] | None, key: str) -> Choice | None:
    """The choice a cache entry holds, None when there is none or it is not one."""
    if entry is None:
        return None
    try:
        cached = parse(str(entry["numerics"]))
    except (KeyError, ValueError):
        return None  # an entry no version of tlops wrote: calibrate again
    if cached is None:
        return None
    return Choice(
        cached,
        "cache",
        f"calibrated earlier on this machine: {entry.get('reason', '')}",
        timings=dict(entry.get("timings", {})),
        setup=dict(entry.get("setup", {})),
        fallback=entry.get("fallback"),
        key=key,
        speedup=entry.get("speedup"),
    )


def _untimed(default: Numerics, search: Search, units: int, key: str) -> Choice | None:
    """The device default when nothing is worth timing, None when a calibration may run."""
    candidates = [c for stage in _stages(search) for c in stage(default)]
    if not candidates:
        return Choice(default, "default", "the only candidate on this device", key=key)
    if units * BUDGET_FRACTION < 2 * (WARMUP + TIMED):
        # timing the default and one candidate alone would cost more than the budget
        return Choice(
            default,
            "default",
            f"too short to calibrate: {units} steps, timing 2 candidates within "
            f"{BUDGET_FRACTION:.0%} needs {math.ceil(2 * (WARMUP + TIMED) / BUDGET_FRACTION)}",
            key=key,
        )
    return None


def _total(choice: Choice, spec: str, units: int) -> float:
    """The whole step's compute time with a timed candidate, its compile time included."""
    return choice.timings[spec] * units + choice.setup.get(spec, 0.0)


def _calibrate(
    default: Numerics,
    units: int,
    measure: Callable[[Numerics], Measurement],
    search: Search,
    clock: Callable[[], float],
    key: str,
) -> Choice:
    """Time the default, then search from it within the budget its timing sets.

    Returns:
        The fastest (source ``calibrated``), or the default when no candidate fit the budget.
    """
    start = clock()
    first = measure(default)
    choice = Choice(default, "default", "", key=key)
    choice.timings[default.spec] = first.step_seconds
    choice.budget_seconds = BUDGET_FRACTION * first.step_seconds * units
    best = _coordinate_search(choice, default, units, measure, search, lambda: clock() - start)
    choice.spent_seconds = clock() - start
    if len(choice.timings) == 1:
        choice.reason = (
            f"too short to calibrate within {BUDGET_FRACTION:.0%} of its "
            f"~{first.step_seconds * units:.0f} s: the device default"
        )
        return choice
    choice.numerics, choice.source = best, "calibrated"
    ratio = _total(choice, default.spec, units) / _total(choice, best.spec, units)
    choice.speedup = round(ratio, 3)
    choice.reason = (
        f"fastest of {len(choice.timings)} timed, {ratio:.2f}x the default "
        f"{default.spec}, calibration {choice.spent_seconds:.1f} s"
    )
    return choice


def _coordinate_search(
    choice: Choice,
    best: Numerics,
    units: int,
    measure: Callable[[Numerics], Measurement],
    search: Search,
    elapsed: Callable[[], float],
) -> Numerics:
    """Each stage's candidates from the best so far; records timings and skips in ``choice``.

    Returns:
        The best: a candidate replaces it only when ``MARGIN`` faster over the whole step.
    """
    for stage in _stages(search):
        for candidate in stage(best):
            if candidate.spec in choice.timings:
                continue
            cost = (WARMUP + TIMED) * choice.timings[best.spec]
            cost += COMPILE_SECONDS if candidate.compile else 0.0
            if elapsed() + cost > choice.budget_seconds:
                choice.skipped[candidate.spec] = (
                    f"estimated {cost:.1f} s exceeds what is left of the "
                    f"{choice.budget_seconds:.1f} s budget"
                )
                continue
            measured = measure(candidate)
            choice.timings[candidate.spec] = measured.step_seconds
            if candidate.compile:
                choice.setup[candidate.spec] = measured.setup_seconds
            if _total(choice, candidate.spec, units) < _total(choice, best.spec, units) * (
                1 - MARGIN
            ):
                best = candidate
    return best


def _remember(cache_file: Path | None, choice: Choice, context: dict[str, Any]) -> None:
    if choice.key is not None:
        skip = ("source", "key", "accuracy", "probe")  # decided per run, from the evidence
        entry = {k: v for k, v in choice.as_dict().items() if k not in skip}
        write_cache(cache_file, choice.key, {**entry, **context})


def fall_back(choice: Choice, why: str, cache_file: Path | None) -> None:
    """Switch a choice to fp32 after a reduced-precision failure and cache that (``auto`` only).

    A failure: a non-finite loss, or a first epoch that fell behind the fp32 probe's.

    Later ``auto`` runs with the same key then train in fp32 from the start, and a run resumed
    after a kill finds the fp32 checkpoint it was writing.
    """
    choice.fallback = why
    if choice.source == "pinned":
        return  # the params say what to try; the next run tries it again
    choice.reason = f"fp32 after {why.split(';')[0]}"
    choice.numerics = replace(choice.numerics, precision="fp32")
    entry = read_cache(cache_file, choice.key) if choice.key else None
    _remember(
        cache_file, choice, {k: v for k, v in (entry or {}).items() if k in ("parts", "machine")}
    )


def median_seconds(times: list[float]) -> float:
    """The median of timed steps (robust to one slow step on a shared machine)."""
    return statistics.median(times) if times else float("nan")
