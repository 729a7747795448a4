"""A labeling round through a real Label Studio server on loopback, as a user runs it.

The server comes from ``.venv-labelstudio`` (``make label-studio``; ``make test`` installs
it) and is started and stopped here. ``tlops labels push`` sends a select_labels list, an
annotator answers through Label Studio's own API (the way its web page does), and ``tlops
labels pull`` writes the labeled drop into a DVC repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers import free_port
from tests.unit.test_labels_pull import _selection
from tlops.labeling.server import StudioServer
from tlops.labeling.studio import Studio, StudioError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VENV = Path(os.environ.get("TLOPS_LABEL_STUDIO", REPO / ".venv-labelstudio"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudioServer]:
    if not (VENV / "bin" / "label-studio").is_file():
        pytest.fail(f"{VENV}: Label Studio is not installed; run `make label-studio`")
    data = tmp_path_factory.mktemp("label-studio")
    studio = StudioServer(VENV, data / "data", free_port())
    log = data / "label-studio.log"
    process = studio.start(log)
    try:
        studio.wait(process, log)
        yield studio
    finally:
        StudioServer.stop(process)


def _tlops(cwd: Path, studio: StudioServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "LABEL_STUDIO_URL": studio.url,
        "LABEL_STUDIO_API_KEY": studio.token,
        "COLUMNS": "200",
    }
    return subprocess.run(
        ["tlops", "labels", *args, "--params", str(REPO / "params.yaml")],
        cwd=cwd,
        env=env,
        text=True,
        capture_output=True,
        check=False,
    )


def test_a_labeling_round(server: StudioServer, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)
    listed = _selection(project, 5)  # 2 audit, 3 selected; the champion's answers i % 3
    pushed = _tlops(project, server, "push", str(listed))
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "5 tasks sent, 0 already there" in pushed.stdout
    again = _tlops(project, server, "push", str(listed))
    assert "0 tasks sent, 5 already there" in again.stdout  # never sent twice

    studio = Studio(server.url, server.token)
    project_id = studio.find("tlops-digits labels")
    assert project_id is not None
    tasks = sorted(studio.export(project_id), key=lambda t: t["id"])
    assert [t["data"]["role"] for t in tasks] == ["audit", "audit", "select", "select", "select"]
    # the annotator answers four (one the model got wrong), skips one
    for task, label in zip(tasks, ["7", "3", "2", None, "9"], strict=True):
        studio.annotate(task["id"], label)

    pulled = _tlops(project, server, "pull", "data/labeled")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert "2 audit images (test split), 2 selected (train split); 1 skipped" in pulled.stdout
    drop = project / "data" / "labeled"
    files = sorted(p.relative_to(drop).as_posix() for p in drop.rglob("*.png"))
    assert files == ["test/3/u1.png", "test/7/u0.png", "train/2/u2.png", "train/9/u4.png"]
    assert (project / "data" / "labeled.dvc").is_file()
    before = {p: p.read_bytes() for p in drop.rglob("*") if p.is_file()}
    assert _tlops(project, server, "pull", "data/labeled").returncode == 0
    assert {p: p.read_bytes() for p in drop.rglob("*") if p.is_file()} == before


def test_a_project_of_other_classes_is_refused(server: StudioServer) -> None:
    studio = Studio(server.url, server.token)
    studio.project("two classes", ["a", "b"])
    with pytest.raises(StudioError, match="labels other classes"):
        studio.project("two classes", ["a", "b", "c"])


def test_a_label_studio_that_is_down(server: StudioServer, tmp_path: Path) -> None:
    listed = _selection(tmp_path, 2)
    down = StudioServer(VENV, tmp_path, free_port())  # nothing listens there
    result = _tlops(tmp_path, down, "push", str(listed))
    assert result.returncode == 1
    assert f"Label Studio at {down.url} does not answer" in result.stderr
    result = _tlops(tmp_path, down, "pull", str(tmp_path / "drop"), "--no-dvc")
    assert result.returncode == 1 and "does not answer" in result.stderr
    assert not (tmp_path / "drop").exists()
