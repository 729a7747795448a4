"""How every runner calls a step: ``tlops step``, dvc.yaml stages and KFP components.

:func:`execute` checks the inputs against the step's declaration, gives the step its MLflow
run as the declaration says (:mod:`tlops.tracking.lifecycle`), times it, and leaves a record
next to its outputs. :func:`run_component` maps KFP artifacts onto it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tlops.config import Params, params_from_json
from tlops.runner.spec import StepFailure, StepIO, StepResult, StepSpec, Tracking
from tlops.runtime import is_follower
from tlops.tracking import lifecycle


def _check_inputs(spec: StepSpec, inputs: Mapping[str, Path]) -> dict[str, Path]:
    known = {port.name for port in spec.inputs}
    unknown = sorted(set(inputs) - known)
    if unknown:
        raise ValueError(f"step {spec.name}: no input {unknown[0]!r} (inputs: {sorted(known)})")
    for port in spec.inputs:
        path = inputs.get(port.name)
        if path is None:
            if not port.optional:
                raise ValueError(f"step {spec.name}: input {port.name!r} is required")
            continue
        if not path.is_dir():
            producer = f" (an output of {port.producer[0]})" if port.producer else ""
            raise FileNotFoundError(
                f"{path}: input {port.name!r} of {spec.name} not found{producer}"
            )
    return dict(inputs)


def execute(
    spec: StepSpec,
    params: Params,
    inputs: Mapping[str, Path],
    outputs: Mapping[str, Path],
    args: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> StepResult:
    """Run the step ``spec`` declares, as its declaration says.

    Args:
        spec: The step's declaration (``tlops.steps.spec_of(name)``).
        params: Resolved params.
        inputs: Input port -> directory.
        outputs: Output directory port -> directory.
        args: Scalar arguments (declared defaults fill the rest).
        progress: Progress callback for long loops.

    Returns:
        The step's result.

    Raises:
        ValueError: An unknown or missing port or argument.
        FileNotFoundError: An input directory does not exist.
        Whatever the step raised, after its MLflow run (if any) is marked FAILED.
    """
    checked = _check_inputs(spec, inputs)
    missing = [port.name for port in spec.dirs if port.name not in outputs]
    if missing:
        raise ValueError(f"step {spec.name}: output {missing[0]!r} is required")
    resolved_args = _resolve_args(spec, args or {})
    if is_follower():
        return _follow(params, spec, checked, resolved_args, progress)
    run = _run_of(spec, params, checked)
    started = time.perf_counter()
    io = StepIO(checked, {p.name: outputs[p.name] for p in spec.dirs}, resolved_args, run, progress)
    try:
        result: StepResult = spec.run(params, io)
    except BaseException as exc:
        _record_failure(spec, params, run, exc)
        raise
    _record(spec, io, result, time.perf_counter() - started)
    return result


def _resolve_args(spec: StepSpec, args: Mapping[str, str]) -> dict[str, str]:
    declared = {arg.name: arg.default for arg in spec.args}
    unknown = sorted(set(args) - set(declared))
    if unknown:
        raise ValueError(
            f"step {spec.name}: no argument {unknown[0]!r} (arguments: {sorted(declared)})"
        )
    return {**declared, **args}


def _run_of(spec: StepSpec, params: Params, inputs: Mapping[str, Path]) -> lifecycle.RunLog | None:
    """The MLflow run the step logs into, as its declaration says (None: it logs nothing)."""
    if spec.tracking == Tracking.OPENS and os.environ.get(lifecycle.RUN_ID_ENV):
        return lifecycle.join_run(params, inputs)  # the launcher recorded the inputs
    if spec.tracking == Tracking.OPENS:
        # a run already opened upstream (the retraining pipeline's detect_change) is continued
        run = lifecycle.join_run(params, inputs)
        if run is None:
            return lifecycle.open_run(params, inputs)
        lifecycle.record_inputs(run, inputs)
        return run
    if spec.tracking in (Tracking.JOINS, Tracking.CLOSES):
        return lifecycle.join_run(params, inputs)
    return None


def _record(spec: StepSpec, io: StepIO, result: StepResult, seconds: float) -> None:
    """The step's record beside each output, its time in the run; a closing step closes it."""
    domain = None
    if spec.per_domain:  # from the argument, or from what the step found in its input
        found = [md.get("domain") for md in result.metadata.values() if md.get("domain")]
        domain = io.args.get("domain") or (found[0] if found else None)
    for port in spec.dirs:
        lifecycle.write_step_record(io.outputs[port.name], spec.name, seconds, domain)
        if io.run is not None:
            io.run.stamp(io.outputs[port.name])
    if io.run is not None:
        io.run.metrics({f"step_seconds.{spec.name}": seconds})
        if spec.tracking == Tracking.CLOSES or result.finished:
            io.run.close(ok=True)


