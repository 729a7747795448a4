"""The vocabulary of a step declaration: ports, arguments, caching, resources, tracking.

A :class:`StepSpec` says everything a runner needs to call a step without knowing it: its
name, the params keys it reads, its typed inputs and outputs, its scalar arguments, whether
KFP may cache it, its resource class, its part in the MLflow run, and its ``run``. Each step
module (``tlops.steps.<name>``) holds its own as ``STEP``. The KFP component
signature, the ``tlops step`` command, the dvc.yaml stage and the documentation's step table are
derived from it (``tlops generate``; a test fails when they drift).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from tlops import plugins

# KFP artifact types a port can have (names of kfp.dsl classes).
ArtifactKind = Literal[
    "Dataset", "Model", "Artifact", "Metrics", "ClassificationMetrics", "HTML", "Markdown"
]
# How a file of a port is kept by DVC: a cached out, an uncached out, metrics or plots.
FileRole = Literal["out", "uncached", "metrics", "plots"]


class Tracking(StrEnum):
    """A step's part in the pipeline's MLflow run (see :mod:`tlops.tracking.lifecycle`)."""

    NONE = "none"  # never touches MLflow: it may be cached
    FAILURE = "failure"  # records a FAILED run with its report when it fails, nothing otherwise
    OPENS = "opens"  # opens the run and logs what its inputs carry (versions, reports)
    JOINS = "joins"  # logs into the run its inputs came from
    CLOSES = "closes"  # joins, then closes the run as FINISHED


class StepFailure(RuntimeError):
    """A step refused its input and wrote a report saying why (e.g. data validation)."""

    def __init__(self, message: str, report_dir: Path) -> None:
        super().__init__(message)
        self.report_dir = report_dir


@dataclass(frozen=True)
class Port:
    """A directory a step reads or writes, and the KFP artifact type it travels as.

    Args:
        name: The port's name (KFP parameter, CLI option ``--<name>``).
        kind: KFP artifact type.
        help: One line for the CLI and the component docstring.
        producer: For an input, the ``(step, port)`` it comes from.
        domain: For an input from a per-domain step, which domain (``target``/``source``).
        optional: An input the step can do without (given only when the strategy needs it).
        files: An output's files with their DVC roles; empty: the whole directory is one out.
        view: An output only KFP's UI shows (metrics, confusion matrix, HTML, Markdown); DVC and
            the CLI have no such directory.
    """

    name: str
    kind: ArtifactKind
    help: str
    producer: tuple[str, str] | None = None
    domain: str | None = None
    optional: bool = False
    files: Mapping[str, FileRole] = field(default_factory=dict)
    view: bool = False


@dataclass(frozen=True)
class Arg:
    """A scalar (string) argument of a step."""

    name: str
    help: str
    default: str = ""


@dataclass(frozen=True)
class StepSpec:
    """Everything a runner needs to call a step; see the module docstring."""

    name: str
    help: str
    params: tuple[str, ...]  # params.yaml keys it reads (sections or dotted keys)
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    code: tuple[str, ...]  # library modules it runs, beside its own (dvc.yaml deps)
    # the step's code: run(params, io) -> StepResult, in the step's own module
    run: Callable[[Any, StepIO], StepResult] = field(repr=False, compare=False)
    args: tuple[Arg, ...] = ()
    cacheable: bool = False
    resources: Literal["cpu", "gpu"] = "cpu"
    tracking: Tracking = Tracking.NONE
    per_domain: bool = False  # runs once per data domain (dvc.yaml foreach over params `data`)
    # a string the KFP component returns, for the pipeline's control flow (dsl.If); its help
    returns: str | None = None
    # a stage of dvc.yaml; False for steps of the retraining pipeline only (DVC has no dsl.If)
    dvc: bool = True
    # where a step outside dvc.yaml runs, for the docs' step table (None: the retraining pipeline)
    placement: str | None = None
    # the params model of a section only this step reads (params.yaml `<name>:`), declared here
    # rather than in tlops.config; Params validates it (see tlops.plugins)
    section: type[BaseModel] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.section is not None:
            plugins.register_step_section(self.name, self.section)

    def port(self, name: str) -> Port:
        """The input or output port called ``name``."""
        for port in (*self.inputs, *self.outputs):
            if port.name == name:
                return port
        raise KeyError(f"step {self.name} has no port {name!r}")

    @property
    def dirs(self) -> tuple[Port, ...]:
        """The output ports that are directories (not KFP-only views)."""
        return tuple(p for p in self.outputs if not p.view)


@dataclass
class StepIO:
    """What a step's ``run`` receives besides params: its directories and arguments.

    Args:
        inputs: Input port -> directory (an optional input may be missing).
        outputs: Output directory port -> directory (written all at once, or not at all).
        args: Scalar arguments.
        run: The MLflow run to log into (tracked steps), else None.
        progress: Called with the number of items done (images decoded...).
    """

    inputs: dict[str, Path]
    outputs: dict[str, Path]
    args: dict[str, str] = field(default_factory=dict)
    run: Any = None  # tlops.tracking.lifecycle.RunLog, typed loosely to keep this module light
    progress: Callable[[int], None] | None = None


@dataclass
class StepResult:
    """What a step returns to its runner.

    Args:
        summary: One line for the console.
        metadata: Output port -> metadata for the KFP artifact (data version, classes...).
        metrics: Scalars for a ``Metrics`` view.
        confusion: ``(classes, matrix)`` for a ``ClassificationMetrics`` view.
        views: View port -> a file whose content the view shows (HTML or Markdown).
        value: What the KFP component returns (steps declared with ``returns``).
        finished: The step ended the pipeline's MLflow run (nothing downstream will run).
    """

    summary: str
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    confusion: tuple[list[str], list[list[int]]] | None = None
    views: dict[str, Path] = field(default_factory=dict)
    value: str = ""
    finished: bool = False
