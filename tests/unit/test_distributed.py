"""Data-parallel pieces without processes: shards, loss scale, batch-norm policy, launch specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pipelines.cluster import compile_training

from tests.conftest import REPO
from tests.helpers import changed, repo_params
from tests.unit.test_kfp_pipeline import _documents, _executor
from tlops.config import Params, apply_overrides, load_params
from tlops.data.tensors import Augment, Shard, SplitTensors, augment_batch, batches
from tlops.plugins import strategies
from tlops.runner.launch import step_options, torchrun_command
from tlops.runner.spec import StepIO
from tlops.runtime import is_follower, torchrun_rank
from tlops.training.distributed import (
    DataParallelError,
    batchnorm_mode,
    check_strategy,
    resolve_backend,
)
from tlops.training.strategies import get_strategy


@pytest.mark.parametrize("n", [1, 2, 7, 8, 33])
@pytest.mark.parametrize("world", [2, 3])
def test_a_global_batch_is_cut_into_contiguous_parts_that_differ_by_at_most_one(
    n: int, world: int
) -> None:
    labels = np.arange(n)
    parts = [Shard(rank, world).take(labels) for rank in range(world)]
    sizes = [p.stop - p.start for p in parts]
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
    assert [p.start for p in parts] == [0, *(p.stop for p in parts[:-1])]  # contiguous, in order


@pytest.mark.parametrize("weighted", [False, True])
def test_the_scaled_shard_losses_average_to_the_global_mean(weighted: bool) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=11)
    losses = rng.random(11)
    weights = torch.tensor([0.5, 2.0, 1.0]) if weighted else None
    w = weights.numpy()[labels] if weights is not None else np.ones(11)
    whole = float((w * losses).sum() / w.sum())
    world, averaged = 3, 0.0
    for rank in range(world):
        shard = Shard(rank, world)
        rows = shard.take(labels)
        local = float((w[rows] * losses[rows]).sum() / w[rows].sum())
        averaged += local * shard.loss_scale(weights) / world  # what DDP's mean gives
    assert averaged == pytest.approx(whole, rel=1e-12)


def test_each_process_reads_its_rows_of_the_same_shuffled_global_batches() -> None:
    images = np.arange(10 * 3 * 2 * 2, dtype=np.uint8).reshape(10, 3, 2, 2)
    split = SplitTensors(images, np.arange(10), [f"{i}.png" for i in range(10)])
    cpu = torch.device("cpu")
    whole = [labels for _, labels in batches(split, 4, True, torch.Generator().manual_seed(1), cpu)]
    for world in (2, 3):
        per_rank = [
            [
                labels
                for _, labels in batches(
                    split, 4, True, torch.Generator().manual_seed(1), cpu, Shard(rank, world)
                )
            ]
            for rank in range(world)
        ]
        for step, batch in enumerate(whole):
            assert torch.equal(torch.cat([rank[step] for rank in per_rank]), batch)


def test_a_shard_augments_its_rows_as_the_global_batch_would() -> None:
    x = torch.rand(7, 3, 16, 16)
    aug = Augment(15.0, (0.8, 1.2), 0.1, True)
    whole = augment_batch(x, aug, torch.Generator().manual_seed(3))
    for rank in range(2):
        shard = Shard(rank, 2)
        rows = shard.take(np.zeros(7, dtype=np.int64))
        mine = augment_batch(x[rows], aug, torch.Generator().manual_seed(3), shard)
        assert torch.allclose(mine, whole[rows], atol=1e-6)


def test_batchnorm_policy_and_backend_per_device() -> None:
    assert batchnorm_mode("auto", 1, "gloo") == "batch"
    assert batchnorm_mode("auto", 2, "gloo") == "frozen"
    assert batchnorm_mode("auto", 8, "nccl") == "sync"
    assert batchnorm_mode("sync", 1, "gloo") == "batch"  # one process: its batch is global
    assert batchnorm_mode("batch", 4, "gloo") == "batch"
    with pytest.raises(DataParallelError, match="SyncBatchNorm runs on CUDA only"):
        batchnorm_mode("sync", 2, "gloo")
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "gloo"
    assert resolve_backend("auto", torch.device("cuda")) == "nccl"
    with pytest.raises(DataParallelError, match="nccl needs CUDA"):
        resolve_backend("nccl", cpu)


def test_the_strategies_that_cannot_run_data_parallel_say_why(params: Params) -> None:
    parallel = {"finetune", "scratch"}
    for name in strategies():
        strategy = get_strategy(apply_overrides(params, {"train.strategy": name}).train)
        if name in parallel:
            check_strategy(strategy)
            continue
        with pytest.raises(DataParallelError) as raised:
            check_strategy(strategy)
        assert f"train.strategy {name} cannot run data-parallel (train.distributed: " in str(
            raised.value
        )


def test_a_torchrun_process_knows_its_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_rank() is None and not is_follower()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert torchrun_rank() is None  # torchrun with one process is one process
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    assert torchrun_rank() == (0, 4) and not is_follower()
    monkeypatch.setenv("RANK", "3")
    assert is_follower()


def test_the_launch_command_runs_the_same_step_under_torchrun(tmp_path: Path) -> None:
    io = StepIO(
        {"dataset": tmp_path / "d", "report": tmp_path / "r"},
        {"model": tmp_path / "m"},
        {"checkpoint_root": "/checkpoints"},
    )
    options = step_options(io, {"dataset": "/pvc/d"})
    assert options == [
        "--dataset", "/pvc/d", "--report", str(tmp_path / "r"), "--model", str(tmp_path / "m"),
        "--checkpoint-root", "/checkpoints",
    ]  # fmt: skip
    local = torchrun_command(2, "p.json", options)
    assert local[:6] == [
        "python", "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone",
        "--nnodes=1",
    ]  # fmt: skip
    assert local[local.index("--max-restarts=0") + 1 :][:6] == [
        "-m", "tlops.cli", "step", "train", "--params", "p.json",
    ]  # fmt: skip
    cluster = torchrun_command(4, "p.json", options, nnodes=2)
    assert "--standalone" not in cluster  # the Trainer's rendezvous, from PET_* variables


def test_distributed_params_are_checked() -> None:
    distributed = repo_params().train.distributed
    assert changed(distributed, nodes=2, procs_per_node=4).world_size == 8
    with pytest.raises(ValueError, match="nodes"):
        changed(distributed, nodes=0)


def test_a_multi_node_train_task_is_a_cpu_launcher_and_one_node_asks_a_gpu_per_process(
    tmp_path: Path,
) -> None:
    params = load_params(REPO / "params.yaml")
    launcher = apply_overrides(params, {"train.distributed.nodes": 2})
    pipeline, _ = _documents(compile_training(launcher, tmp_path / "launcher.yaml"))
    resources = _executor(pipeline, "train")["container"]["resources"]
    assert "accelerator" not in resources  # the TrainJob's nodes get the GPUs
    assert resources["cpuLimit"] == 2.0
    local = apply_overrides(params, {"train.distributed.procs_per_node": 2})
    pipeline, _ = _documents(compile_training(local, tmp_path / "local.yaml"))
    accelerator = _executor(pipeline, "train")["container"]["resources"]["accelerator"]
    assert str(accelerator["resourceCount"]) == "2"
