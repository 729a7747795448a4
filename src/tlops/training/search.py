"""A hyperparameter search over the space a strategy declares: an Optuna study, run here.

The first trial is the params as they are (where they lie in the space), so the search never
ends below them by its own figure; each next one trains the strategy with params drawn from its
:attr:`Strategy.space` (TPE sampling, seeded), on the data the ``train`` step would train on,
read once for every trial. Its figure is what picks the best epoch of a training run (the
strategy's :meth:`~tlops.training.strategies.base.Strategy.selection_metric`: the target
validation metric with target labels, the label-free criterion of ``train.selection`` without),
so the search and the training share one idea of "best". A trial whose figure after an epoch is
worse than the median of the earlier trials at that epoch is pruned (Optuna's median pruner)
and its remaining epochs are not trained.

Trials run one after another in this process: torch already uses every core for one trial's
batches, so side by side they would only compete for them. Optuna is imported when a study
runs.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.config import Params
from tlops.plugins import Dim, Space

if TYPE_CHECKING:
    import optuna
    import torch

    from tlops.models.model import TransferModel
    from tlops.training.prepare import Setup


class NothingToSearch(ValueError):
    """The strategy declares no search space."""


@dataclass
class Trial:
    """One trial of a study: what it tried and how it went."""

    number: int
    params: dict[str, Any]  # train keys (dotted below train) -> value
    state: str  # complete | pruned | failed
    value: float | None  # the selection figure of its best epoch (None: failed)
    epochs: int  # epochs trained
    best_epoch: int | None  # counted from 1
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None


@dataclass
class Study:
    """A finished study: every trial, and which was best by the selection figure."""

    metric: str  # the row key every trial was judged by
    higher_is_better: bool
    trials: list[Trial]
    stopped: str | None = None  # why fewer trials ran than asked (the time budget)

    @property
    def best(self) -> Trial | None:
        """The complete trial with the best figure (None: none completed)."""
        done = [t for t in self.trials if t.state == "complete" and t.value is not None]
        if not done:
            return None
        sign = 1.0 if self.higher_is_better else -1.0
        return max(done, key=lambda t: (sign * (t.value or 0.0), -t.number))


def space_of(params: Params) -> Space:
    """The search space of ``train.strategy``.

    Raises:
        NothingToSearch: The strategy declares none.
    """
    from tlops import plugins

    space: Space = plugins.declaration(params.train.strategy).cls.space
    if not space:
        raise NothingToSearch(
            f"tune: strategy {params.train.strategy} declares no search space (its class's "
            "`space`); set tune.trials: 0, or declare one in its file"
        )
    return space


def current_values(params: Params, space: Space) -> dict[str, Any]:
    """The ``train`` values the params hold for each searched key, where they lie in its range."""
    flat = params.to_flat_dict()
    current: dict[str, Any] = {}
    for key, dim in space.items():
        value = flat[f"train.{key}"]
        if value in dim.choices if dim.choices else dim.low <= value <= dim.high:
            current[key] = value
    return current


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """The trial's draw of every dimension (keys as the space names them)."""
    drawn: dict[str, Any] = {}
    for key, dim in space.items():
        drawn[key] = _suggest_one(trial, key, dim)
    return drawn


def _suggest_one(trial: optuna.Trial, key: str, dim: Dim) -> Any:
    if dim.choices:
        return trial.suggest_categorical(key, list(dim.choices))
    if dim.integer:
        return trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
    return trial.suggest_float(key, dim.low, dim.high, log=dim.log)


def trial_params(params: Params, drawn: Mapping[str, Any], epochs: int | None) -> Params:
    """``params`` with a trial's draw (and the trial's epochs) applied to ``train``."""
    from tlops.config.load import apply_overrides

    overrides = {f"train.{key}": value for key, value in drawn.items()}
    if epochs is not None:
        overrides["train.epochs"] = epochs
    return apply_overrides(params, overrides, "tune trial")


@dataclass(frozen=True)
class Budget:
    """How much a study may spend: ``trials`` at most, none started after ``timeout_s``."""

    trials: int
    timeout_s: float | None
    epochs: int | None  # per trial (None: train.epochs)
    seed: int
    pruning: bool
    startup_trials: int  # random draws before TPE models the space; trials before pruning


TrialCallback = Callable[[Trial, "Study"], None]
# a complete trial's model (its best epoch's weights), for a caller that scores it further (a
# benchmark's test accuracy: never part of the search)
ModelCallback = Callable[[Trial, "TransferModel"], None]
EpochReport = Callable[[int, dict[str, float]], None]


