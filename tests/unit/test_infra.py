"""Container image definitions pass hadolint (no Docker engine here: they are linted, not built)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

HADOLINT = Path(sys.executable).parent / "hadolint"


def test_dockerfile_passes_hadolint() -> None:
    dockerfile = REPO / "infra" / "docker" / "Dockerfile"
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
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
