"""``train`` on several nodes: a Kubeflow Trainer ``TrainJob``, created through the official SDK.

The pipeline's ``train`` task (the launcher) runs on a CPU node of the cluster and:

1. copies its input artifacts onto the checkpoint volume (``kfp.checkpoint_pvc``, mounted at
   ``checkpoint_root``; ReadWriteMany, infra/k8s), under ``trainjobs/<job>/``;
2. creates a ``TrainJob`` (runtime ``train.distributed.runtime``, a ClusterTrainingRuntime of
   the torch-distributed kind: infra/k8s/base/trainer.yaml) with the project image, ``nodes``
   nodes of ``procs_per_node`` GPUs, the task's GPU node selector, toleration, shared memory
   and volume, and the command: torchrun of ``tlops step train`` on those copies. The MLflow
   and S3 credentials come from the runtime's pod template (the same secrets and keys as the
   task's; the SDK cannot set secret references on the trainer container);
3. streams the logs of node 0 (rank 0) into its own log while it waits, fails when the job
   fails or runs past ``train.distributed.timeout_s``, and deletes a job it does not see
   complete (so no pod outlives the task, and a retry's job is alone on the checkpoints);
4. copies the model rank 0 wrote back into its output artifact and removes the copies.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tlops.config import Params
from tlops.io import atomic_dir
from tlops.runner.launch import LaunchFailed, step_options, torchrun_command
from tlops.runner.spec import StepIO
from tlops.tracking.lifecycle import RUN_ID_ENV
from tlops.training.distributed import DataParallelError

EXCHANGE_DIR = "trainjobs"  # under checkpoint_root: the job's inputs and outputs
SHM_VOLUME = "dshm"
CHECKPOINT_VOLUME = "tlops-checkpoints"
NODE = "node"  # the trainer container and replicated job of a torch-distributed runtime
READ_ATTEMPTS = 5  # reads of the job's status in a row that may fail before the task does


def job_name() -> str:
    """A new TrainJob's name: a retried task creates another job, never reuses one."""
    return f"tlops-train-{uuid.uuid4().hex[:10]}"


def trainer_env(params: Params, io: StepIO) -> dict[str, str]:
    """Plain environment of the trainer: the run to log into, nothing secret."""
    env = {
        "TLOPS_RUNNER": "kfp-trainjob",
        # torch's threads per process: the node's CPU limit shared by its processes
        "OMP_NUM_THREADS": str(_threads(params)),
    }
    if io.run is not None:
        env[RUN_ID_ENV] = io.run.run_id
    return env


