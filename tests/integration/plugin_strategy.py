"""A strategy of a user's own, in one file outside tlops: what params.yaml ``plugins`` loads.

``tempered`` fine-tunes as ``finetune`` does with its logits divided by a temperature in the
loss (``train.tempered.temperature``; above 1 it softens the targets the model is pushed to).
Nothing else in the repository names it: test_transfer_methods runs it through ``tlops run``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from tlops.config import StrategyParams
from tlops.training.strategies import Need, strategy
from tlops.training.strategies.finetune import FineTune

if TYPE_CHECKING:
    import torch

    from tlops.models.model import TransferModel


class TemperedParams(StrategyParams):
    """``train.tempered``."""

    temperature: float = Field(gt=0.0)


@strategy("tempered", needs={Need.IMAGES}, sections={"tempered": TemperedParams})
class Tempered(FineTune):
    """Fine-tuning with a logit temperature in the loss."""

    def loss(
        self,
        model: TransferModel,
        batch: tuple[torch.Tensor, torch.Tensor],
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Cross-entropy of the logits divided by ``train.tempered.temperature``."""
        images, labels = batch
        temperature: float = self.cfg.section("tempered").temperature
        logits = model(self.augmented(model, images, generator)) / temperature
        loss: torch.Tensor = self.criterion(logits, labels)
        self.record("logit_temperature", logits.new_tensor(temperature))
        return loss
