"""``dann``: a domain discriminator behind a gradient reversal layer (Ganin et al. 2016).

The discriminator (two hidden layers of ``train.dann.hidden``) learns to tell the domains apart
at full strength; the reversal layer hands the backbone the opposite of its gradient, scaled by
the ramp, so the features become indistinguishable. It is part of the strategy's state:
checkpointed every epoch and restored on resume.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from tlops.config import StrategyParams
from tlops.training.strategies.base import TrainData
from tlops.training.strategies.source_only import Dim, SourceOnly, Space, adaptation, losses

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tlops.models.model import TransferModel
else:
    from tlops.lazy import lazy

    torch = lazy("torch")
    nn = lazy("torch.nn")


class DannParams(StrategyParams):
    """``train.dann``."""

    weight: float = Field(ge=0.0)
    hidden: int = Field(ge=1)  # the discriminator's hidden width (two layers)


@adaptation("dann", DannParams)
class Dann(SourceOnly):
    """A domain discriminator behind gradient reversal; see the module docstring."""

    uses_unlabeled: ClassVar[bool] = True
    space: ClassVar[Space] = {
        **SourceOnly.space,
        "dann.weight": Dim(0.1, 3.0, log=True),
    }

    @property
    def params(self) -> DannParams:
        """``train.dann``."""
        section: DannParams = self.cfg.section("dann")
        return section

    def prepare(self, model: TransferModel, data: TrainData, device: torch.device) -> None:
        """The discriminator (once, drawn from ``train.seed``), then the loss and target pool."""
        if "discriminator" not in self.extra:
            hidden = self.params.hidden
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.cfg.seed)
                self.extra["discriminator"] = nn.Sequential(
                    nn.Linear(model.num_features, hidden),
                    nn.ReLU(),
                    nn.Linear(hidden, hidden),
                    nn.ReLU(),
                    nn.Linear(hidden, 1),
                ).to(device)
        super().prepare(model, data, device)

    def domain_term(
        self, source: torch.Tensor, target: torch.Tensor, target_logits: torch.Tensor
    ) -> tuple[str, torch.Tensor, float]:
        """The discriminator's cross-entropy on features reversed with the ramp's coefficient."""
        reversed_features = losses.grad_reverse(torch.cat([source, target]).float(), self.weight())
        domain = self.extra["discriminator"](reversed_features)
        loss = losses.domain_bce(domain[: len(source)], domain[len(source) :])
        return "loss_domain", loss, self.params.weight
