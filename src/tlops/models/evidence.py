"""Whether a reduced precision is known to hold a model family's accuracy: recorded evidence.

Speed is measured by every ``auto`` calibration; accuracy cannot be, in a few steps. So
``bench/numerics_accuracy.py`` trains each model family it covers in fp32 and in bf16 on the
same seeds, data and schedule, scores both in fp32 and, with ``--record``, writes its verdict
to ``accuracy_evidence.json`` beside this module (committed with the code it measured). A
family is the model's backbone spec (``timm:tf_efficientnet_lite0``); the verdict holds when
bf16's mean test accuracy is within :data:`MEAN_POINTS` of fp32's and no seed is more than
:data:`SEED_POINTS` below.

bf16 is one number format wherever it runs (native units or emulated), so a verdict is not
tied to the machine that produced it; the machine is recorded beside it all the same.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

EVIDENCE_FILE = Path(__file__).with_name("accuracy_evidence.json")
MEAN_POINTS = 0.35  # one test image of the demo's ~284
SEED_POINTS = 1.0


@dataclass(frozen=True)
class Evidence:
    """One family's verdict for one precision, with the figures behind it."""

    family: str
    precision: str
    holds: bool
    mean_points: float  # mean over seeds of (precision - fp32) test accuracy, points
    worst_points: float  # the lowest seed's difference
    seeds: int
    machine: str
    date: str = ""

    def describe(self) -> str:
        """One line: the verdict and its figures."""
        verdict = "holds" if self.holds else "loses"
        return (
            f"{self.precision} {verdict} {self.family}'s accuracy (mean {self.mean_points:+.2f}, "
            f"worst seed {self.worst_points:+.2f} points vs fp32 over {self.seeds} seeds, "
            f"bench/numerics_accuracy.py{f' {self.date}' if self.date else ''})"
        )


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise ValueError(
            f"{path}: not the JSON bench/numerics_accuracy.py writes: {error}"
        ) from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of family -> precision -> verdict")
    return data


def lookup(family: str, precision: str, path: Path = EVIDENCE_FILE) -> Evidence | None:
    """The recorded verdict for ``family`` in ``precision``, None when there is none.

    Raises:
        ValueError: The file is not what the benchmark writes (named in the message).
    """
    entry = _read(path).get(family, {}).get(precision)
    if entry is None:
        return None
    try:
        return Evidence(family=family, precision=precision, **entry)
    except TypeError as error:
        raise ValueError(f"{path}: {family} {precision}: {error}") from error


def record(
    family: str, precision: str, verdict: dict[str, Any], path: Path = EVIDENCE_FILE
) -> Path:
    """Add or replace one verdict (atomically), as the benchmark measured it.

    Args:
        family: The backbone spec.
        precision: ``bf16`` or ``fp16``.
        verdict: ``holds``, ``mean_points``, ``worst_points``, ``seeds`` (count or list),
            ``machine`` and optionally ``date``.
        path: The evidence file to update.

    Returns:
        The evidence file.
    """
    seeds = verdict["seeds"]
    evidence = Evidence(
        family,
        precision,
        bool(verdict["holds"]),
        float(verdict["mean_points"]),
        float(verdict["worst_points"]),
        len(seeds) if isinstance(seeds, list) else int(seeds),
        str(verdict["machine"]),
        str(verdict.get("date", "")),
    )
    data = _read(path)
    entry = {k: v for k, v in asdict(evidence).items() if k not in ("family", "precision")}
    data.setdefault(family, {})[precision] = entry
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
