"""``coral``: match the covariances of source and target features (Sun & Saenko 2016)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from tlops.config import StrategyParams
from tlops.training.strategies.source_only import Dim, SourceOnly, Space, adaptation, losses

if TYPE_CHECKING:
    import torch


class CoralParams(StrategyParams):
    """``train.coral``."""

    weight: float = Field(ge=0.0)


@adaptation("coral", CoralParams)
class Coral(SourceOnly):
    """Match the covariances of source and target features (Sun & Saenko 2016)."""

    uses_unlabeled: ClassVar[bool] = True
    space: ClassVar[Space] = {
        **SourceOnly.space,
        "coral.weight": Dim(0.3, 10.0, log=True),
    }

    def domain_term(
        self, source: torch.Tensor, target: torch.Tensor, target_logits: torch.Tensor
    ) -> tuple[str, torch.Tensor, float]:
        """``CORAL(source, target)``, weighted ``weight x ramp``."""
        cfg: CoralParams = self.cfg.section("coral")
        return "loss_coral", losses.coral(source, target), cfg.weight * self.weight()
