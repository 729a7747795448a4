"""``mcc``: minimum class confusion on the target predictions (Jin et al. 2020)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from tlops.config import StrategyParams
from tlops.training.strategies.source_only import Dim, SourceOnly, Space, adaptation, losses

if TYPE_CHECKING:
    import torch


class MccParams(StrategyParams):
    """``train.mcc``."""

    weight: float = Field(ge=0.0)
    temperature: float = Field(gt=0.0)


@adaptation("mcc", MccParams)
class Mcc(SourceOnly):
    """Minimum class confusion on the target predictions (Jin et al. 2020)."""

    uses_unlabeled: ClassVar[bool] = True
    space: ClassVar[Space] = {
        **SourceOnly.space,
        "mcc.weight": Dim(0.3, 3.0, log=True),
        "mcc.temperature": Dim(1.5, 4.0),
    }

    def domain_term(
        self, source: torch.Tensor, target: torch.Tensor, target_logits: torch.Tensor
    ) -> tuple[str, torch.Tensor, float]:
        """``MCC(target logits)``, weighted ``weight x ramp``."""
        cfg: MccParams = self.cfg.section("mcc")
        return "loss_mcc", losses.mcc(target_logits, cfg.temperature), cfg.weight * self.weight()
