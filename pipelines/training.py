"""The ``training`` pipeline: the only place that orders the steps.

ingest_data -> validate_data (target, then source when the strategy uses it) ->
[extract_features, when the strategy trains on features] -> train -> evaluate ->
register_model. The graph is built for the strategy in params (steps it does not need are not
in it). The pipeline's ``params`` parameter defaults to the whole resolved params.yaml (the
single source of truth); cluster settings (GPU, node selector, toleration, /dev/shm, secrets,
retries, caching) come from the step declarations and params.yaml's ``kfp`` section.
"""

import json
from typing import Any, NamedTuple

from tlops.config import Params
from tlops.plugins import Need, needs_of
from tlops.steps.declarations import SPECS

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
    # a multi-node train task only launches its TrainJob (whose nodes get the GPUs): a CPU pod
    launcher = step == "train" and dp.nodes > 1
    res = kfp_cfg.resources_for("default" if launcher else step)
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


def ingest_and_validate(
    steps: dict[str, Any], params: Any, domain: str, version: Any, after: Any = None
) -> tuple[Any, Any]:
    """The ingest_data and validate_data tasks of one domain (after ``after``, if given)."""
    ingest = steps["ingest_data"](
        params=params, domain=domain, data_version=version
    ).set_display_name(f"ingest_data {domain}")
    if after is not None:
        ingest.after(after)  # one domain after the other, target first
    check = steps["validate_data"](
        params=params, dataset=ingest.outputs["dataset"]
    ).set_display_name(f"validate_data {domain}")
    return ingest, check


def train_evaluate_register(
    steps: dict[str, Any],
    cfg: Params,
    params: Any,
    checkpoint_root: Any,
    target: tuple[Any, Any],
    after: Any,
    change: Any = None,
    source: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """[extract_features ->] train -> evaluate -> register_model on the target's data.

    Args:
        steps: The components.
        cfg: Resolved params (strategy, cluster settings).
        params: The pipeline's ``params`` parameter.
        checkpoint_root: The pipeline's ``checkpoint_root`` parameter.
        target: The target's ingest_data and validate_data tasks.
        after: The task the model steps wait for (the last validation).
        change: detect_change's output (retraining: warm start, the run it opened).
        source: The source's ingest_data and validate_data tasks (strategies that use it).

    Returns:
        Step name -> its task.
    """
    from kfp import kubernetes

    dataset = target[0].outputs["dataset"]
    train_inputs = {"dataset": dataset, "report": target[1].outputs["report"]}
    if source is not None:
        train_inputs["source_dataset"] = source[0].outputs["dataset"]
        train_inputs["source_report"] = source[1].outputs["report"]
    if change is not None:
        train_inputs["change"] = change
    tasks: dict[str, Any] = {}
    if uses_features(cfg):
        tasks["extract_features"] = steps["extract_features"](params=params, dataset=dataset).after(
            after
        )
        train_inputs["features"] = tasks["extract_features"].outputs["features"]
    trained = steps["train"](params=params, checkpoint_root=checkpoint_root, **train_inputs)
    trained.after(after)
    trained.set_retry(
        cfg.kfp.train_retries, backoff_duration=cfg.kfp.retry_backoff, backoff_factor=2.0
    )
    if cfg.kfp.checkpoint_pvc:
        kubernetes.mount_pvc(trained, pvc_name=cfg.kfp.checkpoint_pvc, mount_path=CHECKPOINT_MOUNT)
    model = trained.outputs["model"]
    evaluate_inputs = {"dataset": dataset, "model": model}
    if source is not None:
        evaluate_inputs["source_dataset"] = source[0].outputs["dataset"]
    evaluated = steps["evaluate"](params=params, **evaluate_inputs)
    tasks["train"], tasks["evaluate"] = trained, evaluated
    tasks["register_model"] = steps["register_model"](
        params=params, dataset=dataset, model=model, evaluation=evaluated.outputs["evaluation"]
    )
    return tasks


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
    Outputs = NamedTuple("Outputs", fields)  # type: ignore[misc]

    def training(params: str, checkpoint_root: str, versions: dict[str, str]) -> Any:
        tasks: dict[str, list[Any]] = {name: [] for name in SPECS}
        ingested, validated, previous = {}, {}, None
        for domain in domains:
            ingest, check = ingest_and_validate(steps, params, domain, versions[domain], previous)
            ingested[domain], validated[domain], previous = ingest, check, check
            tasks["ingest_data"].append(ingest)
            tasks["validate_data"].append(check)
        model_steps = train_evaluate_register(
            steps,
            cfg,
            params,
            checkpoint_root,
            (ingested["target"], validated["target"]),
            previous,
            source=(ingested["source"], validated["source"]) if "source" in domains else None,
        )
        for step, task in model_steps.items():
            tasks[step].append(task)
        for step, group in tasks.items():
            for task in group:
                cluster_settings(task, step, cfg, cache=pinned_data)
        outputs: list[Any] = []
        for domain in domains:
            outputs += [ingested[domain].outputs["dataset"], validated[domain].outputs["report"]]
        if "extract_features" in model_steps:
            outputs.append(model_steps["extract_features"].outputs["features"])
        outputs += [
            model_steps["train"].outputs["model"],
            model_steps["evaluate"].outputs["evaluation"],
            model_steps["register_model"].outputs["decision"],
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
