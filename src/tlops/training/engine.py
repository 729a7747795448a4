"""The training loop's engine: it runs epochs and optimiser steps and calls its callbacks' hooks.

:class:`Loop` knows how to train (the optimiser, the warmup + cosine schedule, the steps of an
epoch under the strategy's numerics, data-parallel shards, the validation row of each epoch)
and nothing else: checkpoints and exact resume, early stopping and the best epoch, the
non-finite-loss fallback to fp32 and the per-epoch report are :class:`Callback` objects
(:mod:`tlops.training.callbacks`), in the manner of Lightning's Trainer.
:func:`tlops.training.loop.fit` puts the two together.

Determinism: everything random in an epoch (shuffle order, augmentation, dropout) is seeded
from (seed, epoch) at the start of that epoch, so a run resumed from the checkpoint of epoch k
continues exactly as the uninterrupted run would have, and the same data + params + seed give
the same metrics on CPU. The loop knows no strategy by name (see
:mod:`tlops.training.strategies`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from tlops.evaluate.metrics import macro_f1
from tlops.models.model import TransferModel
from tlops.models.numerics import Numerics
from tlops.training.distributed import Group, freeze_batchnorm
from tlops.training.strategies import Strategy, TrainData
from tlops.training.strategies.base import Schedule


def val_metrics(logits: torch.Tensor, labels: np.ndarray, n_classes: int) -> dict[str, float]:
    """Loss, accuracy and macro F1 of validation logits."""
    if len(labels) == 0:
        return {
            "val_loss": float("nan"),
            "val_accuracy": float("nan"),
            "val_macro_f1": float("nan"),
        }
    target = torch.tensor(labels, dtype=torch.long)
    loss = nn.functional.cross_entropy(logits, target).item()
    predicted = logits.argmax(1).numpy()
    return {
        "val_loss": loss,
        "val_accuracy": float((predicted == labels).mean()),
        "val_macro_f1": macro_f1(labels, predicted, n_classes),
    }


def adamw(
    groups: list[dict[str, Any]], lr: float, weight_decay: float, device: torch.device
) -> Any:
    """AdamW over parameter groups; fused into one kernel per step on CPU and CUDA.

    The fused step is the same update rule: on a 2-core CPU it takes 9 ms instead of 49 ms per step
    for ResNet-18's 11 M parameters (4 instead of 17 for EfficientNet-Lite0;
    bench/step_parts.py).
    """
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warmup to the base rate, then cosine decay to zero at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class Callback:
    """A hook into :class:`Loop`; every hook does nothing unless a subclass overrides it.

    The loop calls a hook on each of its callbacks in the order of its list, so a callback sees
    what the ones before it did in the same hook (the report of an epoch reads the early stop
    that epoch decided).
    """

    def setup(self, loop: Loop) -> None:
        """Start an attempt from nothing (a fit that starts again calls it again)."""

    def on_fit_start(self, loop: Loop) -> None:
        """After every callback's :meth:`setup`, before the first epoch (a resume loads here)."""

    def on_before_backward(self, loop: Loop, epoch: int, step: int, loss: float) -> None:
        """A step's loss is computed (``loss``: its value in this process); no update yet."""

    def on_epoch_end(self, loop: Loop, epoch: int, row: dict[str, float]) -> None:
        """An epoch is trained and validated; ``row`` is its entry of ``loop.history``."""

    def on_save_checkpoint(self, loop: Loop, checkpoint: dict[str, Any]) -> None:
        """Add what this callback must carry across a resume to ``checkpoint``."""

    def on_load_checkpoint(self, loop: Loop, checkpoint: dict[str, Any]) -> None:
        """Take back what :meth:`on_save_checkpoint` added."""

    def on_fit_end(self, loop: Loop) -> None:
        """After the last epoch (also when none was left to run)."""

    def on_exception(self, loop: Loop, error: Exception) -> bool:
        """An attempt raised ``error``: True when this callback recovered and the fit restarts."""
        return False


