"""The ``training`` pipeline: the only place that orders the steps.

ingest_data -> validate_data (on the target, and beside it on the source when the strategy
uses it) -> [extract_features, when the strategy trains on features] -> [tune, when
tune.trials > 0] -> train -> evaluate -> register_model -> deploy. The graph is built for the
strategy in params (steps it does not need are not in it). The pipeline's ``params`` parameter
defaults to the whole resolved params.yaml (the single source of truth); cluster settings
(GPU, node selector, toleration, /dev/shm, secrets, retries, caching) come from the step
declarations and params.yaml's ``kfp`` section.
"""

import json
from typing import Any, NamedTuple

from pipelines.wiring import Tasks
from tlops.config import Params
from tlops.plugins import Need, needs_of
from tlops.steps import SPECS

CHECKPOINT_MOUNT = "/checkpoints"


def domains_used(cfg: Params) -> tuple[str, ...]:
    """The data domains the strategy trains on: the target, and the source when it needs it."""
    needs = needs_of(cfg.train)
    return ("target", "source") if Need.SOURCE in needs else ("target",)


def uses_features(cfg: Params) -> bool:
    """True when the strategy trains on extract_features' output."""
    return Need.FEATURES in needs_of(cfg.train)


def cluster_settings(task: Any, step: str, cfg: Params, cache: bool) -> None:
    """Resources, caching, GPU scheduling, /dev/shm, the non-root user and secrets of a task."""
    from kfp import kubernetes

    spec, kfp_cfg = SPECS[step], cfg.kfp
    dp = cfg.train.distributed
    # a multi-node train task only launches its TrainJob (whose nodes get the GPUs), a tune
    # task on Katib only its Experiment (whose trials get them): CPU pods
    katib = step == "tune" and cfg.section("tune").engine == "katib"
    launcher = (step == "train" and dp.nodes > 1) or katib
    # an Optuna search trains its trials in the task: train's resources
    res = kfp_cfg.resources_for("default" if launcher else "train" if step == "tune" else step)
    task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)
    task.set_caching_options(spec.cacheable and cache)
    if spec.resources == "gpu" and kfp_cfg.gpu.count > 0 and not launcher:
        gpu = kfp_cfg.gpu
        # one node of several processes: torchrun in the task, a GPU per process
        count = max(gpu.count, dp.procs_per_node) if step == "train" else gpu.count
        task.set_accelerator_type(gpu.resource).set_accelerator_limit(count)
        kubernetes.add_node_selector(task, gpu.node_selector.key, gpu.node_selector.value)
        tol = gpu.toleration
        kubernetes.add_toleration(
            task, key=tol.key, operator=tol.operator, value=tol.value, effect=tol.effect
        )
        kubernetes.empty_dir_mount(
            task,
            volume_name="dshm",
            mount_path="/dev/shm",
            medium="Memory",
            size_limit=kfp_cfg.shm_size,
        )
    kubernetes.set_security_context(
        task, run_as_user=kfp_cfg.task_uid, run_as_group=kfp_cfg.task_gid, run_as_non_root=True
    )
    for secret, keys in kfp_cfg.secrets.items():
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=dict(keys))


def ingest_and_validate(tasks: Tasks, domain: str, version: Any, after: Any = None) -> Any:
    """The ingest_data and validate_data tasks of one domain (after ``after``, if given).

    The domains do not wait for each other: their tasks run side by side where cores allow.

    Returns:
        The validate_data task.
    """
    ingest = tasks.add("ingest_data", domain, domain=domain, data_version=version)
    if after is not None:
        ingest.after(after)
    return tasks.add("validate_data", domain)