def _threads(params: Params) -> int:
    limit = params.kfp.resources_for("train").cpu_limit
    try:
        cpus = float(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)
    except ValueError:
        cpus = 1.0
    return max(1, int(cpus // params.train.distributed.procs_per_node))


def trainjob_request(
    params: Params, io: StepIO, name: str, exchange: Path
) -> tuple[Any, list[Any]]:
    """The SDK's trainer and options of the TrainJob ``name`` (exchange: its folder on the PVC).

    Returns:
        ``(CustomTrainerContainer, [options])`` for :meth:`TrainerClient.train`.
    """
    from kubeflow.trainer import CustomTrainerContainer
    from kubeflow.trainer.options import (
        ActiveDeadlineSeconds,
        Labels,
        Name,
        TrainerArgs,
        TrainerCommand,
    )

    dp, kfp = params.train.distributed, params.kfp
    resources = kfp.resources_for("train")
    per_node = {
        "cpu": resources.cpu_limit,
        "memory": resources.memory_limit,
        kfp.gpu.resource: str(dp.procs_per_node),
    }
    paths = {port: str(exchange / port) for port in (*io.inputs, *io.outputs)}
    paths["checkpoint_root"] = str(Path(io.args["checkpoint_root"]).absolute())
    options = step_options(io, paths)
    command = torchrun_command(dp.procs_per_node, str(exchange / "params.json"), options, dp.nodes)
    trainer = CustomTrainerContainer(
        image=kfp.base_image,
        num_nodes=dp.nodes,
        resources_per_node=per_node,
        env=trainer_env(params, io),
    )
    root = str(Path(io.args["checkpoint_root"]).absolute())
    labels = {"app.kubernetes.io/part-of": "tlops", "tlops/step": "train"}
    return trainer, [
        Name(name),
        Labels(labels),
        TrainerCommand(command[:1]),
        TrainerArgs(command[1:]),
        # the cluster's own deadline, a little after the task's (which deletes the job first)
        ActiveDeadlineSeconds(int(dp.timeout_s) + 300),
        _runtime_patch(_pod_patch(params, root)),
    ]


def _pod_patch(params: Params, root: str) -> Any:
    """The trainer pods' GPU node selector and toleration, shared memory and checkpoint volume.

    ``root``: where the checkpoint volume is mounted (the task's ``checkpoint_root``).
    """
    from kubeflow.trainer.options import ContainerPatch, PodSpecPatch

    kfp = params.kfp
    toleration = kfp.gpu.toleration.model_dump(exclude_none=True)
    return PodSpecPatch(
        node_selector={kfp.gpu.node_selector.key: kfp.gpu.node_selector.value},
        tolerations=[toleration],
        volumes=[
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": kfp.shm_size}},
            {
                "name": CHECKPOINT_VOLUME,
                "persistentVolumeClaim": {"claimName": kfp.checkpoint_pvc},
            },
        ],
        containers=[
            ContainerPatch(
                name=NODE,
                volume_mounts=[
                    {"name": SHM_VOLUME, "mountPath": "/dev/shm"},
                    {"name": CHECKPOINT_VOLUME, "mountPath": root},
                ],
            )
        ],
    )


def _runtime_patch(pod: Any) -> Any:
    """``pod`` as the patch of the runtime's replicated job ``node`` (every trainer pod)."""
    from kubeflow.trainer.options import (
        JobSetSpecPatch,
        JobSetTemplatePatch,
        JobSpecPatch,
        JobTemplatePatch,
        PodTemplatePatch,
        ReplicatedJobPatch,
        RuntimePatch,
        TrainingRuntimeSpecPatch,
    )

    return RuntimePatch(
        training_runtime_spec=TrainingRuntimeSpecPatch(
            template=JobSetTemplatePatch(
                spec=JobSetSpecPatch(
                    replicated_jobs=[
                        ReplicatedJobPatch(
                            name=NODE,
                            template=JobTemplatePatch(
                                spec=JobSpecPatch(template=PodTemplatePatch(spec=pod))
                            ),
                        )
                    ]
                )
            )
        )
    )


def client(params: Params) -> Any:
    """The SDK's TrainerClient: the kubeconfig ``KUBECONFIG`` names, else in-cluster config."""
    from kubeflow.trainer import KubernetesBackendConfig, TrainerClient

    # read now: the kubernetes package reads KUBECONFIG once, when it is imported
    config = KubernetesBackendConfig(
        namespace=params.train.distributed.namespace, config_file=os.environ.get("KUBECONFIG")
    )
    return TrainerClient(config)


def _stage_inputs(io: StepIO, exchange: Path) -> None:
    for port, path in io.inputs.items():
        shutil.copytree(path, exchange / port, symlinks=True)


def _stream_logs(trainer: Any, name: str, stop: threading.Event) -> None:
    """Node 0's log lines into this task's log, once its pod runs (rank 0 prints progress).

    The SDK yields nothing while the pod is pending: ask again until a line came.
    """
    while not stop.is_set():
        read = False
        try:
            for line in trainer.get_job_logs(name, step=f"{NODE}-0", follow=True):
                read = True
                sys.stderr.write(f"[{name}] {line}\n")
                sys.stderr.flush()
        except Exception:  # the API blinked, or the pod went away: ask again
            pass
        if read:
            return
        stop.wait(5.0)


def run(params: Params, io: StepIO) -> None:
    """Run ``train`` as a TrainJob and wait for it; its model lands in ``io.outputs['model']``.

    Raises:
        DataParallelError: The params cannot make a TrainJob (no checkpoint volume).
        LaunchFailed: The job could not be created, failed or timed out.
    """
    dp, kfp = params.train.distributed, params.kfp
    root = io.args.get("checkpoint_root")
    if not kfp.checkpoint_pvc or not root:
        raise DataParallelError(
            "train.distributed.nodes > 1 runs a TrainJob, whose pods share the task's inputs "
            "and outputs on the checkpoint volume: set kfp.checkpoint_pvc (a ReadWriteMany "
            "claim, infra/k8s) and the pipeline's checkpoint_root"
        )
    name = job_name()
    exchange = Path(root).absolute() / EXCHANGE_DIR / name
    exchange.mkdir(parents=True)
    created = done = False
    trainer: Any = None
    try:
        _stage_inputs(io, exchange)
        (exchange / "params.json").write_text(params.model_dump_json(), encoding="utf-8")
        trainer_spec, options = trainjob_request(params, io, name, exchange)
        try:
            trainer = client(params)
            trainer.train(runtime=dp.runtime, trainer=trainer_spec, options=options)
            created = True
        except Exception as exc:  # no cluster config, an unknown runtime, a refused request
            raise LaunchFailed(
                f"could not create TrainJob {name} (runtime {dp.runtime}): {_cause(exc)}"
            ) from exc
        sys.stderr.write(
            f"train: TrainJob {name}: {dp.nodes} node(s) x {dp.procs_per_node} process(es), "
            f"runtime {dp.runtime}\n"
        )
        _wait(trainer, name, dp.timeout_s, dp.poll_s)
        done = True
        model = exchange / "model"
        if not model.is_dir():
            raise LaunchFailed(f"TrainJob {name} completed without writing {model}")
        with atomic_dir(io.outputs["model"]) as staging:
            shutil.copytree(model, staging, dirs_exist_ok=True)
    finally:
        if created and not done:
            # failed, timed out, or this task is stopping: its pods must not outlive it (a
            # retry starts another job on the same checkpoints)
            _delete(trainer, name)
        shutil.rmtree(exchange, ignore_errors=True)


def _wait(trainer: Any, name: str, timeout_s: float, poll_s: float) -> None:
    stop = threading.Event()
    logs = threading.Thread(target=_stream_logs, args=(trainer, name, stop), daemon=True)
    logs.start()
    deadline = time.monotonic() + timeout_s
    misses = 0
    try:
        while True:
            try:
                status = trainer.get_job(name).status
                misses = 0
            except Exception as exc:
                misses += 1  # one failed read in a day of polling is no reason to fail
                if misses >= READ_ATTEMPTS:
                    raise LaunchFailed(
                        f"TrainJob {name}: could not read its status {misses} times in a row: "
                        f"{_cause(exc)}"
                    ) from exc
                time.sleep(poll_s)
                continue
            if status == "Complete":
                return
            if status == "Failed":
                raise LaunchFailed(
                    f"TrainJob {name} failed (its pods' logs: kubectl logs -l "
                    f"jobset.sigs.k8s.io/jobset-name={name} -c {NODE}); run the pipeline again "
                    "to resume from the last checkpoint"
                )
            if time.monotonic() > deadline:
                raise LaunchFailed(
                    f"TrainJob {name} did not finish within train.distributed.timeout_s "
                    f"({timeout_s:g} s, last status {status}); it was deleted"
                )
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic()) + 0.01))
    finally:
        stop.set()
        logs.join(timeout=5.0)


def _delete(trainer: Any, name: str) -> None:
    try:
        trainer.delete_job(name)
    except Exception as exc:  # the timeout is the error to report, not a failed cleanup
        sys.stderr.write(f"warning: could not delete TrainJob {name}: {_cause(exc)}\n")


def _cause(exc: BaseException) -> str:
    """The SDK's message and, when it wraps one, the API's answer."""
    cause = exc.__cause__
    text = str(exc)
    if cause is not None:
        status = getattr(cause, "status", None)
        reason = getattr(cause, "reason", None) or str(cause).splitlines()[0]
        text += f" ({status} {reason})" if status else f" ({reason})"
    return text
