"""What ``tlops run --runner docker`` gives each task, and what it refuses before any starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO
from tlops.config import load_params
from tlops.runner.containers import (
    ContainerRunError,
    check_artifacts,
    check_tracking,
    quantity_bytes,
    task_environment,
    with_absolute_data,
)


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("8Gi", 8 * 1024**3),
        ("512Mi", 512 * 1024**2),
        ("1G", 10**9),
        ("100", 100),
        ("2k", 2000),
        ("1Ei", 1024**6),
        ("1P", 10**15),
    ],
)
def test_quantities_in_bytes(quantity: str, expected: int) -> None:
    assert quantity_bytes(quantity) == expected


def test_a_bad_quantity_is_named() -> None:
    with pytest.raises(ValueError, match="'8 gigs': expected a Kubernetes quantity"):
        quantity_bytes("8 gigs")


def test_a_task_gets_the_secrets_variables_and_nothing_else_of_this_environment() -> None:
    # a secret of the user's own, whose variable no prefix rule would forward
    params = load_params(
        REPO / "params.yaml", {"kfp.secrets.team-registry": {"token": "REG_TOKEN"}}
    )
    environ = {
        "REG_TOKEN": "s3cr3t",
        "MLFLOW_TRACKING_USERNAME": "pipeline",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "TLOPS_DEVICE": "cpu",
        "HOME": "/root",
        "PATH": "/usr/bin",
        "SSH_AUTH_SOCK": "/tmp/agent",
    }
    env = task_environment(params, environ)
    assert env == {k: v for k, v in environ.items() if k not in ("HOME", "PATH", "SSH_AUTH_SOCK")}


def test_local_data_is_made_absolute_and_mounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    params = load_params(
        REPO / "params.yaml",
        {
            "data.target": "data/target",
            "data.source": {"repo": "file:///srv/data.git", "path": "data/source"},
            "data.target_unlabeled": "new",
        },
    )
    absolute, mounts = with_absolute_data(params)
    assert absolute.data.target == tmp_path / "data" / "target"
    assert absolute.data.target_unlabeled == tmp_path / "new"
    assert sorted(mounts) == sorted(
        [tmp_path / "data" / "target", Path("/srv/data.git"), tmp_path / "new"]
    )
    assert absolute.data.source.repo == "/srv/data.git"
    remote = load_params(
        REPO / "params.yaml", {"data.source": {"repo": "https://git.example/d", "path": "d"}}
    )
    assert with_absolute_data(remote)[1] == [(tmp_path / "data" / "target")]


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "mlruns", "file:///tmp/mlruns"])
def test_a_tracking_store_on_disk_is_refused(uri: str) -> None:
    with pytest.raises(
        ContainerRunError, match=f"the tracking store {uri} is on this machine's disk"
    ):
        check_tracking(uri)
    check_tracking("http://127.0.0.1:5000")  # a server is what the containers share


def test_a_missing_container_tool_says_how_to_install_it() -> None:
    from infra.containers import ContainerError, _tool

    with pytest.raises(ContainerError, match=r"no-such-engine is not installed .*make image"):
        _tool("no-such-engine")


def test_a_relative_dvc_repository_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    params = load_params(
        REPO / "params.yaml", {"data.target": {"repo": "../registry", "path": "data/target"}}
    )
    absolute, mounts = with_absolute_data(params)
    assert absolute.data.target.repo == str(tmp_path.parent / "registry")
    assert tmp_path.parent / "registry" in mounts


@pytest.mark.parametrize("location", ["file:///srv/mlartifacts", "/srv/mlartifacts"])
def test_artifacts_on_this_machines_disk_are_refused(location: str) -> None:
    with pytest.raises(ContainerRunError, match=f"keeps its artifacts at {location}"):
        check_artifacts(location, "tlops")
    check_artifacts("mlflow-artifacts:/1", "tlops")  # served by the server: shared
    check_artifacts("s3://bucket/mlflow", "tlops")
    check_artifacts(None, "tlops")  # no experiment yet
