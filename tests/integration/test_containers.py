"""The component image, built here with podman, and the compiled pipeline run in it.

`make image` (``infra.containers.build_image``) on a Debian base made by debootstrap; KFP's own
DockerRunner pointed at podman's Docker API runs every task in that image as uid 10001 in the
image's empty working directory, against the production topology on loopback (PostgreSQL,
S3, MLflow server with auth), its data from the DVC remote: what `make prod-local RUNNER=docker`
does. The image is built once (`make test` builds it before the tests; here its layers are
reused) and the tests share one topology and one Docker API, in file order.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from infra.containers import Built, api_service, build_image, default_tag, git_sha, podman_env
from infra.prod_local import PIPELINE_USER, TASK_UID, TINY, Topology

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="podman's store and the tasks' user need root"),
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed"),
]

FAST = TINY


@pytest.fixture(scope="module")
def image() -> Built:
    return build_image(default_tag(), quiet=True)  # cached layers: seconds after `make image`


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    state = Path(tempfile.mkdtemp(prefix="tlops-containers-"))
    state.chmod(0o755)  # the tasks' user reaches the pipeline root under it
    topo = Topology(state)
    try:
        topo.up()
        topo.data_repo = topo.push_demo_data(drops=1, domains=("target",))  # type: ignore[attr-defined]
        yield topo
    finally:
        topo.down()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def docker_host(topology: Topology) -> Iterator[str]:
    with api_service(topology.state / "podman") as host:
        yield host


def _podman(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *argv], env=podman_env(), capture_output=True, text=True, check=False
    )


def _kfp_log(topology: Topology) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", (topology.state / "pod/run/kfp.log").read_text())


def _client(topology: Topology, monkeypatch: pytest.MonkeyPatch) -> Any:
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", PIPELINE_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", topology.secrets["pipeline_password"])
    return MlflowClient(tracking_uri=topology.tracking_uri, registry_uri=topology.tracking_uri)


def test_the_image_has_what_a_task_needs_as_its_user(image: Built) -> None:
    # what a pod needs, checked in the image as the tasks' user: git (DVC's API), a writable
    # HOME and caches (matplotlib, torch), the code on the path, the byte-compiled venv, the
    # system CA bundle trusted by every TLS client, and no entrypoint before KFP's command
    script = (
        'set -e; id -u; pwd; test -z "$(ls -A /work)"; touch /work/x; git --version; '
        "python3 -c 'import matplotlib.pyplot as p; p.figure(); import os; "
        'assert os.path.isdir(os.environ["MPLCONFIGDIR"])\'; '
        "python3 -c 'import torch.hub, os; d = torch.hub.get_dir(); os.makedirs(d); print(d)'; "
        "python3 -c 'import components, pipelines.training, tlops; print(tlops.__file__)'; "
        'python3 -c \'import ssl, os; f = os.environ["SSL_CERT_FILE"]; '
        "ssl.create_default_context(cafile=f); "
        'assert f == os.environ["REQUESTS_CA_BUNDLE"] == os.environ["AWS_CA_BUNDLE"]\'; '
        "test -n \"$(find /opt/venv/lib/python3.11/site-packages/torch -name '*.pyc' | head -1)\"; "
        "echo $TLOPS_GIT_SHA"
    )
    done = _podman("run", "--rm", "--user", f"{TASK_UID}:{TASK_UID}", image.tag, "sh", "-c", script)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == str(TASK_UID) and lines[1] == "/work"
    assert lines[-1] == git_sha()  # the commit the image was built from, as tlops records it
    assert "/opt/venv/" in done.stdout  # tlops is installed in the venv, not run from /app/src
    inspect = _podman("image", "inspect", "--format", "{{json .Config.Entrypoint}}", image.tag)
    assert inspect.stdout.strip() in ("null", "[]"), inspect.stdout


def test_the_pipeline_runs_in_the_image_and_registers_what_the_local_runner_does(
    image: Built, topology: Topology, docker_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = topology.data_repo  # type: ignore[attr-defined]
    done = topology.run_pipeline(repo, FAST, docker_host=docker_host)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Task 'register-model' finished with status SUCCESS" in done.stdout
    log = _kfp_log(topology)
    assert f"Found image '{image.tag}'" in log  # the tasks ran in the image, not here
    # every task wrote its outputs as the image's user, into the pipeline root
    outputs = [p for p in (topology.state / "pod/run/kfp").rglob("*") if p.is_file()]
    assert outputs and all(p.stat().st_uid == TASK_UID for p in outputs)
    # the working directory was the image's /work: here there is only the checkpoint folder,
    # mounted into train's container as a PVC would be (empty: the run completed)
    cache = topology.state / "pod" / ".cache"
    assert [p.relative_to(cache) for p in cache.rglob("*")] == [
        Path("tlops"),
        Path("tlops/checkpoints"),
    ]
    assert (cache / "tlops" / "checkpoints").stat().st_uid == TASK_UID

    local = topology.run_pipeline(repo, FAST)  # KFP's local runner, the same data and params
    assert local.returncode == 0, local.stdout + local.stderr
    client = _client(topology, monkeypatch)
    in_image, here = (
        client.get_run(client.get_model_version("tlops-digits", v).run_id) for v in ("1", "2")
    )
    tested = {k: v for k, v in in_image.data.metrics.items() if k.startswith("test/")}
    assert tested and tested == {k: here.data.metrics[k] for k in tested}


def test_the_retraining_pipeline_skips_in_the_image_when_nothing_changed(
    topology: Topology, docker_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = topology.data_repo  # type: ignore[attr-defined]
    done = topology.run_pipeline(repo, FAST, docker_host=docker_host, command="retrain")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Task 'detect-change' finished with status SUCCESS" in done.stdout
    assert "Task 'train'" not in done.stdout
    assert "detect_change: no retrain" in done.stdout and "no new data" in done.stdout
    client = _client(topology, monkeypatch)
    assert len(client.search_model_versions("name='tlops-digits'")) == 2  # no new version


def test_a_missing_image_is_refused_before_any_task(topology: Topology, docker_host: str) -> None:
    repo = topology.data_repo  # type: ignore[attr-defined]
    done = topology.run_pipeline(
        repo, [*FAST, "kfp.base_image=localhost/tlops:missing"], docker_host=docker_host
    )
    assert done.returncode != 0
    assert "image localhost/tlops:missing (kfp.base_image) is not on this machine" in done.stderr
    assert "Task " not in done.stdout


def test_no_docker_api_is_a_clear_error(topology: Topology) -> None:
    repo = topology.data_repo  # type: ignore[attr-defined]
    nowhere = f"unix://{topology.state}/nobody.sock"
    done = topology.run_pipeline(repo, FAST, docker_host=nowhere)
    assert done.returncode != 0
    assert f"no Docker API answers at {nowhere}" in done.stderr
    assert "Task " not in done.stdout
