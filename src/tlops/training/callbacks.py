"""The training loop's callbacks: what :class:`tlops.training.engine.Loop` does beside training.

* :class:`NumericsFallback` - a non-finite loss under bf16/fp16 trains again from the start in
  fp32; in fp32 it is an error;
* :class:`EarlyStopping` - the best epoch and its weights, and the stop after
  ``train.early_stopping.patience`` epochs without a better one;
* :class:`EpochLog` - the metrics of every ``log_every``-th epoch and the last, on rank 0;
* :class:`Checkpoint` - ``last.pt`` after every epoch (rank 0) and the exact resume from it.

:func:`tlops.training.loop.fit` lists them in that order: the report of an epoch reads the early
stop it decided, and an epoch's checkpoint is written after its report (a report that kills
the process leaves the previous epoch's checkpoint to resume from).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tlops.models.numerics import Numerics
from tlops.training.engine import Callback, Loop

CHECKPOINT = "last.pt"
EpochCallback = Callable[[dict[str, float]], None]


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite."""


class FellBehind(FloatingPointError):
    """A reduced-precision run validated worse than the fp32 probe of the same epoch."""


class AccuracyGuard(Callback):
    """Under bf16/fp16, the first epoch's validation must keep up with the fp32 probe's.

    ``auto`` picks a reduced precision for a family without recorded accuracy evidence only
    after timing it faster; its calibration then trains the first epoch in fp32 on a copy (the
    probe, :func:`tlops.training.calibration.probe_fp32`). The run's own first epoch sees the
    same batches, augmentations and dropout (seeded by (seed, epoch)), so what separates the
    two is the precision. Falling behind by more than :func:`tolerance` raises
    :class:`FellBehind`, which :class:`NumericsFallback` turns into an fp32 restart.

    Args:
        reference: The probe's validation row of epoch 0.
        metric: The early-stopping metric (the figure the run's selection reads).
    """

    def __init__(self, reference: dict[str, float], metric: str) -> None:
        self.reference, self.metric = reference, metric

    def on_epoch_end(self, loop: Loop, epoch: int, row: dict[str, float]) -> None:
        """Compare the first epoch's validation with the probe's (reduced precision only)."""
        precision = loop.numerics.precision
        if epoch != 0 or precision == "fp32" or self.metric not in self.reference:
            return
        ours, probe = row[self.metric], self.reference[self.metric]
        allowed = tolerance(self.metric, probe, loop.data.val_size)
        behind = ours - probe if self.metric.endswith("loss") else probe - ours
        if not math.isfinite(ours) or behind > allowed:
            raise FellBehind(
                f"{precision} epoch 1 {self.metric} {ours:.4f} trails the fp32 probe's "
                f"{probe:.4f} by more than {allowed:.4f}"
            )


def tolerance(metric: str, probe: float, val_size: int) -> float:
    """How far a reduced-precision epoch may trail the fp32 probe's ``metric``.

    Accuracy and F1: 1 point or two validation images, whichever is more (the seed tolerance
    of bench/numerics_accuracy.py; fewer images than that is noise). Loss: 5 % of the probe's.
    """
    if metric.endswith("loss"):
        return 0.05 * abs(probe)
    return max(0.01, 2.0 / val_size if val_size else 0.0)


class NumericsFallback(Callback):
    """A non-finite loss or :class:`FellBehind` under bf16/fp16: train again from the start in fp32.

    The fp32 attempt starts from the state the model and strategy had before the first one
    (same memory layout), so it ends exactly as a run pinned to fp32 would; :attr:`reason` says
    why reduced precision was abandoned. A non-finite loss in fp32 is an error.

    Args:
        initial: The strategy's state before the first attempt (copied here).
    """

    def __init__(self, initial: dict[str, torch.Tensor]) -> None:
        self.initial = {k: v.detach().clone() for k, v in initial.items()}
        self.reason: str | None = None

    def on_before_backward(self, loop: Loop, epoch: int, step: int, loss: float) -> None:
        """Raise :class:`NonFiniteLoss` when the loss is NaN or infinite (in any process)."""
        precision = loop.numerics.precision
        finite = math.isfinite(loss)
        if loop.group is not None and precision != "fp32":
            # an overflow in one shard: every process falls back to fp32 together (in fp32
            # the error ends the process, and torchrun stops the others)
            finite = loop.group.sum([0.0 if finite else 1.0])[0] == 0.0
        if not finite:
            raise NonFiniteLoss(
                f"loss is {loss} at epoch {epoch}, step {step} in {precision}"
                + ("" if precision != "fp32" else ": lower train.lr")
            )

    def on_exception(self, loop: Loop, error: Exception) -> bool:
        """Switch to fp32 and put the initial state back after a reduced-precision overflow."""
        numerics = loop.numerics
        if not isinstance(error, NonFiniteLoss | FellBehind) or numerics.precision == "fp32":
            return False
        strategy = loop.strategy
        strategy.numerics = Numerics("fp32", numerics.channels_last, numerics.compile)
        strategy.load_state(loop.model, self.initial)
        strategy.prepare(loop.model, loop.data, loop.device)
        self.reason = f"{error}; trained again from the start in fp32"
        return True


def _is_better(metric: str, value: float, best: float) -> bool:
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value < best if metric.endswith("loss") else value > best


