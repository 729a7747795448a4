"""Data-parallel training: the process group, DDP, batch-norm policy, what rank 0 alone does.

``train`` runs the same code in one process or in N under torchrun (a Kubeflow Trainer
TrainJob on a cluster runs torchrun too). Under torchrun:

- the process group is gloo on CPU and NCCL on CUDA (``train.distributed.backend``);
- the model is wrapped in :class:`torch.nn.parallel.DistributedDataParallel`, which
  all-reduces the gradients; it is wrapped again when gradual unfreezing changes the trainable
  parameters (DDP fixes its set when it is built);
- every process reads its own rows of each global batch (:class:`tlops.data.tensors.Shard`):
  ``train.batch_size`` stays the global batch, so the learning rate and its schedule are those
  of a single-process run with that batch;
- batch-norm follows ``train.distributed.batchnorm`` (:func:`batchnorm_mode`);
- rank 0 alone logs to MLflow, writes checkpoints and the step's outputs; every process reads
  the last checkpoint, so a restarted job resumes exactly where the last epoch ended.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tlops.config import DistributedConfig
from tlops.data.tensors import Shard
from tlops.runtime import torchrun_rank

# a collective that waits longer than this fails the job (a rank that died mid-epoch and was
# not noticed by torchrun, which normally tears the others down at once)
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


class DataParallelError(ValueError):
    """Data-parallel training asked for something it cannot do."""


class DataParallel(DistributedDataParallel):
    """DDP that still answers for its module's attributes (``model.head``, ``model.mean``).

    Strategies call the model they are given; under DDP they are given this wrapper, so the
    forward pass goes through DDP (which prepares the gradient all-reduce) while the strategy
    reads the model's attributes as it does in one process.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":  # not set yet (inside DDP's __init__): no recursion
                raise
            return getattr(self.module, name)


@dataclass
class Group:
    """This process's place in the data-parallel job."""

    rank: int
    world: int
    local_rank: int
    backend: str
    device: torch.device
    batchnorm: str  # batch | sync | frozen (resolved)

    @property
    def leads(self) -> bool:
        """Whether this is rank 0: it logs, checkpoints and writes the outputs."""
        return self.rank == 0

    def shard(self) -> Shard:
        """A fresh shard of the global batches for this process."""
        return Shard(self.rank, self.world)

    def wrap(self, model: nn.Module) -> DataParallel:
        """``model`` in DDP over its parameters that train now."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)

    def sum(self, values: list[float]) -> list[float]:
        """The sum over processes of each value (in float64, so counts stay exact)."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.cpu()]

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value``, in every process (a picklable object)."""
        box = [value if self.leads else None]
        dist.broadcast_object_list(box, src=0, device=self._comm_device)
        return box[0]

    def barrier(self) -> None:
        """Wait for every process."""
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def resolve_backend(setting: str, device: torch.device) -> str:
    """``auto``: NCCL on CUDA, gloo on CPU; a backend the device cannot use is an error."""
    if setting == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if setting == "nccl" and device.type != "cuda":
        raise DataParallelError(
            "train.distributed.backend nccl needs CUDA devices; this process computes on "
            f"{device.type} (use gloo or auto)"
        )
    return setting


def batchnorm_mode(setting: str, world: int, backend: str) -> str:
    """How batch-norm layers that train compute their statistics.

    - ``batch``: each process's own batch (one process: the global batch; under DDP: its
      shard, so the statistics change with the number of processes);
    - ``sync``: :class:`torch.nn.SyncBatchNorm` over the global batch (CUDA/NCCL only: torch's
      SyncBatchNorm has no CPU kernel);
    - ``frozen``: the pretrained running statistics in every layer (per-image computation, so
      N processes compute what one does; the usual choice for fine-tuning with small per-device
      batches).

    ``auto`` is ``batch`` for one process, ``sync`` on NCCL and ``frozen`` on gloo.

    Raises:
        DataParallelError: ``sync`` on gloo.
    """
    if setting == "auto":
        if world == 1:
            return "batch"
        return "sync" if backend == "nccl" else "frozen"
    if setting == "sync" and world == 1:
        return "batch"  # one process: its batch is the global batch
    if setting == "sync" and backend != "nccl":
        raise DataParallelError(
            "train.distributed.batchnorm sync needs NCCL (torch's SyncBatchNorm runs on CUDA "
            "only); on gloo use frozen (exact for any number of processes) or batch"
        )
    return setting


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every batch-norm layer in eval mode: the running statistics, not the batch's."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def sync_batchnorm(model: nn.Module) -> None:
    """Replace the model's batch-norm layers by SyncBatchNorm (in place; same state dict)."""
    for name, child in model.named_children():
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(child)  # type: ignore[no-untyped-call]
        if converted is not child:
            setattr(model, name, converted)


def check_strategy(strategy: Any) -> None:
    """Refuse a strategy that cannot train data-parallel, saying why.

    Raises:
        DataParallelError: The strategy's declaration names a reason (``data_parallel``).
    """
    reason = strategy.declaration().data_parallel
    if reason:
        raise DataParallelError(
            f"train.strategy {strategy.name} cannot run data-parallel "
            f"(train.distributed: {reason}); run it in one process (nodes 1, procs_per_node 1)"
        )


@contextmanager
def process_group(cfg: DistributedConfig, device: torch.device) -> Iterator[Group | None]:
    """The data-parallel group of a process torchrun started, or None in a lone process.

    Args:
        cfg: ``train.distributed``.
        device: The device the step resolved (``cuda`` becomes ``cuda:<LOCAL_RANK>``).

    Raises:
        DataParallelError: A backend or batch-norm policy the device cannot use.
    """
    found = torchrun_rank()
    if found is None:
        yield None
        return
    rank, world = found
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = resolve_backend(cfg.backend, device)
    mode = batchnorm_mode(cfg.batchnorm, world, backend)
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    try:
        yield Group(rank, world, local_rank, backend, device, mode)
    finally:
        dist.destroy_process_group()
