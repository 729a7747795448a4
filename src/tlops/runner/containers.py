"""Every task of a local run in the component image, through KFP's own ``DockerRunner``.

``tlops run --runner docker`` (and ``retrain``): what a cluster's pods do, on one machine with a
Docker API (Docker, or podman's ``podman system service``; ``DOCKER_HOST`` says where). Each
task runs in ``kfp.base_image`` as ``kfp.task_uid``:``task_gid`` in the image's empty working
directory, on the host's network (so loopback servers, an MLflow server or an S3 endpoint on
this machine, are reachable), with ``/dev/shm`` as large as ``kfp.shm_size``.

What a pod would get from the cluster, a task gets here:

* credentials from this process's environment: the variables the ``kfp.secrets`` name (what
  the cluster's secrets set), plus ``MLFLOW_*``, ``AWS_*`` and ``TLOPS_DEVICE``;
* the pipeline root, bind-mounted at the same path (KFP's own mount), made writable by the
  task user;
* local data that params.yaml names (directories, a DVC repository on this machine), mounted
  read-only at their absolute paths, and the checkpoint folder (a PVC on a cluster), read-write.

A tracking store on this machine's disk (SQLite, a folder) cannot be shared with containers;
the run is refused before any task starts, as it is when the image or the API is missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlops.config import Params
from tlops.config.data import DvcData
from tlops.config.sections import DOMAINS
from tlops.tracking.runs import GIT_SHA_ENV

# what a task gets from this process's environment besides the secrets' variables
FORWARDED_PREFIXES = ("MLFLOW_", "AWS_")
FORWARDED_NAMES = ("TLOPS_DEVICE",)


class ContainerRunError(RuntimeError):
    """The containerized run cannot start: no Docker API, no image, or a store on disk."""


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes quantity (``8Gi``, ``512M``, ``1000``) in bytes.

    Raises:
        ValueError: Not a quantity of bytes.
    """
    from kubernetes.utils import parse_quantity  # the Kubernetes client's own reading

    try:
        return int(parse_quantity(quantity))
    except ValueError as exc:
        raise ValueError(
            f"{quantity!r}: expected a Kubernetes quantity such as 8Gi or 512M"
        ) from exc


def task_environment(params: Params, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables a task gets: the secrets' (as on a cluster) and the tracking/S3 ones."""
    env = dict(os.environ if environ is None else environ)
    names = {name for keys in params.kfp.secrets.values() for name in keys.values()}
    return {
        key: value
        for key, value in sorted(env.items())
        if key in names or key in FORWARDED_NAMES or key.startswith(FORWARDED_PREFIXES)
    }


def _local_repo(location: DvcData) -> Path | None:
    """The folder of a DVC repository on this machine (a path or ``file://``), else None."""
    repo = location.repo.removeprefix("file://")
    if "://" in repo or ":" in repo.split("/")[0]:  # https://, ssh://, git@host:path
        return None
    return Path(repo).resolve()


def with_absolute_data(params: Params) -> tuple[Params, list[Path]]:
    """``params`` with its local data folders absolute, and the folders to mount read-only.

    A task's working directory is the image's, not this one: a relative ``data/target`` would
    name nothing there.
    """
    updates: dict[str, Any] = {}
    mounts: list[Path] = []
    for domain in DOMAINS:
        location = params.data.location(domain)
        if isinstance(location, Path):
            updates[domain] = location.resolve()
            mounts.append(updates[domain])
        elif isinstance(location, DvcData) and (repo := _local_repo(location)) is not None:
            updates[domain] = location.model_copy(update={"repo": str(repo)})
            mounts.append(repo)
    for name in ("target_unlabeled", "target_labeled"):
        folder = getattr(params.data, name)
        if folder is not None:
            updates[name] = Path(folder).resolve()
            mounts.append(updates[name])
    data = params.data.model_copy(update=updates)
    return params.model_copy(update={"data": data}), list(dict.fromkeys(mounts))


def check_tracking(uri: str) -> None:
    """Refuse a tracking store on this machine's disk (the containers cannot share it).

    Raises:
        ContainerRunError: ``uri`` is not an http(s) server.
    """
    if not uri.startswith(("http://", "https://")):
        raise ContainerRunError(
            f"--runner docker: the tracking store {uri} is on this machine's disk, which the "
            "task containers do not share; use an MLflow server (MLFLOW_TRACKING_URI or "
            "tracking.tracking_uri; `make prod-local RUNNER=docker` starts one)"
        )


def check_artifacts(location: str | None, experiment: str) -> None:
    """Refuse an experiment whose artifacts go to this machine's disk.

    The server hands the client that path, and each task would write into its own container.

    Raises:
        ContainerRunError: ``location`` is a local path or a ``file:`` URI.
    """
    if location and (location.startswith("file:") or location.startswith("/")):
        raise ContainerRunError(
            f"--runner docker: experiment {experiment!r} keeps its artifacts at {location}, a "
            "folder of this machine the task containers do not share; use a server that "
            "serves artifacts (mlflow server --serve-artifacts) or an object store"
        )


def image_commit(client: Any, image: str) -> str | None:
    """The commit ``image`` was built from (its ``TLOPS_GIT_SHA``), if it records one."""
    env = client.images.get(image).attrs.get("Config", {}).get("Env") or []
    for item in env:
        key, _, value = item.partition("=")
        if key == GIT_SHA_ENV:
            return str(value)
    return None


def _client() -> Any:
    import docker

    where = os.environ.get("DOCKER_HOST", "the default socket /var/run/docker.sock")
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # docker raises several types for 'nobody there'
        raise ContainerRunError(
            f"--runner docker: no Docker API answers at {where} ({type(exc).__name__}): start "
            "Docker, or podman's API (podman system service unix:///path/podman.sock) and set "
            "DOCKER_HOST=unix:///path/podman.sock"
        ) from exc
    return client


def check_image(client: Any, image: str) -> None:
    """Refuse an image the engine does not have (KFP would try to pull it, and wait).

    Raises:
        ContainerRunError: ``image`` is not in the engine's store.
    """
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound as exc:
        raise ContainerRunError(
            f"--runner docker: image {image} (kfp.base_image) is not on this machine: build it "
            "(make image) or pull it"
        ) from exc


def _writable_by(path: Path, uid: int, gid: int) -> None:
    """Create ``path`` and let the task user write in it (the owner of all of it, as root).

    Not as root, the engine maps the task user to a uid of its own (rootless podman: a sub-uid),
    so the folder is opened to every user: a shared machine's users could write there too.
    """
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for folder, _, files in os.walk(path):  # a crashed run may have left root's files
            os.chown(folder, uid, gid)
            for name in files:
                os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)
    else:
        path.chmod(0o777)


