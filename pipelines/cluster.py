"""Compile the pipeline to YAML, submit it to a KFP endpoint, or schedule it.

``--param`` values are either pipeline parameters (``target_dir=...``) or dotted keys of
params.yaml (``train.lr=0.001``), which change that key in the run's ``params`` argument.
"""

import json
from pathlib import Path
from typing import Any

import yaml

from tlops.config import Params

PIPELINE_ARGS = (
    "target_dir",
    "source_dir",
    "target_data_version",
    "source_data_version",
    "checkpoint_root",
)
COMPILED = Path(__file__).parent / "compiled"


def compile_training(params: Params, path: Path) -> Path:
    """Compile the training pipeline for ``params`` to ``path`` (YAML)."""
    from kfp import compiler

    from pipelines.training import build_training_pipeline

    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_training_pipeline(params), str(path))
    return path


def arguments(params: Params, overrides: list[str]) -> dict[str, Any]:
    """Pipeline arguments from ``key=value`` strings.

    Raises:
        ValueError: An item is not ``key=value``, or a params key breaks a rule.
    """
    raw = params.model_dump(mode="json")
    args: dict[str, Any] = {}
    changed = False
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {item!r}: expected key=value")
        if key in PIPELINE_ARGS:
            args[key] = value
            continue
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"--param {key}: {part!r} is not a section of params.yaml")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"--param {key}: params.yaml has no key {leaf!r} there")
        node[leaf] = yaml.safe_load(value)
        changed = True
    if changed:
        validated = Params.model_validate(raw)  # fail here, not in the cluster
        args["params"] = json.dumps(validated.model_dump(mode="json"), sort_keys=True)
    return args


def _client(host: str, namespace: str | None) -> Any:
    import kfp

    return kfp.Client(host=host, namespace=namespace)


def submit(
    params: Params,
    host: str,
    overrides: list[str],
    run_name: str,
    experiment: str,
    namespace: str | None = None,
) -> str:
    """Compile and start one run on a KFP endpoint; returns the run id."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        package = compile_training(params, Path(tmp) / "training.yaml")
        result = _client(host, namespace).create_run_from_pipeline_package(
            str(package),
            arguments=arguments(params, overrides),
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
        )
    return str(result.run_id)


def kfp_cron(cron: str) -> str:
    """KFP's cron has a seconds field first: a 5-field expression gets ``0`` seconds."""
    fields = cron.split()
    if len(fields) == 5:
        return "0 " + cron.strip()
    if len(fields) == 6:
        return cron.strip()
    raise ValueError(f"--cron {cron!r}: expected 5 fields (min hour day month weekday) or 6")


def schedule(
    params: Params,
    host: str,
    cron: str,
    overrides: list[str],
    job_name: str,
    experiment: str,
    namespace: str | None = None,
) -> str:
    """Create a recurring run (one at a time, no catch-up); returns its id."""
    import tempfile

    client = _client(host, namespace)
    experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_training(params, Path(tmp) / "training.yaml")
        job = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job_name,
            cron_expression=kfp_cron(cron),
            max_concurrency=1,
            no_catchup=True,
            pipeline_package_path=str(package),
            params=arguments(params, overrides),
            enabled=True,
        )
    return str(job.recurring_run_id)
