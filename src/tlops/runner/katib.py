"""``tune`` on a cluster: a Katib Experiment whose trials are the ``train`` step's container.

The pipeline's ``tune`` task (on a CPU node) with ``tune.engine: katib``:

1. copies its inputs onto the checkpoint volume (``kfp.checkpoint_pvc`` at ``checkpoint_root``,
   ReadWriteMany, as a multi-node train does) under ``katib/<experiment>/``;
2. creates an ``Experiment`` (``kubeflow.org/v1beta1``, built from Katib's own API models)
   through the Kubernetes API: the strategy's search space as its parameters, the figure that
   picks train's best epoch as its objective, TPE (seeded) as its algorithm, the median stop
   when ``tune.pruning`` is on, ``tune.trials`` trials, ``tune.katib.parallel_trials`` at a
   time. Each trial is a Job of the project image running ``tlops step train`` on those copies
   with its draw as ``-S train.<key>=...``, with the train task's GPU, resources, node
   selector, toleration, non-root user and secrets; Katib's StdOut collector reads the line
   ``<metric>=<value>`` the step prints (:func:`tlops.steps.train.objective_line`). Its MLflow
   run is a child of the pipeline's (``TLOPS_PARENT_RUN_ID``);
3. waits for it, fails when it fails or runs past ``tune.katib.timeout_s`` (deleting it, so
   no trial outlives the task), then reads its trials and the best one.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.config import Params
from tlops.plugins import Dim, Space
from tlops.runner.launch import LaunchFailed, step_options
from tlops.runner.spec import StepIO
from tlops.tracking.lifecycle import PARENT_RUN_ENV

if TYPE_CHECKING:
    from tlops.training.search import Study

GROUP, VERSION = "kubeflow.org", "v1beta1"
EXPERIMENTS, TRIALS = "experiments", "trials"
EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"
CONTAINER = "training"  # the trial Job's container, the one Katib collects metrics from
EXCHANGE_DIR = "katib"  # under checkpoint_root: the experiment's inputs and trial outputs
# Katib's StdOut collector: `name=value` lines (its default format, stated so it cannot move)
METRICS_FORMAT = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
READ_ATTEMPTS = 5
STATES = {"Succeeded": "complete", "EarlyStopped": "pruned"}


def experiment_name() -> str:
    """A new Experiment's name: a retried task creates another, never reuses one."""
    return f"tlops-tune-{uuid.uuid4().hex[:10]}"


def parameter_names(space: Space) -> dict[str, str]:
    """Katib parameter name -> train key (``mcc.weight`` -> ``mcc-weight``: names are DNS-like)."""
    return {key.replace(".", "-").replace("_", "-"): key for key in space}


def _parameter(name: str, dim: Dim) -> Any:
    from kubeflow_katib_api import models

    if dim.choices:
        space = models.V1beta1FeasibleSpace(list=[str(c) for c in dim.choices])
        return models.V1beta1ParameterSpec(
            name=name, parameterType="categorical", feasibleSpace=space
        )
    low, high = (int(dim.low), int(dim.high)) if dim.integer else (dim.low, dim.high)
    space = models.V1beta1FeasibleSpace(
        min=str(low), max=str(high), distribution="logUniform" if dim.log else "uniform"
    )
    kind = "int" if dim.integer else "double"
    return models.V1beta1ParameterSpec(name=name, parameterType=kind, feasibleSpace=space)


def trial_job(
    params: Params, io: StepIO, exchange: str, names: dict[str, str], metric: str
) -> dict[str, Any]:
    """The Job one trial runs: ``tlops step train`` with its draw, on the staged inputs."""
    kfp, root = params.kfp, str(io.args["checkpoint_root"])
    paths = {port: f"{exchange}/{port}" for port in io.inputs}
    paths["model"] = f"{exchange}/trials/${{trialSpec.Name}}/model"  # Katib names each trial
    trial_io = StepIO(dict(io.inputs), {"model": Path("model")}, dict(io.args))
    command = ["python", "-m", "tlops.cli", "step", "train", "--params", f"{exchange}/params.json"]
    command += step_options(trial_io, paths)
    for name, key in names.items():
        command += ["-S", f"train.{key}=${{trialParameters.{name}}}"]
    res, gpu = kfp.resources_for("train"), kfp.gpu
    limits: dict[str, str] = {"cpu": res.cpu_limit, "memory": res.memory_limit}
    if gpu.count > 0:
        limits[gpu.resource] = str(gpu.count)
    env: list[dict[str, Any]] = [{"name": "TLOPS_RUNNER", "value": "katib-trial"}]
    if io.run is not None:
        env.append({"name": PARENT_RUN_ENV, "value": io.run.run_id})
    for secret, keys in kfp.secrets.items():
        env += [
            {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for key, var in keys.items()
        ]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {
            "runAsUser": kfp.task_uid,
            "runAsGroup": kfp.task_gid,
            "runAsNonRoot": True,
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": kfp.base_image,
                "command": command,
                "env": env,
                "resources": {
                    "requests": {"cpu": res.cpu_request, "memory": res.memory_request},
                    "limits": limits,
                },
                "volumeMounts": [{"name": "checkpoints", "mountPath": root}],
            }
        ],
        "volumes": [
            {"name": "checkpoints", "persistentVolumeClaim": {"claimName": kfp.checkpoint_pvc}}
        ],
    }
    if gpu.count > 0:
        pod["nodeSelector"] = {gpu.node_selector.key: gpu.node_selector.value}
        tol = gpu.toleration
        pod["tolerations"] = [{k: v for k, v in tol.model_dump().items() if v is not None}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "spec": {"backoffLimit": 0, "template": {"spec": pod}},
    }