class Loop:
    """The epochs and optimiser steps of one fit; its callbacks do the rest.

    Callbacks read and set these attributes: ``plan`` (the strategy's schedule), ``history``
    (one row per epoch), ``start_epoch`` (the first epoch to run: a resume moves it) and
    ``should_stop`` (checked before every epoch).

    Args:
        strategy: What to train on and how; its ``numerics`` decide the precision.
        model: The model, prepared by the strategy.
        data: What the strategy declared it needs.
        seed: ``train.seed``: with the epoch, it seeds everything random in that epoch.
        device: Where to train.
        callbacks: The hooks, called in this order.
        group: The data-parallel group under torchrun (None: one process).
        batchnorm: ``batch``, ``sync`` or ``frozen`` (only ``frozen`` concerns the loop).
    """

    def __init__(
        self,
        strategy: Strategy,
        model: TransferModel,
        data: TrainData,
        seed: int,
        device: torch.device,
        callbacks: Sequence[Callback],
        group: Group | None = None,
        batchnorm: str = "batch",
    ) -> None:
        self.strategy, self.model, self.data = strategy, model, data
        self.seed, self.device, self.callbacks = seed, device, list(callbacks)
        self.group, self.batchnorm = group, batchnorm
        self.history: list[dict[str, float]] = []
        self.start_epoch, self.should_stop = 0, False
        self.trained, self.train_seconds = 0, 0.0  # images and seconds of the epochs run

    @property
    def numerics(self) -> Numerics:
        """The precision this attempt trains in (the strategy's)."""
        return self.strategy.numerics

    @property
    def leads(self) -> bool:
        """Whether this process writes and reports (rank 0, or the only process)."""
        return self.group is None or self.group.leads

    def run(self) -> None:
        """Train every epoch left; an attempt that fails starts again if a callback recovers."""
        while True:
            try:
                self._attempt()
                return
            except Exception as error:
                if not any(cb.on_exception(self, error) for cb in self.callbacks):
                    raise

    def state_dict(self) -> dict[str, Any]:
        """What an exact resume needs: weights, optimiser, schedule, history, callbacks' state."""
        checkpoint = {
            "state": self.strategy.state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
        }
        for cb in self.callbacks:
            cb.on_save_checkpoint(self, checkpoint)
        return checkpoint

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        self.strategy.load_state(self.model, checkpoint["state"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.history = checkpoint["history"]
        for cb in self.callbacks:
            cb.on_load_checkpoint(self, checkpoint)

    def _attempt(self) -> None:
        self._setup()
        for cb in self.callbacks:
            cb.setup(self)
        for cb in self.callbacks:
            cb.on_fit_start(self)
        for epoch in range(self.start_epoch, self.plan.epochs):
            if self.should_stop:
                break
            row = self._epoch(epoch)
            self.history.append(row)
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch, row)
        for cb in self.callbacks:
            cb.on_fit_end(self)
        self.model.freeze(None)
        self.model.eval()

    def _setup(self) -> None:
        """A fresh optimiser, schedule and record: each attempt starts from the beginning."""
        strategy = self.strategy
        self.plan: Schedule = strategy.schedule()
        plan = self.plan
        self._extra = extra = strategy.modules()
        groups = strategy.param_groups(self.model)
        if len(extra):
            groups.append({"params": list(extra.parameters()), "lr": plan.lr})
        self.optimizer = adamw(groups, plan.lr, plan.weight_decay, self.device)
        self.steps_per_epoch = max(1, strategy.steps_per_epoch(self.data))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            warmup_cosine(
                self.steps_per_epoch * plan.epochs, int(plan.warmup_epochs * self.steps_per_epoch)
            ),
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.numerics.needs_scaler)
        self.history = []
        self.start_epoch, self.should_stop = 0, False
        self.trained, self.train_seconds = 0, 0.0
        self._view: nn.Module = self.model  # what the strategy calls: the model, or it in DDP
        self._trains: tuple[bool, ...] = ()

    def _epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch and validate: the epoch's row (every process gets rank 0's)."""
        model, strategy, group = self.model, self.strategy, self.group
        model.freeze(strategy.trainable_stages(epoch))
        view = self._data_parallel_view()
        # dropout: its own masks in each process (rank 0 draws what one process does)
        torch.manual_seed(self.seed * 1009 + epoch + 7919 * (group.rank if group else 0))
        generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        model.train()
        if self.batchnorm == "frozen":
            freeze_batchnorm(model)
        self._extra.train()
        epoch_start = time.perf_counter()
        running, seen = self._steps(epoch, view, generator)
        epoch_seconds = time.perf_counter() - epoch_start
        self.trained += seen
        self.train_seconds += epoch_seconds
        model.eval()
        logits, labels = strategy.val_logits(model, self.data, self.device)
        row = {
            "epoch": float(epoch),
            "train_loss": running / max(seen, 1),
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_seconds": epoch_seconds,
            **strategy.epoch_terms(),
            **val_metrics(logits, labels, len(model.classes)),
            **strategy.selection(model, self.data, self.device),
        }
        if group is not None:  # rank 0's figures decide, so every process stops together
            row = group.broadcast(row)
        return row

    def _data_parallel_view(self) -> nn.Module:
        """The model in DDP under torchrun, wrapped again when its trainable set changed."""
        if self.group is not None:
            now = tuple(p.requires_grad for p in self.model.parameters())
            if now != self._trains:  # DDP fixes the parameters it reduces when it is built
                self._view, self._trains = self.group.wrap(self.model), now
        return self._view

    def _steps(self, epoch: int, view: nn.Module, generator: torch.Generator) -> tuple[float, int]:
        """The optimiser steps of one epoch: the summed loss x batch size, and images seen."""
        strategy, numerics = self.strategy, self.numerics
        running, seen = 0.0, 0
        weight = getattr(strategy.criterion, "weight", None)
        for step, batch in enumerate(strategy.batches(self.data, generator, self.device)):
            strategy.progress = (epoch * self.steps_per_epoch + step) / (
                self.plan.epochs * self.steps_per_epoch
            )
            with numerics.autocast(self.device):
                loss = strategy.loss(view, batch, generator)  # type: ignore[arg-type]
            value = loss.item()  # the one sync per step the running mean needs anyway
            for cb in self.callbacks:
                cb.on_before_backward(self, epoch, step, value)
            shard = strategy.shard
            if shard is not None:
                # DDP averages the processes' gradients: weigh each by its share of the batch
                scale = shard.loss_scale(weight)
                loss = loss * scale
                # this process's part of the global batch's mean, x its size (summed below)
                running += value * scale / shard.world * shard.total
            else:
                running += value * len(batch[1])
            self._update(loss)
            seen += len(batch[1])
        if self.group is not None:  # the epoch's mean loss over the global batches
            running, total = self.group.sum([running, float(seen)])
            seen = int(total)
        return running, seen

    def _update(self, loss: torch.Tensor) -> None:
        """Backward and one optimiser and schedule step (through the scaler under fp16)."""
        self.optimizer.zero_grad(set_to_none=True)
        scaled: Any = self.scaler.scale(loss)  # torch's backward() is untyped
        scaled.backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.strategy.after_step(self.model, self.optimizer)
        self.scheduler.step()
