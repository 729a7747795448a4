"""The ``training`` pipeline: ingest -> validate -> extract -> train -> evaluate -> register.

The pipeline's parameters default to params.yaml (the whole resolved file is one ``params``
JSON string), so params.yaml stays the single source of truth; ``tlops submit --param k=v`` changes
single keys of it. Cluster settings (GPU, node selector, toleration, /dev/shm, secrets, retries,
caching) are applied here at compile time, from params.yaml's ``kfp`` section.
"""

import json
from typing import Any, NamedTuple

from tlops.config import Params

CACHED_STEPS = ("ingest_data", "validate_data", "extract_features")
GPU_STEPS = ("extract_features", "train")
CHECKPOINT_MOUNT = "/checkpoints"


def _cluster(task: Any, step: str, params: Params) -> None:
    """Resources, GPU scheduling, /dev/shm and secrets of one task."""
    from kfp import kubernetes

    cfg = params.kfp
    res = cfg.resources_for(step)
    task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)
    task.set_caching_options(step in CACHED_STEPS)
    if step in GPU_STEPS and cfg.gpu.count > 0:
        task.set_accelerator_type(cfg.gpu.resource).set_accelerator_limit(cfg.gpu.count)
        kubernetes.add_node_selector(task, cfg.gpu.node_selector.key, cfg.gpu.node_selector.value)
        tol = cfg.gpu.toleration
        kubernetes.add_toleration(
            task, key=tol.key, operator=tol.operator, value=tol.value, effect=tol.effect
        )
        kubernetes.empty_dir_mount(
            task,
            volume_name="dshm",
            mount_path="/dev/shm",
            medium="Memory",
            size_limit=cfg.shm_size,
        )
    for secret, keys in cfg.secrets.items():
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=dict(keys))


def build_training_pipeline(cfg: Params) -> Any:
    """The training pipeline for these params (defaults and cluster settings).

    Args:
        cfg: Resolved params; their values become the pipeline's defaults.

    Returns:
        A KFP pipeline function.
    """
    from components import build_components
    from kfp import dsl, kubernetes
    from kfp.dsl import Artifact, Dataset, Model

    steps = build_components(cfg.kfp.base_image)
    defaults = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)

    class Outputs(NamedTuple):
        source: Dataset
        target: Dataset
        source_report: Artifact
        target_report: Artifact
        features: Dataset
        model: Model
        evaluation: Artifact
        decision: Artifact

    @dsl.pipeline(  # type: ignore[untyped-decorator]
        name=cfg.kfp.pipeline_name,
        description="Transfer learning: validated data, fine-tuned backbone, gated registry.",
    )
    def training(
        params: str = defaults,
        target_dir: str = str(cfg.data.target),
        source_dir: str = str(cfg.data.source),
        target_data_version: str = "",
        source_data_version: str = "",
        checkpoint_root: str = CHECKPOINT_MOUNT,
    ) -> Outputs:
        target = steps["ingest_data"](
            params=params,
            data_dir=target_dir,
            domain="target",
            expected_data_version=target_data_version,
            mlflow_run_id="",
        ).set_display_name("ingest_data target")
        run_id = target.outputs["mlflow_run_id"]
        source = steps["ingest_data"](
            params=params,
            data_dir=source_dir,
            domain="source",
            expected_data_version=source_data_version,
            mlflow_run_id=run_id,
        ).set_display_name("ingest_data source")
        checks = {}
        for domain, ingested in (("target", target), ("source", source)):
            checks[domain] = steps["validate_data"](
                params=params,
                dataset=ingested.outputs["dataset"],
                mlflow_run_id=run_id,
            ).set_display_name(f"validate_data {domain}")
        features = steps["extract_features"](
            params=params,
            dataset=target.outputs["dataset"],
            mlflow_run_id=run_id,
        ).after(checks["target"], checks["source"])
        trained = steps["train"](
            params=params,
            dataset=target.outputs["dataset"],
            features=features.outputs["features"],
            mlflow_run_id=run_id,
            checkpoint_root=checkpoint_root,
        )
        trained.set_retry(
            cfg.kfp.train_retries, backoff_duration=cfg.kfp.retry_backoff, backoff_factor=2.0
        )
        if cfg.kfp.checkpoint_pvc:
            kubernetes.mount_pvc(
                trained, pvc_name=cfg.kfp.checkpoint_pvc, mount_path=CHECKPOINT_MOUNT
            )
        evaluated = steps["evaluate"](
            params=params,
            dataset=target.outputs["dataset"],
            model=trained.outputs["model"],
            mlflow_run_id=run_id,
        )
        registered = steps["register_model"](
            params=params,
            dataset=target.outputs["dataset"],
            model=trained.outputs["model"],
            evaluation=evaluated.outputs["evaluation"],
            mlflow_run_id=run_id,
        )
        tasks = {
            "ingest_data": [target, source],
            "validate_data": list(checks.values()),
            "extract_features": [features],
            "train": [trained],
            "evaluate": [evaluated],
            "register_model": [registered],
        }
        for step, group in tasks.items():
            for task in group:
                _cluster(task, step, cfg)
        return Outputs(
            source.outputs["dataset"],
            target.outputs["dataset"],
            checks["source"].outputs["report"],
            checks["target"].outputs["report"],
            features.outputs["features"],
            trained.outputs["model"],
            evaluated.outputs["evaluation"],
            registered.outputs["decision"],
        )

    return training
