"""The MLflow model registry: versions and the champion/challenger/previous aliases.

Aliases:

* ``challenger`` - the latest registered candidate, always moved to the new version;
* ``champion`` - the model in production; moves only when the promotion gate says so;
* ``previous`` - the champion before the current one, so ``tlops rollback`` can restore it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlops.config import TrackingConfig
from tlops.tracking.runs import client, store_exists

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"


def alias_version(cfg: TrackingConfig, model_name: str, alias: str) -> str | None:
    """The version holding ``alias``, or None."""
    import mlflow

    try:
        return str(client(cfg).get_model_version_by_alias(model_name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def promote(cfg: TrackingConfig, model_name: str, version: str) -> str | None:
    """Make ``version`` the champion; the old champion becomes ``previous``. Returns the old."""
    mlflow_client = client(cfg)
    old = alias_version(cfg, model_name, CHAMPION)
    if old is not None and old != version:
        mlflow_client.set_registered_model_alias(model_name, PREVIOUS, old)
        mlflow_client.set_model_version_tag(model_name, version, "previous_champion", old)
    mlflow_client.set_registered_model_alias(model_name, CHAMPION, version)
    return old


def rollback(cfg: TrackingConfig, model_name: str) -> tuple[str, str]:
    """Move ``champion`` back to ``previous``; returns (demoted, restored) versions.

    Raises:
        LookupError: There is no ``previous`` version to go back to.
    """
    mlflow_client = client(cfg)
    current = alias_version(cfg, model_name, CHAMPION)
    previous = alias_version(cfg, model_name, PREVIOUS)
    if previous is None or current is None:
        raise LookupError(
            f"{model_name}: no 'previous' version to roll back to (champion: {current})"
        )
    mlflow_client.set_registered_model_alias(model_name, CHAMPION, previous)
    older = mlflow_client.get_model_version(model_name, previous).tags.get("previous_champion")
    if older:
        mlflow_client.set_registered_model_alias(model_name, PREVIOUS, older)
    else:
        mlflow_client.delete_registered_model_alias(model_name, PREVIOUS)
    mlflow_client.set_model_version_tag(model_name, current, "rolled_back", "true")
    return current, previous


def aliases_of(cfg: TrackingConfig, model_name: str, version: str) -> tuple[str, ...]:
    """Aliases held by a version."""
    found = client(cfg).get_model_version(model_name, version).aliases
    return tuple(sorted(found))


def champion_classes(cfg: TrackingConfig, model_name: str) -> tuple[list[str], str] | None:
    """The champion's class map (from its version tags) and its version, or None.

    None when there is no champion, no such model or no registry yet; an embedded SQLite store
    that does not exist yet is not created just to find that out.
    """
    if not store_exists(cfg):
        return None
    try:
        version = client(cfg).get_model_version_by_alias(model_name, CHAMPION)
    except Exception:  # no registry yet, no such model, no champion: validate against params
        return None
    classes = (version.tags or {}).get("classes")
    if not classes:
        return None
    return classes.split(","), str(version.version)


@dataclass(frozen=True)
class VersionInfo:
    """A registered model version: its number, the run that logged it and its tags."""

    name: str
    version: str
    run_id: str
    tags: dict[str, str]
    created_ms: int | None = None  # when it was registered (unix ms)

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``: this version, even after an alias moves."""
        return f"models:/{self.name}/{self.version}"


def version_with_alias(cfg: TrackingConfig, model_name: str, alias: str) -> VersionInfo | None:
    """The version holding ``alias`` (None: no store yet, no such model or alias)."""
    import mlflow

    if not store_exists(cfg):
        return None
    try:
        found = client(cfg).get_model_version_by_alias(model_name, alias)
    except mlflow.exceptions.MlflowException:
        return None
    return VersionInfo(
        model_name,
        str(found.version),
        str(found.run_id),
        dict(found.tags or {}),
        int(found.creation_timestamp) if found.creation_timestamp else None,
    )


def run_artifact(cfg: TrackingConfig, run_id: str, path: str, dst: Path) -> Path | None:
    """Download one artifact of a run into ``dst``; None when the run has no such artifact."""
    import mlflow

    client(cfg)  # sets the tracking URI the download goes through
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=str(dst)
        )
    except (mlflow.exceptions.MlflowException, OSError):
        return None
    return Path(local) if Path(local).exists() else None


def describe(value: Any) -> str:
    """Short string form for tags."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def pinned(cfg: TrackingConfig, uri: str) -> tuple[str, str | None]:
    """``models:/<name>@<alias>`` as the version it names now: ``(models:/<name>/<v>, v)``.

    A server given an alias keeps serving the version it loaded when the alias moves; its
    URI and the version it reports should say which. Other URIs come back as they are.

    Raises:
        LookupError: The alias names no version.
    """
    if not uri.startswith("models:/"):
        return uri, None
    tail = uri.removeprefix("models:/").rstrip("/")
    if "@" in tail:
        name, alias = tail.split("@", 1)
        version = alias_version(cfg, name, alias)
        if version is None:
            raise LookupError(f"{uri}: model {name!r} has no version with alias {alias!r}")
        return f"models:/{name}/{version}", version
    name, _, version = tail.partition("/")
    return uri, version if version.isdigit() else None


def restore_champion(cfg: TrackingConfig, model_name: str, rejected: str, served: str) -> str:
    """Give ``champion`` back to ``served`` after ``rejected`` failed its canary.

    Only while ``champion`` still names ``rejected`` (another run may have moved it since).
    ``previous`` follows as :func:`rollback` moves it when it named ``served``.

    Returns:
        What was done, for the deploy step's reasons.
    """
    if alias_version(cfg, model_name, CHAMPION) != rejected:
        return f"champion alias left alone (it no longer names v{rejected})"
    if alias_version(cfg, model_name, PREVIOUS) == served:
        rollback(cfg, model_name)
    else:
        mlflow_client = client(cfg)
        mlflow_client.set_registered_model_alias(model_name, CHAMPION, served)
        mlflow_client.set_model_version_tag(model_name, rejected, "rolled_back", "true")
    return f"champion alias v{rejected} -> v{served}"
