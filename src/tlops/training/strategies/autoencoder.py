"""``autoencoder``: reconstruction pretraining on unlabeled images, then supervised fine-tuning.

The encoder is the model's backbone, from random init (the architecture ``model.backbone``
names). Before the first epoch it is pretrained as the encoder of a convolutional autoencoder
on every target training image, labeled or not (and the source's training images with
``train.autoencoder.source``): a decoder (a linear layer to a 4x4 grid of 128 channels, then
transposed convolutions that double the size up to the input's) reconstructs the normalised
input from the pooled features, loss: mean squared error, ``train.autoencoder.epochs`` epochs of
AdamW with cosine decay, each epoch's order and augmentation seeded from (seed, epoch). The
pretrained encoder is saved beside the run's checkpoints, so a run killed later resumes without
pretraining again. Then the loop fine-tunes the whole model on the labeled images as it does a
pretrained backbone: every stage trains, the encoder at ``lr x backbone_lr_mult`` (at the head's
rate, as ``scratch`` trains a random init, a few labeled batches undo what pretraining
learned). The decoder is not part of the model.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from tlops.config import StrategyParams
from tlops.plugins import TrainParams
from tlops.training.strategies.base import Need, TrainData, strategy
from tlops.training.strategies.finetune import FineTune
from tlops.training.strategies.scratch import Scratch

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from tlops.data import tensors
    from tlops.data.tensors import SplitTensors
    from tlops.models.model import TransferModel
else:
    from tlops.lazy import lazy

    torch = lazy("torch")
    nn = lazy("torch.nn")
    F = lazy("torch.nn.functional")
    tensors = lazy("tlops.data.tensors")

PRETRAINED_FILE = "autoencoder.pt"


class AutoEncoderParams(StrategyParams):
    """``train.autoencoder``: reconstruction pretraining of the encoder on unlabeled images."""

    epochs: int = Field(ge=1)
    lr: float = Field(gt=0.0)
    batch_size: int = Field(ge=1)
    source: bool  # pretrain on the source domain's training images too


def _needs(train: TrainParams) -> frozenset[Need]:
    """The target's images, and the source's when ``train.autoencoder.source`` is on."""
    source: bool = train.section("autoencoder").source
    return frozenset({Need.IMAGES, Need.SOURCE} if source else {Need.IMAGES})


def decoder(num_features: int, size: int) -> nn.Module:
    """Pooled features (N, D) -> an image (N, 3, S, S): linear to 4x4x128, then upsampling.

    Transposed convolutions double the side up to ``size``; a bilinear resize ends where the
    doublings overshoot it.
    """
    layers: list[nn.Module] = [nn.Linear(num_features, 128 * 4 * 4), nn.Unflatten(1, (128, 4, 4))]
    channels, side = 128, 4
    while side < size:
        out = max(16, channels // 2)
        layers += [
            nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1),
            nn.BatchNorm2d(out),
            nn.ReLU(inplace=True),
        ]
        channels, side = out, side * 2
    layers.append(nn.Conv2d(channels, 3, 3, padding=1))
    if side != size:
        layers.append(nn.Upsample(size=(size, size), mode="bilinear"))
    return nn.Sequential(*layers)


@strategy(
    "autoencoder",
    needs=_needs,
    sections={"autoencoder": AutoEncoderParams},
    data_parallel="its reconstruction pretraining runs before the training loop, in one process",
)
class AutoEncoder(Scratch):
    """Reconstruction pretraining, then fine-tuning; see the module docstring."""

    uses_unlabeled: ClassVar[bool] = True
    # the pretrained encoder learns slower than the new head, as a pretrained backbone does
    backbone_lr = FineTune.backbone_lr

    def prepare(self, model: TransferModel, data: TrainData, device: torch.device) -> None:
        """Pretrain the encoder (or load what an earlier attempt of this run pretrained).

        Only in a training run (``work_dir`` set by the loop): a copy prepared to time the
        numerics candidates times the fine-tuning steps, not the pretraining.
        """
        super().prepare(model, data, device)
        if self.work_dir is None:
            return
        saved = self.work_dir / PRETRAINED_FILE
        if saved.is_file():
            payload = torch.load(saved, map_location="cpu", weights_only=True)
            model.backbone.load_state_dict(payload["backbone"], strict=True)
            self.pretrain_history: list[dict[str, float]] = payload["history"]
            return
        self.pretrain_history = self._pretrain(model, data, device)
        saved.parent.mkdir(parents=True, exist_ok=True)
        tmp = saved.with_suffix(".tmp")
        state = {"backbone": model.backbone.state_dict(), "history": self.pretrain_history}
        torch.save(state, tmp)
        tmp.replace(saved)

    def _pool(self, data: TrainData) -> SplitTensors:
        assert data.train is not None
        parts = [data.train] + ([data.source_train] if data.source_train is not None else [])
        images = np.concatenate([np.asarray(p.images) for p in parts])
        return tensors.SplitTensors(images, np.zeros(len(images), dtype=np.int64), [])

    def _pretrain(
        self, model: TransferModel, data: TrainData, device: torch.device
    ) -> list[dict[str, float]]:
        cfg: AutoEncoderParams = self.cfg.section("autoencoder")
        pool = self._pool(data)
        size = int(pool.images.shape[-1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            net = decoder(model.num_features, size).to(device)
        model.freeze(None)
        model.train()
        params: list[Any] = [*model.backbone.parameters(), *net.parameters()]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=self.cfg.weight_decay)
        steps = cfg.epochs * math.ceil(len(pool) / cfg.batch_size)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / steps)))
        )
        history = []
        for epoch in range(cfg.epochs):
            generator = torch.Generator().manual_seed(self.cfg.seed * 104729 + epoch)
            total, seen = 0.0, 0
            for images, _ in tensors.batches(pool, cfg.batch_size, True, generator, device):
                x = self.warped(model, images, generator)
                loss = F.mse_loss(net(model.features(x)), x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                schedule.step()
                total += float(loss) * len(images)
                seen += len(images)
            history.append({"epoch": float(epoch), "ae_reconstruction_loss": total / seen})
        return history

    def pretraining_metrics(self) -> list[dict[str, float]]:
        """The reconstruction loss of every pretraining epoch (logged per epoch)."""
        return list(getattr(self, "pretrain_history", []))
