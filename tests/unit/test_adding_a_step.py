"""What a new step costs: its module, one line in the steps' catalog, its place in the pipeline
and its params section; everything else is generated from its declaration.

The test adds a toy step to a copy of the repository, as a developer would, runs
`tlops generate`, and lists the files that changed; then it checks that the pipeline wired the
step's input from its declaration alone, and that `tlops step` runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

TOY = '''"""Step ``count_images``: how many images the target holds (a toy step)."""

from __future__ import annotations

from pydantic import Field

from tlops.config import Params, StrategyParams
from tlops.io import atomic_dir, read_json, write_json
from tlops.layout import INGEST_FILE
from tlops.runner.spec import Port, StepIO, StepResult, StepSpec


class CountParams(StrategyParams):
    """``count_images``: its own section, declared here."""

    at_least: int = Field(ge=0)


def run(params: Params, io: StepIO) -> StepResult:
    """Count the images; fail below ``count_images.at_least``."""
    images = read_json(io.inputs["dataset"] / INGEST_FILE)["n_images"]
    at_least = params.section("count_images").at_least
    if images < at_least:
        raise ValueError(f"{images} images, fewer than {at_least}")
    with atomic_dir(io.outputs["counts"]) as staging:
        write_json(staging / "counts.json", {"images": images})
    return StepResult(f"count_images: {images} images")


STEP = StepSpec(
    name="count_images",
    run=run,
    help="Count the images of the target.",
    params=("count_images",),
    inputs=(
        Port(
            "dataset",
            "Dataset",
            "Output of ingest_data.",
            producer=("ingest_data", "dataset"),
            domain="target",
        ),
    ),
    outputs=(Port("counts", "Artifact", "counts.json"),),
    code=(),
    section=CountParams,
)
'''


def _sh(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{repo / 'src'}{os.pathsep}{repo}"}
    result = subprocess.run(args, cwd=repo, env=env, text=True, capture_output=True, check=False)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the repository's files, committed in a git repository of its own."""
    tracked = subprocess.run(
        # tracked files and new ones not ignored: the working tree as a developer has it
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split("\0")
    copy = tmp_path / "repo"
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    subprocess.run([*git, "add", "-A"], cwd=copy, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=copy, check=True)
    return copy


def _add_toy_step(repo: Path) -> None:
    (repo / "src/tlops/steps/count_images.py").write_text(TOY)
    catalog = repo / "src/tlops/steps/__init__.py"
    text = catalog.read_text()
    text = text.replace(
        "from tlops.steps import (\n", "from tlops.steps import (\n    count_images,\n"
    )
    text = text.replace(
        "    detect_change.STEP,\n)", "    detect_change.STEP,\n    count_images.STEP,\n)"
    )
    catalog.write_text(text)
    pipeline = repo / "pipelines/training.py"
    text = pipeline.read_text()
    anchor = "        train_evaluate_register(tasks, cfg, checkpoint_root, validated)\n"
    assert anchor in text
    pipeline.write_text(text.replace(anchor, '        tasks.add("count_images")\n' + anchor))
    params = repo / "params.yaml"
    params.write_text(params.read_text() + "\ncount_images:\n  at_least: 1\n")


def test_a_new_step_is_its_module_a_catalog_line_its_place_and_its_params(repo: Path) -> None:
    _add_toy_step(repo)
    _sh(repo, sys.executable, "-m", "tlops.cli", "generate")
    changed = _sh(repo, "git", "status", "--porcelain", "--untracked-files=all").stdout
    files = {line[3:] for line in changed.splitlines()}
    written_by_hand = {
        "src/tlops/steps/count_images.py",  # the step: declaration, params model, run
        "src/tlops/steps/__init__.py",  # one line in the catalog
        "pipelines/training.py",  # its place in the order
        "params.yaml",  # its params
    }
    # its KFP component, the components' index, its dvc.yaml stage, the docs' step table, and
    # the reference pages (its params section, its `tlops step` command)
    generated = {
        "components/count_images.py",
        "components/__init__.py",
        "dvc.yaml",
        "docs/pipelines.md",
        "docs/reference/parameters.md",
        "docs/reference/cli.md",
    }
    assert files == written_by_hand | generated

    _sh(repo, sys.executable, "-m", "tlops.cli", "compile", "--pipeline", "training")
    spec, _ = yaml.safe_load_all((repo / "pipelines/compiled/training.yaml").read_text())
    task = spec["root"]["dag"]["tasks"]["count-images"]
    source = task["inputs"]["artifacts"]["dataset"]["taskOutputArtifact"]
    assert (source["producerTask"], source["outputArtifactKey"]) == ("ingest-data", "dataset")
    help_text = _sh(repo, sys.executable, "-m", "tlops.cli", "step", "count_images", "--help")
    assert "--dataset" in help_text.stdout and "--counts" in help_text.stdout


def test_a_step_without_its_wiring_is_refused_when_the_pipeline_is_built(repo: Path) -> None:
    _add_toy_step(repo)
    pipeline = repo / "pipelines/training.py"
    text = pipeline.read_text()
    # placed before the target's ingest: the producer it declares has not run yet
    first = "        validated = [ingest_and_validate(tasks, d, versions[d]) for d in domains]\n"
    pipeline.write_text(text.replace(first, '        tasks.add("count_images")\n' + first, 1))
    env = {**os.environ, "PYTHONPATH": f"{repo / 'src'}{os.pathsep}{repo}"}
    result = subprocess.run(
        [sys.executable, "-m", "tlops.cli", "compile", "--pipeline", "training"],
        cwd=repo,
        env=env,
        text=True,
        capture_output=True,
        check=False,
    )
    assert result.returncode != 0
    assert "step count_images: input 'dataset' comes from ingest_data (target)" in (
        result.stdout + result.stderr
    )