class EarlyStopping(Callback):
    """The best epoch by ``metric`` and its weights; a stop after ``patience`` worse epochs.

    The stop applies only when the strategy's schedule allows it (``early_stopping``); the best
    epoch is tracked either way, and the model ends with its weights.

    Args:
        metric: A key of the history rows (``val_loss``: lower is better; others: higher).
        patience: Epochs in a row without a better ``metric`` before the loop stops.
    """

    def __init__(self, metric: str, patience: int) -> None:
        self.metric, self.patience = metric, patience
        self.enabled = True
        self.best_metric, self.best_epoch, self.bad_epochs = float("nan"), -1, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    @property
    def stopped(self) -> bool:
        """Whether the run stops (or stopped) early."""
        return self.enabled and self.bad_epochs >= self.patience

    def setup(self, loop: Loop) -> None:
        """No best epoch yet."""
        self.enabled = loop.plan.early_stopping
        self.best_metric, self.best_epoch, self.bad_epochs = float("nan"), -1, 0
        self.best_state = None
        loop.should_stop = self.stopped

    def on_epoch_end(self, loop: Loop, epoch: int, row: dict[str, float]) -> None:
        """Keep the epoch's weights if it is the best so far; stop when patience ran out."""
        if _is_better(self.metric, row[self.metric], self.best_metric):
            self.best_metric, self.best_epoch, self.bad_epochs = row[self.metric], epoch, 0
            state = loop.strategy.state(loop.model)
            self.best_state = {k: v.detach().cpu().clone() for k, v in state.items()}
        else:
            self.bad_epochs += 1
        loop.should_stop = self.stopped

    def on_save_checkpoint(self, loop: Loop, checkpoint: dict[str, Any]) -> None:
        """The best epoch, its metric and weights, and the epochs since."""
        checkpoint["best_metric"] = self.best_metric
        checkpoint["best_epoch"] = self.best_epoch
        checkpoint["bad_epochs"] = self.bad_epochs
        checkpoint["best_state"] = self.best_state

    def on_load_checkpoint(self, loop: Loop, checkpoint: dict[str, Any]) -> None:
        """The best epoch so far; a run that had stopped early stays stopped."""
        self.best_metric = checkpoint["best_metric"]
        self.best_epoch = checkpoint["best_epoch"]
        self.bad_epochs = checkpoint["bad_epochs"]
        self.best_state = checkpoint["best_state"]
        loop.should_stop = self.stopped

    def on_fit_end(self, loop: Loop) -> None:
        """The model gets the best epoch's weights."""
        if self.best_state is not None:
            loop.strategy.load_state(loop.model, self.best_state)


class EpochLog(Callback):
    """Hands the metrics of every ``every``-th epoch and the last one to ``report`` (rank 0).

    Args:
        report: Called with an epoch's history row (progress lines, MLflow metrics).
        every: Epochs between two reports (the strategy's ``log_every``).
    """

    def __init__(self, report: EpochCallback, every: int) -> None:
        self.report, self.every = report, every

    def on_epoch_end(self, loop: Loop, epoch: int, row: dict[str, float]) -> None:
        """Report the row on cadence, and always the last epoch's."""
        last_epoch = loop.should_stop or epoch == loop.plan.epochs - 1
        if loop.leads and (epoch % self.every == self.every - 1 or last_epoch):
            self.report(row)


def _save_atomic(payload: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


class Checkpoint(Callback):
    """``last.pt`` in ``directory`` after every epoch (rank 0), and the exact resume from it.

    Only a checkpoint of this run resumes: the same ``fingerprint`` and numerics; another is
    ignored (and overwritten after the first epoch).

    Args:
        directory: Where ``last.pt`` is written and read; every process of a data-parallel
            run must see the same folder.
        fingerprint: Identity of the run (data version, params, init).
    """

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory, self.fingerprint = directory, fingerprint
        self.resumed: int | None = None  # the epoch a resume started at

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return self.directory / CHECKPOINT

    def setup(self, loop: Loop) -> None:
        """Nothing resumed yet."""
        self.resumed = None

    def on_fit_start(self, loop: Loop) -> None:
        """Resume from ``last.pt`` if this run wrote it; every process must find the same."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            ours = state.get("fingerprint") == self.fingerprint
            if ours and state.get("numerics") == loop.numerics.spec:
                loop.load_state_dict(state)
                loop.start_epoch = self.resumed = state["epoch"] + 1
        group, start = loop.group, loop.start_epoch
        if group is not None and group.sum([float(start)])[0] != start * group.world:
            raise RuntimeError(
                f"the processes found different checkpoints in {self.directory}: "
                "checkpoint_root must be one folder every node shares"
            )

    def on_epoch_end(self, loop: Loop, epoch: int, row: dict[str, float]) -> None:
        """Write the epoch's checkpoint (rank 0 writes what every process resumes from)."""
        if not loop.leads:
            return
        payload = {
            "fingerprint": self.fingerprint,
            "numerics": loop.numerics.spec,
            "epoch": epoch,
            **loop.state_dict(),
        }
        _save_atomic(payload, self.path)

    def on_fit_end(self, loop: Loop) -> None:
        """Under torchrun: the last checkpoint is written before any process moves on."""
        if loop.group is not None:
            loop.group.barrier()
