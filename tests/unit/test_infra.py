"""Container image definitions pass hadolint (test_containers.py builds and runs the image)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tlops.tracking.runs import GIT_SHA_ENV, git_sha

HADOLINT = Path(sys.executable).parent / "hadolint"
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_copies_everything_the_components_import() -> None:
    text = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    for needed in ("requirements.lock", "src", "components", "pipelines", "pyproject.toml"):
        assert f"COPY {needed}" in text or f" {needed} " in text, needed


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_the_distribution_holds_tlops_only(tmp_path: Path) -> None:
    import shutil
    import zipfile

    # build from a copy of what the build reads: setuptools writes build/ beside its input
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("components", "pipelines"):  # present, as in the repository, yet left out
        shutil.copytree(REPO / folder, source / folder)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("tlops-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"tlops"}, tops
    # components/ and pipelines/ travel in the image, on its PYTHONPATH
    assert "PYTHONPATH=/app" in (REPO / "infra" / "docker" / "Dockerfile").read_text()


def test_the_image_has_a_cuda_and_a_cpu_variant_from_the_one_lock_file() -> None:
    text = DOCKERFILE.read_text()
    assert "FROM base AS deps-cuda" in text and "FROM base AS deps-cpu" in text
    assert "ARG TORCH_BUILD=cuda" in text and "FROM deps-${TORCH_BUILD} AS app" in text
    # the CPU variant drops exactly torch, torchvision and the CUDA wheels of the lock
    (pattern,) = re.findall(r"grep -v -E '(.+?)' requirements.lock", text)
    lock = [
        line
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    dropped = {line.split("==")[0] for line in lock if re.search(pattern, line)}
    assert {"torch", "torchvision", "triton", "nvidia-cublas", "cuda-toolkit"} <= dropped
    assert all(
        name in ("torch", "torchvision", "triton") or name.startswith(("nvidia-", "cuda-"))
        for name in dropped
    ), dropped
    assert "torchmetrics" not in dropped  # a name that starts like torch stays
    for name in ("torch", "torchvision"):  # the versions the CPU builds are pinned to
        assert any(line.startswith(f"{name}==") for line in lock)


def test_the_tasks_run_as_a_user_in_a_folder_it_owns() -> None:
    text = DOCKERFILE.read_text()
    assert re.findall(r"^USER (\S+)", text, re.M)[-1] == "10001:10001"
    assert re.findall(r"^WORKDIR (\S+)", text, re.M)[-1] == "/work"
    assert "install -d -o 10001 -g 10001 /work" in text  # relative cache paths land here
    assert "HOME=/home/tlops" in text


def test_the_image_records_the_commit_it_was_built_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = DOCKERFILE.read_text()
    assert "ARG GIT_SHA=unknown" in text and f"ENV {GIT_SHA_ENV}=${{GIT_SHA}}" in text
    monkeypatch.delenv(GIT_SHA_ENV, raising=False)
    assert git_sha(tmp_path) == "unknown"  # no git repository there, as in the image
    monkeypatch.setenv(GIT_SHA_ENV, "0123abc")
    assert git_sha(tmp_path) == "0123abc"
    assert git_sha(REPO) not in ("unknown", "0123abc")  # a checkout's own commit wins
