"""``linear_probe``: a linear head on the cached features of ``extract_features``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from tlops.config import StrategyParams
from tlops.training.strategies.base import (
    Batch,
    Dim,
    Need,
    Schedule,
    Space,
    Strategy,
    TrainData,
    strategy,
)

if TYPE_CHECKING:
    import torch

    from tlops.models.model import TransferModel
else:
    from tlops.lazy import lazy

    torch = lazy("torch")


class LinearProbeParams(StrategyParams):
    """``train.linear_probe``: the head trained on cached features."""

    epochs: int = Field(ge=1)
    lr: float = Field(gt=0.0)
    weight_decay: float = Field(ge=0.0)
    # L1 penalty on the head's weights (feature selection), applied as a proximal step
    # (soft-thresholding after each update), so unused features get exactly zero weight
    l1: float = Field(ge=0.0)


@strategy(
    "linear_probe",
    needs={Need.FEATURES},
    sections={"linear_probe": LinearProbeParams},
    data_parallel="it fits a linear head on cached features, seconds in one process: "
    "nothing to scale out",
)
class LinearProbe(Strategy):
    """A new linear head, trained by full-batch AdamW on frozen features (seconds).

    No early stopping: full-batch epochs are tiny steps, so a few flat epochs say little; the
    best val epoch is the one returned. Only the head is checkpointed (the backbone never
    changes).
    """

    log_every: ClassVar[int] = 10
    space: ClassVar[Space] = {
        "linear_probe.lr": Dim(3e-3, 3e-2, log=True),
        "linear_probe.weight_decay": Dim(1e-5, 1e-3, log=True),
    }

    @property
    def params(self) -> LinearProbeParams:
        """``train.linear_probe``."""
        section: LinearProbeParams = self.cfg.section("linear_probe")
        return section

    def schedule(self) -> Schedule:
        """``train.linear_probe``: its own epochs, lr and weight decay; no warmup."""
        probe = self.params
        return Schedule(probe.epochs, probe.lr, probe.weight_decay, 0.0, early_stopping=False)

    def prepare(self, model: TransferModel, data: TrainData, device: torch.device) -> None:
        """A fresh head drawn from ``train.seed``, the loss, the features on ``device``."""
        # the probe is a new linear classifier on frozen features: the same seed gives the same
        # head whatever the model's construction drew from the random stream before
        torch.manual_seed(self.cfg.seed)
        model.head.reset_parameters()
        super().prepare(model, data, device)
        assert data.train_features is not None and data.val_features is not None
        x, y = data.train_features
        self.train_xy = (
            torch.from_numpy(x).float().to(device),
            torch.from_numpy(y).long().to(device),
        )
        self.val_x = torch.from_numpy(data.val_features[0]).float().to(device)

    def param_groups(self, model: TransferModel) -> list[dict[str, Any]]:
        """The head alone."""
        return [{"params": list(model.head.parameters()), "lr": self.schedule().lr}]

    def trainable_stages(self, epoch: int) -> int | None:
        """No backbone stage trains."""
        return 0

    def steps_per_epoch(self, data: TrainData) -> int:
        """One full batch."""
        return 1

    def batches(
        self, data: TrainData, generator: torch.Generator, device: torch.device
    ) -> Iterator[Batch]:
        """One full batch of training features."""
        yield self.train_xy

    def loss(self, model: TransferModel, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        """Cross-entropy of the head on features (the L1 term is the proximal step's)."""
        features, labels = batch
        loss: torch.Tensor = self.criterion(model.head(features), labels)
        l1 = self.params.l1
        if l1 > 0:
            weight = model.head.weight.detach()
            self.record("loss_l1", l1 * weight.abs().sum())
            self.record("features_used", (weight.abs().sum(0) > 0).sum().float())
        return loss

    def after_step(self, model: TransferModel, optimizer: torch.optim.Optimizer) -> None:
        """The proximal step of ``l1 x ||W||_1`` in Adam's metric: soft-thresholding.

        Adam moves every weight by about ``lr`` whatever its gradient's size, so a plain
        threshold of ``lr x l1`` would zero all weights or none. In Adam's metric the threshold of
        a weight is ``lr x l1 / (sqrt(v) + eps)`` (``v``: the bias-corrected second moment of
        its gradient), and a weight stays at 0 exactly when its smoothed gradient is smaller
        than ``l1``: the optimality condition of the L1 problem. A feature no class needs gets
        exactly zero weight (feature selection); the bias is not penalised.
        """
        l1 = self.params.l1
        if l1 <= 0:
            return
        with torch.no_grad():
            self._soft_threshold(model, optimizer, l1)

    def _soft_threshold(
        self, model: TransferModel, optimizer: torch.optim.Optimizer, l1: float
    ) -> None:
        weight = model.head.weight
        group = next(g for g in optimizer.param_groups if any(p is weight for p in g["params"]))
        state = optimizer.state[weight]
        beta2, eps = group["betas"][1], group["eps"]
        v_hat = state["exp_avg_sq"] / (1.0 - beta2 ** float(state["step"]))
        threshold = group["lr"] * l1 / (v_hat.sqrt() + eps)
        weight.copy_(torch.sign(weight) * torch.clamp(weight.abs() - threshold, min=0.0))

    def val_logits(
        self, model: TransferModel, data: TrainData, device: torch.device
    ) -> tuple[torch.Tensor, np.ndarray]:
        """The head on the val features, in fp32 (:attr:`validation_numerics`)."""
        assert data.val_features is not None
        with torch.no_grad(), self.validation_numerics.autocast(device):
            logits = model.head(self.val_x)
        return logits.float().cpu(), data.val_features[1]

    def state(self, model: TransferModel) -> dict[str, torch.Tensor]:
        """The head's weights."""
        return {f"head.{k}": v for k, v in model.head.state_dict().items()}

    def load_state(self, model: TransferModel, state: dict[str, torch.Tensor]) -> None:
        """Put the head back."""
        model.head.load_state_dict({k[len("head.") :]: v for k, v in state.items()}, strict=True)
