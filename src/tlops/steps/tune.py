"""Step ``tune``: search the strategy's hyperparameters before ``train`` (``tune.trials`` > 0).

The search space is the one ``train.strategy`` declares in its own file
(:attr:`~tlops.training.strategies.base.Strategy.space`). Each trial trains the strategy on
the data ``train`` would train on and is judged by what picks a training run's best epoch:
the target validation metric with target labels, and without them (``train.target_labels:
0``) the label-free criterion ``train.selection.criterion`` names, so no target label chooses
a hyperparameter either. ``tune.engine``:

* ``optuna``: an Optuna study in this task (TPE sampling, median pruning on the per-epoch
  figure, a trial and a time budget, a seed; :mod:`tlops.training.search`). Every trial is an
  MLflow child run of the pipeline's run (its params, per-epoch curves, its figure, pruned or
  complete); the parent run gets the study: the best trial's params as tags, and a plot of the
  figure against each searched param;
* ``katib``: the same space and figure as a Katib Experiment on the cluster, whose trials are
  the project image's ``tlops step train`` (:mod:`tlops.runner.katib`).

Output ``tuned``: ``tuned.json`` (the best params as ``train`` overrides, the figure, every
trial), ``trials.csv`` and ``study.png``. ``train`` applies the overrides, and records them in
its ``train.json`` and the model version's tags.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from tlops.config import Params, StrategyParams
from tlops.io import atomic_dir, write_json
from tlops.layout import TRIAL_PREFIX, TUNED_FILE
from tlops.runner.spec import Port, StepIO, StepResult, StepSpec, Tracking
from tlops.steps import train as train_step

if TYPE_CHECKING:
    from tlops.training.search import Study, Trial

TRIALS_FILE, STUDY_PLOT = "trials.csv", "study.png"


class KatibParams(StrategyParams):
    """``tune.katib``: the Experiment a search on the cluster creates."""

    namespace: str | None  # null: the namespace the task runs in
    parallel_trials: int = Field(ge=1)  # trials running at once (each a pod with the train GPU)
    max_failed_trials: int = Field(ge=0)
    timeout_s: float = Field(gt=0.0)  # the Experiment fails the task after this long
    poll_s: float = Field(gt=0.0)


class TuneParams(StrategyParams):
    """``tune`` (declared here, held in params.yaml)."""

    trials: int = Field(ge=0)  # 0: no search (the pipelines have no tune task)
    timeout_s: float | None = Field(gt=0.0)  # no trial starts after this long; null: no limit
    epochs: int | None = Field(ge=1)  # per trial; null: train.epochs
    pruning: bool  # stop a trial whose figure trails the median of the earlier ones
    startup_trials: int = Field(ge=0)  # random draws before TPE models the space (and pruning)
    seed: int
    engine: Literal["optuna", "katib"]
    katib: KatibParams


def run(params: Params, io: StepIO) -> StepResult:
    """Search ``train.strategy``'s space; write the best params as ``train``'s overrides.

    Args:
        params: Resolved params (reads ``tune`` and what ``train`` reads).
        io: The ``train`` step's inputs; output ``tuned`` (replaced on success).

    Returns:
        The best trial, the figure and the trial counts.
    """
    from tlops.training.start import for_change

    params = for_change(params, io.inputs.get("change"))  # an adapt run: its strategy
    cfg: TuneParams = params.section("tune")
    if cfg.trials == 0:  # `tlops step tune` with no search asked for: nothing to train
        from tlops.training.search import Study
        from tlops.training.strategies import get_strategy

        metric = get_strategy(params.train).selection_metric()
        study = Study(metric, not metric.endswith("loss"), [], "tune.trials is 0")
    elif cfg.engine == "katib":
        from tlops.runner import katib

        study = katib.run(params, io)
    else:
        study = _optuna(params, io, cfg)
    tuned = _tuned(params, cfg, study)
    _write(io.outputs["tuned"], tuned, study, _log_scaled(params))
    if io.run is not None:
        _log_study(io, tuned, study)
    best = tuned["best_trial"]
    counts = tuned["counts"]
    found = (
        f"best trial {best} ({study.metric} {tuned['best_value']:.4f}): "
        + ", ".join(f"{k.removeprefix('train.')}={_short(v)}" for k, v in tuned["params"].items())
        if best is not None
        else "no trial completed: train keeps its params"
    )
    return StepResult(
        f"tune: {params.train.strategy}, {counts['complete']} complete, {counts['pruned']} "
        f"pruned, {counts['failed']} failed; {found} -> {io.outputs['tuned']}"
    )


def _optuna(params: Params, io: StepIO, cfg: TuneParams) -> Study:
    """The study in this process; every trial an MLflow child run of ``io.run``."""
    from tlops.runtime import resolve_device
    from tlops.training.prepare import prepare
    from tlops.training.search import Budget, run_study

    device = resolve_device(params.runtime.device)
    setup = prepare(params, io.inputs, io.args.get("checkpoint_root"), None, device, io.progress)
    budget = Budget(
        cfg.trials, cfg.timeout_s, cfg.epochs, cfg.seed, cfg.pruning, cfg.startup_trials
    )
    children: dict[int, Any] = {}

    def on_epoch(number: int) -> Any:
        if io.run is None:
            return None
        from tlops.tracking.lifecycle import child_run

        children[number] = child_run(io.run, f"trial {number}", {"trial": str(number)})
        return lambda _number, row: children[number].epoch(row)

    def on_trial(trial: Trial, study: Study) -> None:
        best = study.best
        figure = f"{study.metric} {trial.value:.4f}" if trial.value is not None else trial.state
        if trial.state == "pruned":
            figure = f"pruned after epoch {trial.epochs}"
        elif trial.state == "failed":
            figure = f"failed: {trial.error}"
        sys.stderr.write(
            f"{TRIAL_PREFIX}{trial.number}/{cfg.trials}: "
            + ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
            + f" -> {figure} ({trial.seconds:.0f} s)"
            + (f"; best so far trial {best.number} ({best.value:.4f})" if best else "")
            + "\n"
        )
        sys.stderr.flush()
        child = children.pop(trial.number, None)
        if child is not None:
            _log_trial(child, trial, study.metric)

    try:
        return run_study(params, setup, device, budget, on_trial, on_epoch)
    finally:  # a trial the step's failure interrupted: its child run fails with it
        for child in children.values():
            child.close(ok=False)


def _log_trial(child: Any, trial: Trial, metric: str) -> None:
    """A trial's params, figure and state into its child run, which ends with it."""
    child.log_params({k: _short(v) for k, v in trial.params.items()})
    child.tags({"tune.state": trial.state, **({"error": trial.error} if trial.error else {})})
    if trial.value is not None:
        child.metrics({f"tune.{metric}": trial.value, "best_epoch": trial.best_epoch or 0})
    child.close(ok=trial.state != "failed")


