"""Compile the pipeline to YAML, submit it to a KFP endpoint, or schedule it.

Overrides (``-S train.lr=0.001``) are applied to the params before compiling, so the compiled
graph fits the strategy and the ``params`` default is what runs.
"""

from pathlib import Path
from typing import Any

from tlops.config import Params

COMPILED = Path(__file__).parent / "compiled"
PIPELINES = ("training", "retraining")


def compile_training(params: Params, path: Path, pinned_data: bool = True) -> Path:
    """Compile the training pipeline for ``params`` to ``path`` (YAML)."""
    return compile_pipeline(params, path, "training", pinned_data)


def compile_pipeline(
    params: Params, path: Path, pipeline: str = "training", pinned_data: bool = True
) -> Path:
    """Compile the ``training`` or ``retraining`` pipeline for ``params`` to ``path`` (YAML).

    Raises:
        ValueError: An unknown pipeline name.
    """
    from kfp import compiler

    if pipeline == "training":
        from pipelines.training import build_training_pipeline

        built = build_training_pipeline(params, pinned_data)
    elif pipeline == "retraining":
        from pipelines.retraining import build_retraining_pipeline

        built = build_retraining_pipeline(params)  # never pinned: it runs on whatever is new
    else:
        raise ValueError(f"--pipeline {pipeline!r}: expected one of {', '.join(PIPELINES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(built, str(path))
    return path


def data_versions(params: Params, from_dvc_file: bool) -> dict[str, str]:
    """The ``data_version_<domain>`` arguments of a run, resolved before it starts.

    Args:
        params: Resolved params (``data.<domain>`` for each domain the strategy uses).
        from_dvc_file: Take the version recorded in ``<dir>.dvc`` (what a pod pulls) when there
            is one; otherwise, and always with False, hash the directory as it is now.

    A directory of a DVC repository (``data.<domain>: {repo, rev, path}``) has the version
    the repository records at that revision.

    Raises:
        FileNotFoundError: Neither the directory nor its ``.dvc`` file exists here, or the data
            is an object-store prefix (its version is known only after ingest).
        tlops.data.manifest.DataDirError: The DVC repository or its path cannot be read.
    """
    from pipelines.training import domains_used
    from tlops.config import DvcData
    from tlops.data import location
    from tlops.data.version import directory_md5, tracked_md5

    versions = {}
    for domain in domains_used(params):
        where = params.data.location(domain)
        if isinstance(where, DvcData):  # what the repository records at that revision
            versions[f"data_version_{domain}"] = location.tracked_md5(where)
            continue
        if not isinstance(where, Path):
            raise FileNotFoundError(
                f"data.{domain} = {where}: the version of an object-store prefix is known only "
                "once ingest_data has read it"
            )
        folder = where
        dvc_file = folder.with_name(folder.name + ".dvc")
        tracked = tracked_md5(dvc_file) if from_dvc_file and dvc_file.is_file() else None
        if tracked is not None:
            versions[f"data_version_{domain}"] = tracked
        elif folder.is_dir():
            versions[f"data_version_{domain}"] = directory_md5(folder)
        else:
            raise FileNotFoundError(
                f"data.{domain} = {folder}: neither the directory nor {dvc_file} exists here, so "
                "its data version (the cache key of the data steps) cannot be resolved"
            )
    return versions


class EndpointError(RuntimeError):
    """The KFP endpoint did not answer: one line naming it and the cause."""


def _unreachable(host: str, exc: BaseException) -> EndpointError:
    """The endpoint and the innermost cause, not urllib3's retry chain."""
    cause: BaseException = exc
    while isinstance(getattr(cause, "reason", None), BaseException):
        cause = cause.reason  # type: ignore[attr-defined]  # urllib3's errors carry it
    text = str(cause).split(": ", 1)[-1] if ": " in str(cause) else str(cause)
    return EndpointError(f"KFP endpoint {host}: cannot reach it ({text}); nothing was sent")


def _client(host: str, namespace: str | None) -> Any:
    import warnings

    import kfp
    import urllib3

    with warnings.catch_warnings():
        # kfp's own notice on every client, not about this call: "This client only works with
        # Kubeflow Pipeline v2.0.0-beta.2 and later versions" (tlops compiles for v2)
        warnings.filterwarnings("ignore", "This client only works with", FutureWarning)
        try:
            return kfp.Client(host=host, namespace=namespace)
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(host, exc) from None


def _pod_readable(params: Params, pinned: bool = True) -> Params:
    """``params`` with its local data in the form a pod reads (or an error: nothing is sent)."""
    from pipelines.training import domains_used
    from tlops.data.for_pods import for_pods

    resolved, changes = for_pods(params, list(domains_used(params)), pinned)
    for change in changes:
        print(f"data.{change.domain}: {change.before} -> {change.after} ({change.note})")
    return resolved


def submit(
    params: Params,
    host: str,
    run_name: str,
    experiment: str,
    namespace: str | None = None,
) -> tuple[str, dict[str, str]]:
    """Compile the pipeline for ``params`` and start one run on a KFP endpoint.

    The run's data versions come from the ``.dvc`` files (what the pods pull) or the
    directories of this checkout, so the data steps hit the cache exactly when the data is the
    same. Data this checkout cannot see has no version to pin: the run is compiled with its
    data steps uncached (see :func:`schedule`).

    Returns:
        The run id, and the data versions it was pinned to (empty: not pinned, not cached).
    """
    import tempfile

    import urllib3

    try:
        arguments = data_versions(params, from_dvc_file=True)
    except FileNotFoundError:
        arguments = {}
    params = _pod_readable(params)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_training(params, Path(tmp) / "training.yaml", bool(arguments))
        client = _client(host, namespace)
        try:
            result = client.create_run_from_pipeline_package(
                str(package),
                arguments=arguments,
                run_name=run_name,
                experiment_name=experiment,
                namespace=namespace,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(host, exc) from None
    return str(result.run_id), arguments


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
    job_name: str,
    experiment: str,
    namespace: str | None = None,
    pipeline: str = "training",
) -> str:
    """Create a recurring run (one at a time, no catch-up); returns its id.

    A recurring run cannot know the version of the data it will find, so it is compiled with
    the data steps uncached (``pinned_data=False``): new data can never hit a stale cache.
    ``pipeline="retraining"`` schedules the retraining pipeline (detect_change first).
    """
    import tempfile

    if pipeline not in PIPELINES:  # before any request
        raise ValueError(f"--pipeline {pipeline!r}: expected one of {', '.join(PIPELINES)}")
    params = _pod_readable(params, pinned=False)  # each run reads the branch's data then
    client = _client(host, namespace)
    experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(
            params, Path(tmp) / f"{pipeline}.yaml", pipeline, pinned_data=False
        )
        job = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job_name,
            cron_expression=kfp_cron(cron),
            max_concurrency=1,
            no_catchup=True,
            pipeline_package_path=str(package),
            params={},
            enabled=True,
        )
    return str(job.recurring_run_id)