def experiment(
    params: Params,
    io: StepIO,
    name: str,
    exchange: str,
    space: Space,
    metric: str,
    higher: bool,
) -> dict[str, Any]:
    """The Experiment manifest (as the API takes it), built from Katib's API models."""
    from kubeflow_katib_api import models

    tune = params.section("tune")
    names = parameter_names(space)
    settings = [
        models.V1beta1AlgorithmSetting(name="random_state", value=str(tune.seed)),
        models.V1beta1AlgorithmSetting(name="n_startup_jobs", value=str(tune.startup_trials)),
    ]
    stopping = None
    if tune.pruning:
        stopping = models.V1beta1EarlyStoppingSpec(
            algorithmName="medianstop",
            algorithmSettings=[
                models.V1beta1EarlyStoppingSetting(
                    name="min_trials_required", value=str(max(1, tune.startup_trials))
                ),
                models.V1beta1EarlyStoppingSetting(name="start_step", value="2"),
            ],
        )
    spec = models.V1beta1ExperimentSpec(
        objective=models.V1beta1ObjectiveSpec(
            type="maximize" if higher else "minimize", objectiveMetricName=metric
        ),
        algorithm=models.V1beta1AlgorithmSpec(algorithmName="tpe", algorithmSettings=settings),
        earlyStopping=stopping,
        parameters=[_parameter(n, space[key]) for n, key in names.items()],
        maxTrialCount=tune.trials,
        parallelTrialCount=tune.katib.parallel_trials,
        maxFailedTrialCount=tune.katib.max_failed_trials,
        metricsCollectorSpec=models.V1beta1MetricsCollectorSpec(
            collector=models.V1beta1CollectorSpec(kind="StdOut"),
            source=models.V1beta1SourceSpec(
                filter=models.V1beta1FilterSpec(metricsFormat=[METRICS_FORMAT])
            ),
        ),
        trialTemplate=models.V1beta1TrialTemplate(
            primaryContainerName=CONTAINER,
            trialParameters=[
                models.V1beta1TrialParameterSpec(name=n, reference=n, description=f"train.{k}")
                for n, k in names.items()
            ],
            trialSpec=trial_job(params, io, exchange, names, metric),
        ),
    )
    built = models.V1beta1Experiment(
        apiVersion=f"{GROUP}/{VERSION}",
        kind="Experiment",
        metadata=models.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=name, labels={"app.kubernetes.io/part-of": "tlops"}
        ),
        spec=spec,
    )
    manifest: dict[str, Any] = built.to_dict()
    return manifest


def client() -> Any:
    """The Kubernetes API's custom objects: the kubeconfig ``KUBECONFIG`` names, or in-cluster."""
    from kubernetes import client as k8s
    from kubernetes import config

    if os.environ.get("KUBECONFIG") or Path("~/.kube/config").expanduser().is_file():
        api = config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))
    else:
        config.load_incluster_config()
        api = k8s.ApiClient()
    return k8s.CustomObjectsApi(api)


def namespace(params: Params) -> str:
    """``tune.katib.namespace``, else the task's own (the service account's), else default."""
    given = params.section("tune").katib.namespace
    if given:
        return str(given)
    own = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return own.read_text().strip() if own.is_file() else "default"