def docker_runner(
    params: Params,
    pipeline_root: Path,
    checkpoint_root: Path,
    echo: Callable[[str], None] = print,
) -> tuple[Any, Params]:
    """KFP's ``DockerRunner`` for ``params``, after checking that the run can start.

    Args:
        params: The resolved params (``kfp.base_image``, ``task_uid``, ``shm_size``, data).
        pipeline_root: KFP's pipeline root (created here, writable by the task user).
        checkpoint_root: The checkpoint folder the tasks get (mounted at the same path).
        echo: Receives a warning line (an image built from another commit than this one).

    Returns:
        The runner for ``kfp.local.init``, and ``params`` with its local data folders absolute
        (the pipeline must be built from these).

    Raises:
        ContainerRunError: The store or the experiment's artifacts are on disk, no Docker API
            answers, or the image is missing.
    """
    from docker.types import Mount
    from kfp import local

    from tlops.tracking.runs import client as tracking_client
    from tlops.tracking.runs import git_sha, tracking_uri

    check_tracking(tracking_uri(params.tracking))
    experiment = tracking_client(params.tracking).get_experiment_by_name(params.tracking.experiment)
    check_artifacts(
        experiment.artifact_location if experiment else None, params.tracking.experiment
    )
    client = _client()
    try:
        check_image(client, params.kfp.base_image)
        built_from, here = image_commit(client, params.kfp.base_image), git_sha()
    finally:
        client.close()
    if built_from and here != "unknown" and built_from != here:
        echo(
            f"note: image {params.kfp.base_image} was built from commit {built_from}, this "
            f"checkout is {here}: the tasks run the image's code (make image rebuilds it)"
        )
    absolute, data = with_absolute_data(params)
    uid, gid = params.kfp.task_uid, params.kfp.task_gid
    _writable_by(pipeline_root, uid, gid)
    _writable_by(checkpoint_root, uid, gid)
    mounts = [Mount(str(path), str(path), type="bind", read_only=True) for path in data]
    mounts.append(Mount(str(checkpoint_root), str(checkpoint_root), type="bind"))
    runner = local.DockerRunner(
        user=f"{uid}:{gid}",
        network_mode="host",
        environment=task_environment(params),
        mounts=mounts,
        shm_size=quantity_bytes(params.kfp.shm_size),
    )
    return runner, absolute
