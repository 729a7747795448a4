"""``scratch``: the same architecture from random init, every layer trained at ``lr``."""

from __future__ import annotations

from typing import ClassVar

from tlops.training.strategies.base import Need, strategy
from tlops.training.strategies.finetune import FineTune


@strategy("scratch", needs={Need.IMAGES})
class Scratch(FineTune):
    """The baseline that shows what the transfer brings: no pretrained weights."""

    pretrained: ClassVar[bool] = False

    def backbone_lr(self) -> float:
        """The backbone learns as fast as the head."""
        return self.cfg.lr

    def trainable_stages(self, epoch: int) -> int | None:
        """Everything trains."""
        return None