def _follow(
    params: Params,
    spec: StepSpec,
    inputs: Mapping[str, Path],
    args: Mapping[str, str],
    progress: Callable[[int], None] | None,
) -> StepResult:
    """A data-parallel process other than rank 0: it computes, and logs and writes nothing.

    Its outputs go to a scratch folder removed afterwards (the step writes only on rank 0).
    """
    scratch = Path(tempfile.mkdtemp(prefix=f"tlops-{spec.name}-rank-"))
    try:
        outputs = {p.name: scratch / p.name for p in spec.dirs}
        io = StepIO(dict(inputs), outputs, dict(args), None, progress)
        result: StepResult = spec.run(params, io)
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _record_failure(
    spec: StepSpec, params: Params, run: lifecycle.RunLog | None, error: BaseException
) -> None:
    """Mark the run FAILED (or record a failed validation), never hiding the step's error."""
    try:
        if run is not None:
            run.fail(error)
        elif spec.tracking == Tracking.FAILURE and isinstance(error, StepFailure):
            lifecycle.record_failure(params, spec.name, error, [error.report_dir])
    except Exception as tracking_error:  # an unreachable server must not mask the cause
        print(
            f"warning: could not record the failure of {spec.name} in MLflow: {tracking_error}",
            file=sys.stderr,
        )


def run_component(
    spec: StepSpec, params_json: str, artifacts: Mapping[str, Any], **args: str
) -> str:
    """The body of every KFP component: artifacts (``.path``, ``.metadata``) in and out.

    Args:
        spec: The step's declaration.
        params_json: The resolved params.yaml as JSON (the pipeline's ``params``).
        artifacts: Port -> KFP artifact (None for an optional input not given).
        **args: The step's scalar arguments.

    Returns:
        The step's ``value`` (what a component declared with ``returns`` gives the pipeline).
    """
    os.environ.setdefault(lifecycle.RUNNER_ENV, "kfp")
    params = params_from_json(params_json)
    inputs = {
        port.name: Path(artifacts[port.name].path)
        for port in spec.inputs
        if artifacts.get(port.name) is not None
    }
    outputs = {port.name: Path(artifacts[port.name].path) for port in spec.dirs}
    try:
        result = execute(spec, params, inputs, outputs, args)
    except StepFailure as exc:
        _publish_views(spec, artifacts, _failure_views(exc))
        raise
    for port, metadata in result.metadata.items():
        artifacts[port].metadata.update(metadata)
    _publish_views(spec, artifacts, result)
    return result.value


def _failure_views(exc: StepFailure) -> StepResult:
    summary = exc.report_dir / "summary.md"
    return StepResult(str(exc), views={"summary": summary} if summary.is_file() else {})


def _publish_views(spec: StepSpec, artifacts: Mapping[str, Any], result: StepResult) -> None:
    for port in spec.outputs:
        if not port.view:
            continue
        artifact = artifacts[port.name]
        if port.kind == "Metrics":
            for key, value in result.metrics.items():
                artifact.log_metric(key, float(value))
        elif port.kind == "ClassificationMetrics" and result.confusion is not None:
            artifact.log_confusion_matrix(*result.confusion)
        elif port.name in result.views:
            shutil.copy(result.views[port.name], artifact.path)