def train_evaluate_register(
    tasks: Tasks, cfg: Params, checkpoint_root: Any, after: list[Any]
) -> None:
    """[extract_features ->] [tune ->] train -> evaluate -> register_model -> deploy.

    All after ``after``; ``deploy`` does nothing where no cluster is configured
    (``deploy.target: none``).

    Their inputs are wired from the declarations (the target's data, the source's when its
    tasks ran, detect_change's decision in the retraining pipeline).

    Args:
        tasks: The pipeline's tasks so far.
        cfg: Resolved params (strategy, cluster settings).
        checkpoint_root: The pipeline's ``checkpoint_root`` parameter.
        after: The tasks the model steps wait for (every domain's validation).
    """
    from kfp import kubernetes

    if uses_features(cfg):
        tasks.add("extract_features").after(*after)
    if cfg.section("tune").trials > 0:  # the search's best params become train's overrides
        tasks.add("tune", checkpoint_root=checkpoint_root).after(*after)
    trained = tasks.add("train", checkpoint_root=checkpoint_root)
    trained.after(*after)
    trained.set_retry(
        cfg.kfp.train_retries, backoff_duration=cfg.kfp.retry_backoff, backoff_factor=2.0
    )
    if cfg.kfp.checkpoint_pvc:
        kubernetes.mount_pvc(trained, pvc_name=cfg.kfp.checkpoint_pvc, mount_path=CHECKPOINT_MOUNT)
    tasks.add("evaluate")
    tasks.add("register_model")
    tasks.add("deploy")


def build_training_pipeline(cfg: Params, pinned_data: bool = True) -> Any:
    """The training pipeline for these params (defaults, strategy and cluster settings).

    Args:
        cfg: Resolved params; their values become the pipeline's defaults.
        pinned_data: Each run is given the version of its data (``data_version_<domain>``,
            resolved before the run), which is the cache key of the data steps. A recurring
            run cannot know its data's version in advance: with False, the data steps are
            never cached and the versions may be left empty.

    Returns:
        A KFP pipeline function.
    """
    from components import build_components
    from kfp import dsl
    from kfp.dsl import Artifact, Dataset, Model

    steps = build_components(cfg.kfp.base_image)
    defaults = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    domains = domains_used(cfg)
    features_needed = uses_features(cfg)
    fields: list[tuple[str, Any]] = []
    for domain in domains:
        fields += [(f"dataset_{domain}", Dataset), (f"report_{domain}", Artifact)]
    if features_needed:
        fields.append(("features", Dataset))
    fields += [("model", Model), ("evaluation", Artifact), ("decision", Artifact)]
    fields.append(("deployment", Artifact))
    Outputs = NamedTuple("Outputs", fields)  # type: ignore[misc]

    def training(params: str, checkpoint_root: str, versions: dict[str, str]) -> Any:
        tasks = Tasks(steps, params)
        validated = [ingest_and_validate(tasks, d, versions[d]) for d in domains]
        train_evaluate_register(tasks, cfg, checkpoint_root, validated)
        for step, task in tasks.added:
            cluster_settings(task, step, cfg, cache=pinned_data)
        outputs: list[Any] = []
        for domain in domains:
            outputs += [
                tasks.get("ingest_data", domain).outputs["dataset"],
                tasks.get("validate_data", domain).outputs["report"],
            ]
        if features_needed:
            outputs.append(tasks.get("extract_features").outputs["features"])
        outputs += [
            tasks.get("train").outputs["model"],
            tasks.get("evaluate").outputs["evaluation"],
            tasks.get("register_model").outputs["decision"],
            tasks.get("deploy").outputs["deployment"],
        ]
        return Outputs(*outputs)

    # KFP reads the pipeline's parameters from the signature. With pinned data, each run must
    # name the version of its target data (the cache key); the source's is given by the same
    # callers (tlops run, submit) whenever the strategy uses the source domain.
    if pinned_data:

        def pipeline(
            data_version_target: str,
            params: str = defaults,
            checkpoint_root: str = CHECKPOINT_MOUNT,
            data_version_source: str = "",
        ) -> Outputs:
            versions = {"target": data_version_target, "source": data_version_source}
            return training(params, checkpoint_root, versions)

    else:

        def pipeline(  # type: ignore[misc]
            params: str = defaults,
            checkpoint_root: str = CHECKPOINT_MOUNT,
            data_version_target: str = "",
            data_version_source: str = "",
        ) -> Outputs:
            versions = {"target": data_version_target, "source": data_version_source}
            return training(params, checkpoint_root, versions)

    return dsl.pipeline(  # type: ignore[untyped-decorator]
        name=cfg.kfp.pipeline_name,
        description="Transfer learning: validated data, trained model, gated registry.",
    )(pipeline)
