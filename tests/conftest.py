"""Shared fixtures: tiny ImageFolder trees and params tuned for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from tests.helpers import ingest, save_image, tiny_project, validate
from tlops.config import Params, load_params

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("cat", "dog", "fox")

# Seconds one test worker spends in each long test file (`make test` in a checkout, 2 cores,
# 2026-12-02). `make test` hands whole files to the workers (--dist loadfile) in collection
# order: these go first, longest first, and the many short files fill in behind them, so no
# worker is left with a long file at the end (xdist's own default order, by number of tests,
# started the one-test retraining story last). The file of the pipeline tests' two runs starts
# before all: the browser tests read the store those runs leave, and they start once the runs
# are under way, not waiting for them from the start.
SHARED_RUNS_FILE = "tests/integration/test_pipeline_mlflow.py"
FILE_SECONDS = {
    SHARED_RUNS_FILE: 160,
    "tests/integration/test_dvc_project.py": 210,
    "tests/integration/test_prod_local.py": 180,
    "tests/integration/test_retraining.py": 145,
    "tests/integration/test_transfer_methods.py": 110,
    "tests/integration/test_distributed.py": 82,
    "tests/unit/test_domain_adaptation.py": 67,
    "tests/e2e/test_review_in_the_browser.py": 49,
    "tests/integration/test_train_resume.py": 46,
    "tests/data/test_validate_data.py": 24,
    "tests/integration/test_data_locations.py": 22,
    "tests/integration/test_trainjob.py": 22,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the test files: the shared runs' file, then longest first (see FILE_SECONDS).

    Tests keep their order within a file.
    """

    def key(item: pytest.Item) -> tuple[bool, int]:
        path = item.nodeid.split("::")[0]
        return path != SHARED_RUNS_FILE, -FILE_SECONDS.get(path, 0)

    items.sort(key=key)


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    # every test gets its own MLflow store: a champion in the developer's mlflow.db must not
    # change what validate_data expects
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[..., Path]:
    """Build ``root/<class>/img_<i>.png`` (or ``root/<split>/<class>/...``) with unique images."""
    counter: Iterator[int] = iter(range(10**6))

    def build(
        name: str = "data",
        classes: tuple[str, ...] = CLASSES,
        per_class: int = 12,
        splits: tuple[str, ...] | None = None,
        size: int = 16,
    ) -> Path:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        for label in classes:
            for split in splits or (None,):
                folder = root / split / label if split else root / label
                for i in range(per_class):
                    save_image(folder / f"img_{i:03d}.png", next(counter), size=size)
        return root

    return build


@pytest.fixture
def domains(params: Params, make_tree: Callable[..., Path], tmp_path: Path) -> dict[str, Path]:
    """Tiny target and source trees, ingested and validated under ``tmp_path`` (see da_inputs)."""
    out: dict[str, Path] = {}
    for domain in ("target", "source"):
        root = make_tree(name=f"tree_{domain}", per_class=14, size=16)
        ingest(params, root, tmp_path / f"{domain}_ingest", domain=domain)
        validate(params, tmp_path / f"{domain}_ingest", tmp_path / f"{domain}_report")
        out[domain] = root
    return out


@pytest.fixture
def params() -> Params:
    """Default params with thresholds that fit the tiny trees of ``make_tree``."""
    return load_params(
        REPO / "params.yaml",
        {
            "validate_data.classes": list(CLASSES),
            "validate_data.min_images_per_class": 5,
            "validate_data.min_images_per_split_class": 0,
            "validate_data.max_imbalance_ratio": 3.0,
        },
    )


BIN = Path(sys.executable).parent


def project_env(project: Path) -> dict[str, str]:
    """The environment of a command run in a throwaway project (its own MLflow store)."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "COLUMNS": "200",
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
    }


def sh(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in ``project`` as a user would (``tlops run``, ``dvc``...)."""
    result = subprocess.run(
        args, cwd=project, env=project_env(project), text=True, capture_output=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args}: {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def _shared(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder every test worker of this session sees (pytest-xdist: one per worker else)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the workers' basetemps are siblings under the session's
    return base / name


@pytest.fixture(scope="session")
def pipeline_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project (the first target drop, 32 px, 2 epochs) with its own MLflow store."""
    root = _shared(tmp_path_factory, "pipeline")
    with FileLock(f"{root}.lock"):  # built once, whichever worker needs it first
        if not (root / "params.yaml").is_file():
            root.mkdir(parents=True, exist_ok=True)
            tiny_project(root, REPO)
    return root


@pytest.fixture(scope="session")
def two_runs(pipeline_project: Path) -> tuple[str, str]:
    """``tlops run`` twice in ``pipeline_project``: a champion, then a tie that is kept out.

    The same steps on the same data and params give the same metrics, so the second run ties
    with the champion the first one registered. Shared by the integration and browser tests,
    across test workers too (two pipeline runs are the most expensive fixture of the suite):
    the first worker that needs them runs them, under a lock, and leaves their output.
    """
    done = pipeline_project / "two_runs.json"
    with FileLock(f"{done}.lock"):
        if not done.is_file():
            first = sh(pipeline_project, "tlops", "run", "--out", "runs/first")
            second = sh(pipeline_project, "tlops", "run", "--out", "runs/second")
            done.write_text(json.dumps([first.stdout, second.stdout]), encoding="utf-8")
    first_out, second_out = json.loads(done.read_text(encoding="utf-8"))
    return first_out, second_out


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real S3 endpoint (moto_server, as ``make prod-local`` runs it) with its buckets, and
    the environment a task gets from the ``tlops-s3`` secret pointing at it."""
    from infra.prod_local import Topology, _free_ports

    topo = Topology(tmp_path / "topology")
    topo.state.mkdir()
    topo.secrets = {"s3_key": "AKIATESTS3FIXTURE", "s3_secret": "s3-fixture-secret"}
    topo.ports = {"s3": _free_ports(1)[0]}
    topo.start_s3()
    for key, value in topo.s3_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries would make "down" take 30 s
    yield topo
    topo.stop_s3()
