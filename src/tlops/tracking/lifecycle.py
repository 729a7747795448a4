"""The MLflow run of a pipeline run, from start to end: the one module every runner goes through.

One MLflow run per trained model. The step that trains opens it (:func:`open_run`): it logs the
resolved params, the tags (git sha, backbone, strategy, runner, data versions) and what its
inputs carry (validation summaries, the seconds each upstream step took); every later step
finds the run id in the directory it came from (:data:`RUN_FILE`), logs into it
(:func:`join_run`), and the last one closes it (:meth:`RunLog.close`). Steps that may be cached
never see a run id, so a cached result can never point at an old run. A step that fails marks
the run FAILED; a validation failure, which happens before any run exists, is recorded as a
FAILED run of its own with its report (:func:`record_failure`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlops.config import Params
from tlops.io import read_json, write_json
from tlops.layout import DOCS_DIR, INGEST_FILE, MANIFEST_FILE, SUMMARY_FILE, VALIDATION_FILE
from tlops.tracking import runs
from tlops.tracking.report import RUN_NAME_TAG, run_name

RUN_FILE = "mlflow_run.json"
STEP_FILE = "step.json"
RUNNER_ENV = "TLOPS_RUNNER"
# the run a data-parallel launch continues: the train task that started torchrun (or a
# TrainJob) opened it and recorded the inputs; rank 0 of the processes logs into it
RUN_ID_ENV = "TLOPS_MLFLOW_RUN_ID"
# the run a tune trial on Katib is nested under (tlops.runner.katib sets it in the trial's pod)
PARENT_RUN_ENV = "TLOPS_PARENT_RUN_ID"


@dataclass(frozen=True)
class RunLog:
    """An open MLflow run and the tracking params it lives under."""

    params: Params
    run_id: str

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        """Log finite metrics."""
        runs.log_metrics(self.params.tracking, self.run_id, values, step)

    def log_params(self, values: Mapping[str, Any]) -> None:
        """Log params (a child run's draw: the pipeline's run has its params already)."""
        runs.log_params(self.params.tracking, self.run_id, values)

    def tags(self, values: Mapping[str, Any]) -> None:
        """Set tags."""
        runs.set_tags(self.params.tracking, self.run_id, values)

    def artifacts(self, paths: list[Path], artifact_path: str | None) -> None:
        """Upload files (and folders) under ``artifact_path`` (None: the run's root)."""
        runs.log_artifacts(self.params.tracking, self.run_id, paths, artifact_path)

    def epoch(self, row: Mapping[str, float]) -> None:
        """Log one epoch's metrics at step = the epoch counted from 1 (as the console counts)."""
        self.metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]) + 1)

    def close(self, ok: bool) -> None:
        """End the run as FINISHED or FAILED."""
        runs.end_run(self.params.tracking, self.run_id, ok)

    def fail(self, error: BaseException) -> None:
        """End the run as FAILED, with the error's first line as a tag."""
        self.tags({"error": _first_line(error)})
        self.close(ok=False)

    def stamp(self, out_dir: Path) -> None:
        """Leave the run id in an output directory, for the steps downstream of it."""
        write_json(out_dir / RUN_FILE, {"run_id": self.run_id})


def runner() -> str:
    """Which runner called the step: ``kfp``, ``dvc`` or ``cli`` (``TLOPS_RUNNER`` wins)."""
    if os.environ.get(RUNNER_ENV):
        return os.environ[RUNNER_ENV]
    return "dvc" if os.environ.get("DVC_STAGE") else "cli"  # DVC sets it for stage commands


def is_release(params: Params) -> bool:
    """Whether this run is a release (``register_model.release``; auto: the KFP pipeline)."""
    setting = params.register_model.release
    return setting == "true" or (setting == "auto" and runner() == "kfp")


def dvc_experiment() -> dict[str, str]:
    """The DVC experiment a stage runs in (``dvc exp run`` tells its stages), as tags."""
    names = {"DVC_EXP_NAME": "dvc.experiment", "DVC_EXP_BASELINE_REV": "dvc.baseline_rev"}
    return {tag: os.environ[env] for env, tag in names.items() if os.environ.get(env)}


def open_run(params: Params, inputs: Mapping[str, Path]) -> RunLog:
    """Start the MLflow run of a new model and log what its inputs carry.

    Args:
        params: Resolved params (all of them are logged, flattened).
        inputs: The training step's input directories (ingest and validation outputs...).

    Raises:
        tlops.tracking.runs.TrackingServerError: The tracking server does not answer.
    """
    runs.check_server(params.tracking)
    versions = {
        f"data_version.{info['domain']}": info["data_version"]
        for info in (_ingest_info(path) for path in inputs.values())
        if info is not None
    }
    tags = {
        "git_sha": runs.git_sha(),
        "backbone": params.model.backbone,
        "strategy": params.train.strategy,
        "runner": runner(),
        **versions,
        **dvc_experiment(),
    }
    if "data_version.target" in versions:
        tags["data_version"] = versions["data_version.target"]
    if os.environ.get(PARENT_RUN_ENV):  # a Katib trial: nested under the pipeline's run
        tags["mlflow.parentRunId"] = os.environ[PARENT_RUN_ENV]
    strategy, backbone = params.train.strategy, params.model.backbone
    run_id = runs.start_run(params.tracking, strategy, params.to_flat_dict(), tags)
    run = RunLog(params, run_id)
    # the name says what was trained on which data; the id part tells same-named runs apart
    release = is_release(params)
    name = run_name(strategy, backbone, versions.get("data_version.target"), run_id, release)
    run.tags({RUN_NAME_TAG: name, "release": str(release).lower()})
    record_inputs(run, inputs)
    return run