def _tuned(params: Params, cfg: TuneParams, study: Study) -> dict[str, Any]:
    """``tuned.json``: the best params as train overrides, the figure, and every trial."""
    best = study.best
    counts = {state: 0 for state in ("complete", "pruned", "failed")}
    for trial in study.trials:
        counts[trial.state] += 1
    return {
        "strategy": params.train.strategy,
        "engine": cfg.engine,
        "metric": study.metric,
        "higher_is_better": study.higher_is_better,
        "params": {f"train.{k}": v for k, v in best.params.items()} if best else {},
        "best_trial": best.number if best else None,
        "best_value": best.value if best else None,
        "counts": counts,
        "stopped": study.stopped,
        "trials": [
            {k: v for k, v in vars(trial).items() if k != "history"} for trial in study.trials
        ],
    }


def _log_scaled(params: Params) -> set[str]:
    """The searched keys on a log scale (their plots' x axes are too)."""
    from tlops import plugins

    space = plugins.declaration(params.train.strategy).cls.space
    return {key for key, dim in space.items() if dim.log}


def _write(out_dir: Path, tuned: dict[str, Any], study: Study, log_keys: set[str]) -> None:
    """The ``tuned`` output, all at once: tuned.json, trials.csv, study.png."""
    keys = sorted({k for trial in study.trials for k in trial.params})
    with atomic_dir(out_dir) as staging:
        write_json(staging / TUNED_FILE, tuned)
        with (staging / TRIALS_FILE).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["trial", "state", study.metric, "epochs", "seconds", *keys])
            for t in study.trials:
                row = [t.number, t.state, t.value, t.epochs, round(t.seconds, 1)]
                writer.writerow(row + [t.params.get(k) for k in keys])
        if study.trials and keys:
            _plot(staging / STUDY_PLOT, study, keys, log_keys)