def run(params: Params, io: StepIO) -> Study:
    """Run the search as a Katib Experiment and wait for it; its trials as a :class:`Study`.

    Raises:
        LaunchFailed: No checkpoint volume, or the Experiment could not be created, failed
            or timed out (it is then deleted).
    """
    from tlops.training.search import space_of
    from tlops.training.strategies import get_strategy

    tune, kfp = params.section("tune"), params.kfp
    root = io.args.get("checkpoint_root")
    if not kfp.checkpoint_pvc or not root:
        raise LaunchFailed(
            "tune.engine katib runs each trial as a pod that reads the task's inputs from the "
            "checkpoint volume: set kfp.checkpoint_pvc (a ReadWriteMany claim, infra/k8s) and "
            "the pipeline's checkpoint_root"
        )
    space = space_of(params)
    metric = get_strategy(params.train).selection_metric()
    higher = not metric.endswith("loss")
    name, where = experiment_name(), namespace(params)
    exchange = Path(root).absolute() / EXCHANGE_DIR / name
    exchange.mkdir(parents=True)
    api: Any = None
    created = done = False
    try:
        for port, path in io.inputs.items():
            shutil.copytree(path, exchange / port, symlinks=True)
        (exchange / "params.json").write_text(params.model_dump_json(), encoding="utf-8")
        body = experiment(params, io, name, str(exchange), space, metric, higher)
        try:
            api = client()
            api.create_namespaced_custom_object(GROUP, VERSION, where, EXPERIMENTS, body)
            created = True
        except Exception as exc:  # no cluster config, no Katib, a refused request
            raise LaunchFailed(
                f"could not create Katib Experiment {where}/{name}: {_cause(exc)}"
            ) from exc
        sys.stderr.write(
            f"tune: Katib Experiment {where}/{name}: {tune.trials} trial(s), "
            f"{tune.katib.parallel_trials} at a time, objective {metric}\n"
        )
        status = _wait(api, where, name, tune.katib.timeout_s, tune.katib.poll_s)
        done = True
        return _study(api, where, name, space, metric, higher, status)
    finally:
        if created and not done:  # failed, timed out or stopping: no trial outlives the task
            _delete(api, where, name)
        shutil.rmtree(exchange, ignore_errors=True)


def _condition(obj: dict[str, Any]) -> tuple[str, str]:
    """The latest true condition's type and message ("", "" when none)."""
    true = [
        c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"
    ]
    return (true[-1]["type"], true[-1].get("message", "")) if true else ("", "")


def _wait(api: Any, where: str, name: str, timeout_s: float, poll_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    misses = 0
    while True:
        try:
            found: dict[str, Any] = api.get_namespaced_custom_object(
                GROUP, VERSION, where, EXPERIMENTS, name
            )
            misses = 0
        except Exception as exc:
            misses += 1  # one failed read in hours of polling is no reason to fail
            if misses >= READ_ATTEMPTS:
                raise LaunchFailed(
                    f"Katib Experiment {where}/{name}: could not read its status {misses} times "
                    f"in a row: {_cause(exc)}"
                ) from exc
            time.sleep(poll_s)
            continue
        kind, message = _condition(found)
        if kind == "Succeeded":
            return found
        if kind == "Failed":
            raise LaunchFailed(
                f"Katib Experiment {where}/{name} failed: {message or 'no message'} (its "
                f"trials: kubectl get trials -n {where} -l {EXPERIMENT_LABEL}={name})"
            )
        if time.monotonic() > deadline:
            raise LaunchFailed(
                f"Katib Experiment {where}/{name} did not finish within tune.katib.timeout_s "
                f"({timeout_s:g} s, last condition {kind or 'none'}); it was deleted"
            )
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic()) + 0.01))


def _study(
    api: Any,
    where: str,
    name: str,
    space: Space,
    metric: str,
    higher: bool,
    status: dict[str, Any],
) -> Study:
    """The Experiment's trials, in the order they were created, as a :class:`Study`."""
    from tlops.training.search import Study, Trial

    listed = api.list_namespaced_custom_object(
        GROUP, VERSION, where, TRIALS, label_selector=f"{EXPERIMENT_LABEL}={name}"
    )
    items = sorted(
        listed.get("items") or [],
        key=lambda t: (t["metadata"].get("creationTimestamp", ""), t["metadata"]["name"]),
    )
    names = parameter_names(space)
    trials = []
    for number, item in enumerate(items, start=1):  # counted from 1, as the console counts
        drawn = {
            names[a["name"]]: _value(space[names[a["name"]]], a["value"])
            for a in item["spec"].get("parameterAssignments") or []
            if a["name"] in names
        }
        kind, message = _condition(item)
        state = STATES.get(kind, "failed")
        observed = [
            m
            for m in ((item.get("status") or {}).get("observation") or {}).get("metrics") or []
            if m.get("name") == metric
        ]
        value = None
        if state == "complete" and observed:
            value = float(observed[0]["max" if higher else "min"])
        trials.append(
            Trial(
                number,
                drawn,
                state,
                value,
                0,
                None,
                0.0,
                [],
                message if state == "failed" else None,
            )
        )
    return Study(metric, higher, trials)


def _value(dim: Dim, raw: str) -> Any:
    if dim.choices:
        return next((c for c in dim.choices if str(c) == raw), raw)
    return int(float(raw)) if dim.integer else float(raw)


def _delete(api: Any, where: str, name: str) -> None:
    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, where, EXPERIMENTS, name)
    except Exception as exc:  # the timeout is the error to report, not a failed cleanup
        sys.stderr.write(
            f"warning: could not delete Katib Experiment {where}/{name}: {_cause(exc)}\n"
        )


def _cause(exc: BaseException) -> str:
    """The client's message and, for an API error, its status and reason."""
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status:
        return f"{status} {reason or ''}".strip()
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
