"""Start the processes of a data-parallel ``train``: torchrun here, or a TrainJob on a cluster.

The processes run the same step, ``tlops step train``, under torchrun (``python -m
torch.distributed.run``); rank 0 logs into the MLflow run the launching task opened
(:data:`tlops.tracking.lifecycle.RUN_ID_ENV`) and writes the step's outputs:

- one node (``train.distributed.nodes`` 1, ``procs_per_node`` > 1): torchrun on this machine,
  its output in this task's log;
- more nodes: a Kubeflow Trainer ``TrainJob`` through the official SDK
  (:mod:`tlops.runner.trainjob`), its pods running torchrun.

A process that dies fails the launch (torchrun stops the others; ``--max-restarts 0``); the
step started again resumes from the last checkpoint under the same ``checkpoint_root``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tlops.config import Params
from tlops.runner.spec import StepIO
from tlops.tracking.lifecycle import RUN_ID_ENV
from tlops.training.distributed import DataParallelError


class LaunchFailed(RuntimeError):
    """The data-parallel processes did not all finish."""


def step_options(io: StepIO, paths: Mapping[str, str] | None = None) -> list[str]:
    """``tlops step train``'s options for ``io``; ``paths`` replaces some values (a PVC)."""
    renamed = paths or {}
    options: list[str] = []
    for name, path in {**io.inputs, **io.outputs}.items():
        options += ["--" + name.replace("_", "-"), renamed.get(name, str(path))]
    for name, value in io.args.items():
        if value not in (None, ""):
            options += ["--" + name.replace("_", "-"), renamed.get(name, str(value))]
    return options


def torchrun_command(
    nproc: int, params_file: str, options: list[str], nnodes: int | None = None
) -> list[str]:
    """The command every node runs: torchrun starting ``tlops step train`` ``nproc`` times.

    One node: ``--standalone`` (a local rendezvous on a free port). More: the rendezvous comes
    from the environment the Trainer sets (``PET_NNODES``, ``PET_MASTER_ADDR``...), which
    torchrun reads itself.
    """
    command = ["python", "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes is None:
        command += ["--standalone", "--nnodes=1"]
    command += ["--max-restarts=0", "-m", "tlops.cli", "step", "train", "--params", params_file]
    return command + options


def launch(params: Params, io: StepIO) -> None:
    """Run the processes of a one-node data-parallel train here and wait for them.

    Rank 0 writes ``io.outputs``.

    Raises:
        LaunchFailed: A process failed (or the TrainJob failed or timed out).
        DataParallelError: The params ask for a launch this runner cannot make.
    """
    dp = params.train.distributed
    if dp.nodes > 1:
        raise DataParallelError(
            "train.distributed.nodes > 1 runs as a TrainJob (tlops.runner.trainjob), not here"
        )
    with tempfile.TemporaryDirectory(prefix="tlops-train-launch-") as scratch:
        params_file = Path(scratch) / "params.json"  # JSON is YAML: the step reads it as such
        params_file.write_text(params.model_dump_json(), encoding="utf-8")
        command = torchrun_command(dp.procs_per_node, str(params_file), step_options(io))
        command[0] = sys.executable  # this interpreter and its packages
        env = dict(os.environ)
        if io.run is not None:
            env[RUN_ID_ENV] = io.run.run_id
        # the processes share this machine's cores: torchrun's default of one thread each
        # unless the caller chose
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // dp.procs_per_node)))
        sys.stderr.flush()
        result = subprocess.run(command, env=env, check=False)
    if result.returncode != 0:
        raise LaunchFailed(
            f"data-parallel train on {dp.procs_per_node} processes failed (torchrun exited "
            f"{result.returncode}; the failed rank's error is above); run the step again to "
            "resume from its last checkpoint"
        )


__all__ = ["DataParallelError", "LaunchFailed", "launch", "step_options", "torchrun_command"]
