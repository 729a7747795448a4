"""The documentation site builds strictly, its generated pages are current, and its runnable
command blocks run as written on the demo project.

A command block is runnable when the line before its fence is ``<!-- runnable -->``: the test
runs the block with bash (``-e -o pipefail``) in a copy of the tiny demo project that two
`tlops run`s left (a champion and a challenger in its MLflow store), with the venv's commands on
the path, as a user who followed the page would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, project_env

pytestmark = pytest.mark.integration

MKDOCS = Path(os.environ.get("TLOPS_MKDOCS", REPO / ".venv-docs/bin/mkdocs"))
DOCS = REPO / "docs"
MARKER = "<!-- runnable -->"
_BLOCK = re.compile(r"^<!-- runnable -->\n```(\w*)\n(.*?)^```$", re.M | re.S)


def runnable_blocks(root: Path = DOCS) -> list[tuple[str, str]]:
    """Every block marked runnable: (``page:line``, its commands).

    Raises:
        ValueError: A marker that is not followed by a ``bash`` fence.
    """
    found = []
    for page in sorted(root.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        blocks = list(_BLOCK.finditer(text))
        if text.count(MARKER) != len(blocks) or any(b.group(1) != "bash" for b in blocks):
            raise ValueError(f"{page}: a {MARKER} marker must precede a ```bash block")
        for block in blocks:
            line = text[: block.start()].count("\n") + 2
            found.append((f"{page.relative_to(root)}:{line}", block.group(2)))
    return found


def _mkdocs() -> Path:
    if not MKDOCS.is_file():
        pytest.fail(f"{MKDOCS}: not installed; `make docs-tools` installs mkdocs-material")
    return MKDOCS


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    argv = [str(_mkdocs()), "build", "--strict", "-f", str(config), "--site-dir", str(site)]
    return subprocess.run(
        argv,
        cwd=config.parent, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    done = _build(REPO / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    built = tmp_path / "site"
    for page in ("index.html", "reference/parameters/index.html", "benchmarks/index.html"):
        assert (built / page).is_file(), page
    # BENCHMARKS.md is included, not copied: its first table is on the page
    benchmarks = (built / "benchmarks/index.html").read_text(encoding="utf-8")
    assert "Benchmarks" in benchmarks and "<table>" in benchmarks


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(DOCS, copy / "docs")
    shutil.copy(REPO / "mkdocs.yml", copy / "mkdocs.yml")
    shutil.copy(REPO / "BENCHMARKS.md", copy / "BENCHMARKS.md")
    page = copy / "docs" / "tuning.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    done = _build(copy / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    assert "no-such-page.md" in done.stdout + done.stderr


def test_a_marker_without_a_bash_block_is_refused(tmp_path: Path) -> None:
    (tmp_path / "page.md").write_text(f"{MARKER}\n```python\nprint(1)\n```\n")
    with pytest.raises(ValueError, match="must precede a ```bash block"):
        runnable_blocks(tmp_path)


BLOCKS = runnable_blocks()


def test_the_pages_mark_commands_to_run() -> None:
    assert len(BLOCKS) >= 3, BLOCKS


@pytest.fixture(scope="module")
def demo_project(
    two_runs: tuple[str, str], pipeline_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    copy = tmp_path_factory.mktemp("docs") / "project"
    shutil.copytree(pipeline_project, copy, ignore=shutil.ignore_patterns("*.lock"))
    # the store names its artifact folder by absolute path: the copy keeps reading the original's
    return copy


@pytest.mark.parametrize(("where", "commands"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_a_runnable_block_runs_as_written(demo_project: Path, where: str, commands: str) -> None:
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", commands],
        cwd=demo_project, env=project_env(demo_project), capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{where}:\n{commands}\n{done.stdout}\n{done.stderr}"