def child_run(parent: RunLog, name: str, tags: Mapping[str, str]) -> RunLog:
    """A run nested under ``parent`` (a tune trial), in the same experiment."""
    run_id = runs.start_child_run(parent.params.tracking, parent.run_id, name, tags)
    return RunLog(parent.params, run_id)


def join_run(params: Params, inputs: Mapping[str, Path]) -> RunLog | None:
    """The run an input directory was stamped with (:meth:`RunLog.stamp`), if any.

    A process of a data-parallel launch joins the run its launcher names in
    ``TLOPS_MLFLOW_RUN_ID`` instead.

    Raises:
        tlops.tracking.runs.TrackingServerError: There is a run, and its server does not answer.
    """
    launched = os.environ.get(RUN_ID_ENV)
    if launched:
        runs.check_server(params.tracking)
        return RunLog(params, launched)
    for path in inputs.values():
        if (path / RUN_FILE).is_file():
            runs.check_server(params.tracking)
            return RunLog(params, str(read_json(path / RUN_FILE)["run_id"]))
    return None


def record_inputs(run: RunLog, inputs: Mapping[str, Path]) -> None:
    """Log what ``inputs`` carry: datasets, validation reports and Data Docs, step timings."""
    for path in inputs.values():
        record = _step_record(path)
        if record is not None:
            label = record["step"] + (f".{record['domain']}" if record.get("domain") else "")
            run.metrics({f"step_seconds.{label}": float(record["seconds"])})
        report = path / VALIDATION_FILE
        if report.is_file():
            domain = read_json(report).get("domain") or "data"
            files = [path / SUMMARY_FILE, report, path / DOCS_DIR]
            run.artifacts([f for f in files if f.exists()], f"validate_data/{domain}")
        ingest = path / INGEST_FILE
        if ingest.is_file() and (path / MANIFEST_FILE).is_file():
            info = read_json(ingest)
            source = info.get("data_dir") or str(path)
            runs.log_dataset(
                run.params.tracking,
                run.run_id,
                path / MANIFEST_FILE,
                str(info.get("domain", "target")),
                str(source),
                str(info["data_version"]),
            )


def record_failure(params: Params, step: str, error: BaseException, outputs: list[Path]) -> str:
    """A FAILED run for a failure before any run exists (a validation that did not pass).

    Returns:
        The run id.
    """
    tags = {"git_sha": runs.git_sha(), "runner": runner(), "failed_step": step}
    run = RunLog(
        params, runs.start_run(params.tracking, f"{step} failed", params.to_flat_dict(), tags)
    )
    run.tags({"error": _first_line(error)})
    for out in outputs:
        files = [out / SUMMARY_FILE, out / VALIDATION_FILE]
        run.artifacts([f for f in files if f.is_file()], step)
    run.close(ok=False)
    return run.run_id


def write_step_record(out_dir: Path, step: str, seconds: float, domain: str | None) -> None:
    """What ran, when and how long, next to a step's output (logged by the run downstream).

    A step may have put facts of its own run there already (:func:`write_run_facts`); they are
    kept. ``.dvcignore`` keeps this file out of what DVC versions: an output is a function of
    its inputs, and a wall-clock time is not.
    """
    found = _step_record(out_dir) or {}
    record = {**found, "step": step, "seconds": seconds, "finished": time.time(), "domain": domain}
    write_json(out_dir / STEP_FILE, record)


def write_run_facts(out_dir: Path, facts: Mapping[str, Any]) -> None:
    """Facts of this run only (times, speeds, cache hits, what was measured) beside an output.

    They go into the step record (``step.json``), not into the output's own files, so that the
    output stays the same for the same inputs.
    """
    write_json(out_dir / STEP_FILE, {**(_step_record(out_dir) or {}), **facts})


def run_facts(out_dir: Path) -> dict[str, Any]:
    """The step record of an output (its run's facts and time); empty when there is none."""
    return _step_record(out_dir) or {}


def _step_record(path: Path) -> dict[str, Any] | None:
    record = path / STEP_FILE
    return dict(read_json(record)) if record.is_file() else None


def _ingest_info(path: Path) -> dict[str, Any] | None:
    info = path / INGEST_FILE
    if not info.is_file():
        return None
    payload = read_json(info)
    return {"data_version": payload["data_version"], "domain": payload.get("domain", "target")}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