def run_study(
    params: Params,
    setup: Setup,
    device: torch.device,
    budget: Budget,
    on_trial: TrialCallback | None = None,
    on_epoch: Callable[[int], EpochReport | None] | None = None,
    on_model: ModelCallback | None = None,
) -> Study:
    """Search ``train.strategy``'s space on the data ``setup`` read.

    Args:
        params: Resolved params (the trial's draw replaces their ``train`` keys).
        setup: The train step's setup (data, classes, start, numerics): read once.
        device: Where the trials train.
        budget: Trials, time, epochs per trial, seed, pruning.
        on_trial: Called after each trial with it and the study so far.
        on_epoch: Called with a trial's number before it trains; what it returns gets each
            reported epoch's row (a child run's curves).
        on_model: Called with each complete trial and its model.

    Raises:
        NothingToSearch: The strategy declares no search space.
    """
    import optuna

    space = space_of(params)
    metric = setup.strategy.selection_metric()
    higher = not metric.endswith("loss")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=budget.seed, n_startup_trials=budget.startup_trials)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=budget.startup_trials, n_warmup_steps=1)
        if budget.pruning
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        direction="maximize" if higher else "minimize", sampler=sampler, pruner=pruner
    )
    current = current_values(params, space)
    if current:  # the params as they are: the first trial, so the search never ends below them
        study.enqueue_trial(current)
    result = Study(metric, higher, [])
    started = time.monotonic()
    for number in range(1, budget.trials + 1):  # counted from 1, as the console counts
        if budget.timeout_s is not None and time.monotonic() - started > budget.timeout_s:
            result.stopped = (
                f"tune.timeout_s ({budget.timeout_s:g} s) ran out after {number - 1} trial(s)"
            )
            break
        trial = study.ask()
        drawn = suggest(trial, space)
        report = on_epoch(number) if on_epoch is not None else None
        done = _run_trial(
            params, setup, device, budget, (number, trial), drawn, metric, report, on_model
        )
        if done.state == "complete":
            study.tell(trial, done.value)
        elif done.state == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        result.trials.append(done)
        if on_trial is not None:
            on_trial(done, result)
    return result


def _run_trial(
    params: Params,
    setup: Setup,
    device: torch.device,
    budget: Budget,
    numbered: tuple[int, optuna.Trial],
    drawn: dict[str, Any],
    metric: str,
    report: EpochReport | None,
    on_model: ModelCallback | None = None,
) -> Trial:
    """Train one trial; a pruned or failed one is recorded, not raised."""
    import optuna

    from tlops.runtime import seed_everything
    from tlops.training.loop import NonFiniteLoss, counted_from_one, fit
    from tlops.training.start import build_model
    from tlops.training.strategies import get_strategy

    number, trial = numbered
    started = time.perf_counter()
    history: list[dict[str, float]] = []
    cfg = trial_params(params, drawn, budget.epochs)
    strategy = get_strategy(cfg.train)
    last_epoch = strategy.schedule().epochs - 1

    def on_epoch(row: dict[str, float]) -> None:
        history.append(row)
        if report is not None:
            report(number, row)
        value, epoch = row.get(metric, math.nan), int(row["epoch"])
        if math.isfinite(value):
            trial.report(value, epoch)
            # the last epoch's figure is the trial's result: nothing is left to save
            if epoch < last_epoch and trial.should_prune():
                raise optuna.TrialPruned()

    seed_everything(cfg.train.seed)  # every trial starts from the same initial weights
    model = build_model(cfg, strategy, setup.classes, setup.start)
    state, value, best_epoch, error = "complete", None, None, None
    with tempfile.TemporaryDirectory(prefix="tlops-trial-") as folder:
        try:
            outcome = fit(
                strategy, model, setup.data, cfg.train, Path(folder),
                f"{setup.key}-trial{number}", device, on_epoch, setup.choice.numerics,
            )  # fmt: skip
            value, best_epoch = outcome.best_metric, outcome.best_epoch + 1
            if not math.isfinite(value):
                state, error = "failed", f"its {metric} is {value}"
        except optuna.TrialPruned:
            state = "pruned"
        except NonFiniteLoss as exc:  # a rate too high for this strategy: a result, not a crash
            state, error = "failed", str(exc)
    done = Trial(
        number,
        drawn,
        state,
        value if state == "complete" else None,
        len(history),
        best_epoch,
        time.perf_counter() - started,
        counted_from_one(history),
        error,
    )
    if on_model is not None and state == "complete":
        on_model(done, model.cpu())
    return done
