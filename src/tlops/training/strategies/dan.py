"""``dan``: multi-kernel MMD between source and target features (Long et al. 2015)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from tlops.config import StrategyParams
from tlops.training.strategies.source_only import Dim, SourceOnly, Space, adaptation, losses

if TYPE_CHECKING:
    import torch


class DanParams(StrategyParams):
    """``train.dan``."""

    weight: float = Field(ge=0.0)
    # Gaussian kernels at these multiples of the batch's mean squared distance
    bandwidths: tuple[float, ...]


@adaptation("dan", DanParams)
class Dan(SourceOnly):
    """Multi-kernel MMD between the source and target features (Long et al. 2015)."""

    uses_unlabeled: ClassVar[bool] = True
    space: ClassVar[Space] = {
        **SourceOnly.space,
        "dan.weight": Dim(0.3, 3.0, log=True),
    }

    def domain_term(
        self, source: torch.Tensor, target: torch.Tensor, target_logits: torch.Tensor
    ) -> tuple[str, torch.Tensor, float]:
        """``MK-MMD^2(source, target)``, weighted ``weight x ramp``."""
        cfg: DanParams = self.cfg.section("dan")
        return "loss_mmd", losses.mk_mmd(source, target, cfg.bandwidths), cfg.weight * self.weight()