def _plot(path: Path, study: Study, keys: list[str], log_keys: set[str]) -> None:
    """The figure of each trial against each searched param (pruned: its last figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.8 * rows), squeeze=False)
    best = study.best
    for ax in axes.flat[len(keys) :]:
        ax.set_visible(False)
    for index, (ax, key) in enumerate(zip(axes.flat, keys, strict=False)):
        for trial in study.trials:
            last = trial.history[-1].get(study.metric) if trial.history else None
            value = trial.value if trial.value is not None else last
            if value is None:
                continue
            marker = {"complete": "o", "pruned": "x"}.get(trial.state, "s")
            colour = "tab:red" if best is not None and trial.number == best.number else "tab:blue"
            ax.scatter([trial.params[key]], [value], marker=marker, color=colour)
        if key in log_keys:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # labelled decades only: no overlap
        ax.set_xlabel(key)
        if index % columns == 0:
            ax.set_ylabel(study.metric)
    fig.suptitle("tune: each trial (x pruned, red best)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _log_study(io: StepIO, tuned: dict[str, Any], study: Study) -> None:
    """The study on the pipeline's run: the best params as tags, counts, the plot."""
    assert io.run is not None
    best = {f"tune.best.{k.removeprefix('train.')}": _short(v) for k, v in tuned["params"].items()}
    if tuned["best_trial"] is not None:
        best["tune.best_trial"] = str(tuned["best_trial"])
    io.run.tags({"tune.engine": tuned["engine"], "tune.metric": study.metric, **best})
    counts = {f"tune.trials_{state}": float(n) for state, n in tuned["counts"].items()}
    if tuned["best_value"] is not None:
        counts["tune.best_value"] = tuned["best_value"]
    io.run.metrics(counts)
    out_dir = io.outputs["tuned"]
    files = [out_dir / name for name in (TUNED_FILE, TRIALS_FILE, STUDY_PLOT)]
    io.run.artifacts([f for f in files if f.is_file()], "tune")


def _short(value: Any) -> str:
    """A drawn value as a tag or a log line shows it (4 significant digits)."""
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


# The step's declaration: what every runner (tlops step, KFP components) is derived from.
STEP = StepSpec(
    name="tune",
    run=run,
    help="Search the strategy's hyperparameters (params tune) with the figure that picks "
    "train's best epoch; writes the best params as train's overrides.",
    params=("tune", *train_step.STEP.params, "kfp"),
    args=train_step.STEP.args,
    inputs=tuple(port for port in train_step.STEP.inputs if port.name != "tuned"),
    outputs=(
        Port(
            "tuned",
            "Artifact",
            "tuned.json (the best params as train overrides, every trial), trials.csv, study.png",
        ),
    ),
    code=("tlops.training.search", "tlops.runner.katib", *train_step.STEP.code),
    resources="gpu",
    tracking=Tracking.OPENS,
    section=TuneParams,
    dvc=False,
    placement="training and retraining pipelines, before train when tune.trials > 0",
)
