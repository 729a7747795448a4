"""Where ingest_data reads from: a DVC repository at a revision (real git, real DVC, a
local-folder remote) and bad locations, each with a clear error naming it.

The S3 cases (the DVC remote on S3, an s3:// prefix, the endpoint down) run against a real S3
endpoint in test_prod_local.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import run_step
from tlops.config import ConfigError, DvcData, ObjectPrefix, Params, apply_overrides
from tlops.data.manifest import DataDirError

pytestmark = pytest.mark.integration
DVC = [sys.executable, "-m", "dvc"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def data_repo(tmp_path: Path, make_tree: Callable[..., Path]) -> tuple[Path, str, str]:
    """A git + DVC repository whose data/target is pushed to a local-folder remote, twice.

    Returns the repository, the first commit and the DVC md5 of the data at that commit; the
    working tree's DVC cache is removed, so a read must pull from the remote.
    """
    repo = tmp_path / "data-repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@t"), _git(repo, "config", "user.name", "t")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([*DVC, "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run(
        [*DVC, "remote", "add", "-d", "storage", str(tmp_path / "remote")], cwd=repo, check=True
    )
    tree = make_tree("tree", per_class=12)
    shutil.copytree(tree, repo / "data" / "target")
    subprocess.run([*DVC, "add", "-q", "data/target"], cwd=repo, check=True, env=env)
    _git(repo, "add", "-A"), _git(repo, "commit", "-qm", "v1")
    first = _git(repo, "rev-parse", "HEAD")
    md5 = next(
        line.split()[-1]
        for line in (repo / "data/target.dvc").read_text().splitlines()
        if "md5" in line
    )
    subprocess.run([*DVC, "push", "-q"], cwd=repo, check=True, env=env)
    # a second version on main: a revision pins the first
    (repo / "data/target/cat/img_000.png").unlink()
    subprocess.run([*DVC, "add", "-q", "data/target"], cwd=repo, check=True, env=env)
    _git(repo, "commit", "-qam", "v2")
    subprocess.run([*DVC, "push", "-q"], cwd=repo, check=True, env=env)
    shutil.rmtree(repo / ".dvc" / "cache")
    return repo, first, md5


def _at(params: Params, location: object) -> Params:
    return apply_overrides(params, {"data.target": location})


def test_ingest_pulls_a_revision_of_a_dvc_repository_with_the_recorded_version(
    params: Params, data_repo: tuple[Path, str, str], tmp_path: Path
) -> None:
    repo, first, md5 = data_repo
    location = {"repo": str(repo), "rev": first, "path": "data/target"}
    run_step("ingest_data", _at(params, location), {}, {"dataset": tmp_path / "out"},
             domain="target")  # fmt: skip
    info = json.loads((tmp_path / "out" / "ingest.json").read_text())
    assert info["data_version"] == md5
    assert info["version_source"] == "dvc"
    assert info["n_images"] == 36  # the first revision: before an image was removed
    assert info["data_dir"] == f"{repo}@{first}:data/target"
    assert len(list((tmp_path / "out" / "images").rglob("*.png"))) == 36
    # the pipeline's pinned data version is the same value, read without downloading
    from pipelines.cluster import data_versions

    assert data_versions(_at(params, location), from_dvc_file=True) == {"data_version_target": md5}


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ({"repo": "{repo}", "rev": "main", "path": "data/nothing"}, "no such path"),
        ({"repo": "{repo}", "rev": "no-such-rev", "path": "data/target"}, "cannot open"),
        ({"repo": "{missing}", "rev": "main", "path": "data/target"}, "cannot open"),
        ({"repo": "{repo}", "rev": "main", "path": "data"}, "not a directory tracked by DVC"),
    ],
)
def test_a_bad_dvc_location_is_a_clear_error_and_writes_nothing(
    params: Params,
    data_repo: tuple[Path, str, str],
    tmp_path: Path,
    location: dict[str, str],
    message: str,
) -> None:
    repo = data_repo[0]
    filled = {k: v.format(repo=repo, missing=tmp_path / "no-repo") for k, v in location.items()}
    with pytest.raises(DataDirError, match=message) as error:
        run_step("ingest_data", _at(params, filled), {}, {"dataset": tmp_path / "out"},
                 domain="target")  # fmt: skip
    assert f":{filled['path']}" in str(error.value)  # names the location
    assert not (tmp_path / "out").exists()


def test_a_remote_without_the_data_is_a_clear_error_naming_the_remote(
    params: Params, data_repo: tuple[Path, str, str], tmp_path: Path
) -> None:
    repo = data_repo[0]
    shutil.rmtree(tmp_path / "remote")  # the DVC remote lost its files
    location = {"repo": str(repo), "rev": "main", "path": "data/target"}
    with pytest.raises(DataDirError, match=r"DVC remote 'storage' \(.*remote\) failed"):
        run_step("ingest_data", _at(params, location), {}, {"dataset": tmp_path / "out"},
                 domain="target")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_data_locations_parse_from_params_and_overrides(params: Params) -> None:
    prefix = _at(params, "s3://bucket/digits/target/").data.target
    assert prefix == ObjectPrefix(url="s3://bucket/digits/target")
    dvc = _at(params, {"repo": "https://git.example/data.git", "path": "data/target"})
    assert isinstance(dvc.data.target, DvcData) and dvc.data.target.rev is None
    assert str(dvc.data.target) == "https://git.example/data.git@HEAD:data/target"
    # the dumped params (the pipeline parameter) read back to the same location
    again = Params.model_validate(json.loads(json.dumps(dvc.model_dump(mode="json"))))
    assert again.data.target == dvc.data.target
    assert _at(params, "s3://bucket/x").model_dump(mode="json")["data"]["target"] == "s3://bucket/x"
    with pytest.raises(ConfigError, match="expected an object-store prefix"):
        _at(params, "gs://bucket/x")
    with pytest.raises(ConfigError, match="path"):
        _at(params, {"repo": "https://git.example/data.git"})
    with pytest.raises(ValueError, match="not a local directory"):
        _at(params, "s3://bucket/x").data.directory("target")
