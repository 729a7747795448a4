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
