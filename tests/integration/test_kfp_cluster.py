"""`tlops submit` and `tlops schedule` against a local HTTP endpoint that records what it gets.

No Kubeflow cluster runs here, so the boundary is the KFP API: the real `kfp.Client` sends its
real requests (health check, experiment, run or recurring run with the compiled pipeline spec)
to a loopback server that answers like the KFP v2beta1 API and keeps every request.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


class Recorder(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, str, Any]]] = []

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, None))
        self._reply({"experiments": [], "total_size": 0} if "/experiments" in self.path else {})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.requests.append(("POST", self.path, body))
        if self.path.endswith("/experiments"):
            self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
        elif self.path.endswith("/recurringruns"):
            self._reply({"recurring_run_id": "job-1", "display_name": body["display_name"]})
        elif self.path.endswith("/runs"):
            self._reply({"run_id": "run-1", "display_name": body["display_name"]})
        else:
            self._reply({})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    Recorder.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", Recorder.requests
    finally:
        server.shutdown()


def tlops(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [str(BIN / "tlops"), *args],
        cwd=cwd,
        env=env,
        text=True,
        capture_output=True,
        check=False,
        timeout=120,
    )


def _run(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        list(args), cwd=cwd, text=True, capture_output=True, check=False,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
    )  # fmt: skip
    assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result.stdout


GIT = ("git", "-c", "user.name=t", "-c", "user.email=t@t")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A user's checkout: git with a remote (a bare repository), DVC with a local remote,
    a few target images tracked, committed and pushed to both."""
    from PIL import Image

    origin, work = tmp_path / "origin.git", tmp_path / "work"
    _run(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    _run(tmp_path, "git", "clone", "-q", str(origin), str(work))
    _run(work, "git", "checkout", "-q", "-b", "main")
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    for label in ("0", "1"):
        (work / "data" / "target" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 40 * i + int(label) * 120).save(
                work / "data" / "target" / label / f"{i}.png"
            )
    _run(work, "dvc", "init", "-q")
    _run(work, "dvc", "remote", "add", "-d", "store", str(tmp_path / "dvc-store"))
    _run(work, "dvc", "add", "-q", "data/target")
    _run(work, "git", "add", "-A")
    _run(work, *GIT, "commit", "-qm", "data")
    _run(work, "git", "push", "-q", "-u", "origin", "main")
    _run(work, "dvc", "push", "-q")
    return work


def _resolved(run: dict[str, Any]) -> dict[str, Any]:
    spec = run["pipeline_spec"]["pipeline_spec"]
    return dict(
        json.loads(spec["root"]["inputDefinitions"]["parameters"]["params"]["defaultValue"])
    )


def _posted(requests: list[tuple[str, str, Any]], suffix: str) -> dict[str, Any]:
    return next(
        body for method, path, body in requests if method == "POST" and path.endswith(suffix)
    )


def test_submit_sends_the_compiled_pipeline_with_overrides(
    endpoint: tuple[str, list[tuple[str, str, Any]]], checkout: Path
) -> None:
    host, requests = endpoint
    result = tlops(
        "submit",
        "--host",
        host,
        "--param",
        "train.lr=0.0005",
        "-S",
        "train.strategy=linear_probe",
        "--run-name",
        "nightly",
        cwd=checkout,
    )
    assert result.returncode == 0, result.stderr
    assert "submitted run run-1" in result.stdout
    run = _posted(requests, "/apis/v2beta1/runs")
    assert run["display_name"] == "nightly" and run["experiment_id"] == "exp-1"
    spec = run["pipeline_spec"]
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "tlops-training"
    kubernetes = spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert any("nodeSelector" in executor for executor in kubernetes.values())
    # the overrides are compiled in: the graph fits the strategy, params is what runs
    tasks = spec["pipeline_spec"]["root"]["dag"]["tasks"]
    assert "extract-features" in tasks
    defaults = spec["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]
    resolved = json.loads(defaults["params"]["defaultValue"])
    assert resolved["train"]["lr"] == 0.0005 and resolved["train"]["strategy"] == "linear_probe"
    # the data version is the one DVC tracks (data/target.dvc), the data steps' cache key
    parameters = run["runtime_config"]["parameters"]
    tracked = yaml.safe_load((checkout / "data" / "target.dvc").read_text())["outs"][0]["md5"]
    assert parameters == {"data_version_target": tracked}
    assert tracked in result.stdout
    # a pod has no checkout: it reads the data from the repository, at the commit submitted
    commit = _run(checkout, "git", "rev-parse", "HEAD").strip()
    assert resolved["data"]["target"] == {
        "repo": str(checkout.parent / "origin.git"), "path": "data/target", "rev": commit,
        "remote": None,
    }  # fmt: skip
    assert "data.target: data/target -> " in result.stdout


def test_submit_with_data_outside_the_checkout_runs_uncached(
    endpoint: tuple[str, list[tuple[str, str, Any]]],
) -> None:
    host, requests = endpoint
    result = tlops("submit", "--host", host, "-S", "data.target=/mnt/data/target")
    assert result.returncode == 0, result.stderr
    assert "data steps run uncached" in result.stdout
    run = _posted(requests, "/apis/v2beta1/runs")
    tasks = run["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"]
    assert not any(t.get("cachingOptions", {}).get("enableCache") for t in tasks.values())
    resolved = json.loads(
        run["pipeline_spec"]["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]["params"][
            "defaultValue"
        ]
    )
    assert resolved["data"]["target"] == "/mnt/data/target"  # where the data is: one key


def test_submit_refuses_data_a_pod_cannot_read_before_sending_anything(
    endpoint: tuple[str, list[tuple[str, str, Any]]], checkout: Path, tmp_path: Path
) -> None:
    host, requests = endpoint
    # a commit the remote does not have
    (checkout / "notes.txt").write_text("more\n")
    _run(checkout, "git", "add", "notes.txt")
    _run(checkout, *GIT, "commit", "-qm", "notes")
    result = tlops("submit", "--host", host, cwd=checkout)
    said = " ".join(result.stderr.split())
    assert result.returncode == 1 and "is not on the git remote 'origin'" in said, said
    assert "git push origin" in said
    # pushed, but new data that is not in the DVC remote
    _run(checkout, "git", "push", "-q")
    shutil.copy(checkout / "data/target/0/0.png", checkout / "data/target/1/new.png")
    _run(checkout, "dvc", "add", "-q", "data/target")
    _run(checkout, *GIT, "commit", "-qam", "more data")
    _run(checkout, "git", "push", "-q")
    result = tlops("submit", "--host", host, cwd=checkout)
    said = " ".join(result.stderr.split())
    assert result.returncode == 1 and "is not in the DVC remote 'store'" in said, said
    assert "dvc push data/target.dvc" in said
    # a directory of this machine outside any checkout
    outside = tmp_path / "elsewhere" / "target"
    shutil.copytree(checkout / "data" / "target", outside)
    result = tlops("submit", "--host", host, "-S", f"data.target={outside}", cwd=checkout)
    said = " ".join(result.stderr.split())
    assert result.returncode == 1 and "in no git checkout, so no pod can read it" in said, said
    assert not [r for r in requests if r[0] == "POST"]  # nothing was sent


def test_submit_to_an_endpoint_that_does_not_answer_says_so_in_one_line(
    checkout: Path,
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once it is closed
    result = tlops("submit", "--host", host, cwd=checkout)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 2 and f"KFP endpoint {host}: cannot reach it" in lines[-1], lines
    assert "Traceback" not in result.stderr and "FutureWarning" not in result.stderr


def test_schedule_creates_a_weekly_recurring_run(
    endpoint: tuple[str, list[tuple[str, str, Any]]], checkout: Path
) -> None:
    host, requests = endpoint
    result = tlops("schedule", "--host", host, "--cron", "0 3 * * 1", cwd=checkout)
    assert result.returncode == 0, result.stderr
    # each scheduled run reads the branch's data as it is then, not this commit's
    assert (
        _resolved(_posted(requests, "/apis/v2beta1/recurringruns"))["data"]["target"]["rev"]
        == "main"
    )
    job = _posted(requests, "/apis/v2beta1/recurringruns")
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert str(job["max_concurrency"]) == "1"
    assert job["no_catchup"] is True
    assert job["mode"] == "ENABLE"
    assert job["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "tlops-training"
    tasks = job["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"]
    assert not any(t.get("cachingOptions", {}).get("enableCache") for t in tasks.values())


def test_schedule_the_retraining_pipeline(
    endpoint: tuple[str, list[tuple[str, str, Any]]], checkout: Path
) -> None:
    host, requests = endpoint
    result = tlops(
        "schedule", "--host", host, "--cron", "0 3 * * *", "--pipeline", "retraining",
        cwd=checkout,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    job = [
        body
        for method, path, body in requests
        if method == "POST" and path.endswith("/apis/v2beta1/recurringruns")
    ][-1]
    spec = job["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "tlops-retraining"
    assert "detect-change" in spec["root"]["dag"]["tasks"]
    assert str(job["max_concurrency"]) == "1" and job["no_catchup"] is True
    bad = tlops("schedule", "--host", host, "--cron", "0 3 * * *", "--pipeline", "nightly")
    assert bad.returncode == 1 and "expected one of training, retraining" in bad.stderr


def test_bad_override_fails_before_any_request(
    endpoint: tuple[str, list[tuple[str, str, Any]]],
) -> None:
    host, requests = endpoint
    for bad, fragment in [
        ("train.epochs=-1", "train.epochs"),
        ("train.nope=1", "unknown key 'train.nope'"),
        ("target_dir=/mnt/data", "unknown key 'target_dir'"),
        ("train.lr", "expected key=value"),
    ]:
        result = tlops("submit", "--host", host, "--param", bad)
        assert result.returncode == 1 and fragment in result.stderr, (bad, result.stderr)
    assert not [r for r in requests if r[0] == "POST"]
