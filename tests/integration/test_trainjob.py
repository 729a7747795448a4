"""A multi-node ``train`` creates a Kubeflow Trainer TrainJob, up to the Kubernetes API boundary.

No cluster runs here: the real SDK (``kubeflow.trainer.TrainerClient``, reading a kubeconfig)
talks to a loopback server that answers like the API server with the Trainer CRDs and keeps
every request. The server plays the job: on success it writes, as rank 0 would, a model into
the output path the job's command names; on failure it reports the job Failed; else it keeps
it running until the task's timeout deletes it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from tests.conftest import CLASSES, REPO
from tests.helpers import loopback_kubeconfig, run_step, training_inputs
from tlops.config import load_params
from tlops.io import read_json
from tlops.runner.launch import LaunchFailed

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent
API = "/apis/trainer.kubeflow.org/v1alpha1"
NOW = "2026-12-01T00:00:00Z"
RUNTIME = {
    "apiVersion": "trainer.kubeflow.org/v1alpha1",
    "kind": "ClusterTrainingRuntime",
    "metadata": {
        "name": "tlops-torch-distributed",
        "labels": {"trainer.kubeflow.org/framework": "torch"},
    },
    "spec": {
        "mlPolicy": {"numNodes": 1, "torch": {"numProcPerNode": "auto"}},
        "template": {
            "spec": {
                "replicatedJobs": [
                    {
                        "name": "node",
                        "template": {
                            "metadata": {
                                "labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}
                            },
                            "spec": {
                                "template": {
                                    "spec": {"containers": [{"name": "node", "image": "x"}]}
                                }
                            },
                        },
                    }
                ]
            }
        },
    },
}


class FakeApi(BaseHTTPRequestHandler):
    """The API server's answers for the Trainer SDK; ``outcome``: complete | fail | hang."""

    protocol_version = "HTTP/1.1"
    requests: ClassVar[list[dict[str, Any]]] = []
    jobs: ClassVar[dict[str, dict[str, Any]]] = {}
    outcome: ClassVar[str] = "complete"
    model: ClassVar[Path | None] = None  # what "rank 0" writes on success

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: Any, kind: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _missing(self) -> None:
        self._send(
            404,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "NotFound",
                "code": 404,
                "message": "not found",
            },
        )

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        size = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(size)) if size else None
        self.requests.append(
            {"method": method, "path": url.path, "query": parse_qs(url.query), "body": body}
        )
        path = url.path
        if re.fullmatch(API + r"/namespaces/[^/]+/trainingruntimes/[^/]+", path):
            return self._missing()
        found = re.fullmatch(API + r"/clustertrainingruntimes/([^/]+)", path)
        if found:
            ok = found.group(1) == RUNTIME["metadata"]["name"]  # type: ignore[index]
            return self._send(200, RUNTIME) if ok else self._missing()
        found = re.fullmatch(API + r"/namespaces/([^/]+)/trainjobs", path)
        if found and method == "POST":
            job = dict(
                body,
                metadata=dict(
                    body["metadata"], namespace=found.group(1), creationTimestamp=NOW, uid="u1"
                ),
            )
            self.jobs[job["metadata"]["name"]] = job
            if self.outcome == "complete" and self.model is not None:
                args = job["spec"]["trainer"]["args"]
                shutil.copytree(self.model, args[args.index("--model") + 1])
            return self._send(201, job)
        found = re.fullmatch(API + r"/namespaces/([^/]+)/trainjobs/([^/]+)", path)
        if found:
            job = self.jobs.get(found.group(2))
            if job is None:
                return self._missing()
            if method == "DELETE":
                del self.jobs[found.group(2)]
                return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
            kind = {"complete": "Complete", "fail": "Failed"}.get(self.outcome)
            conditions = (
                [
                    {
                        "type": kind,
                        "status": "True",
                        "reason": kind,
                        "message": kind,
                        "lastTransitionTime": NOW,
                    }
                ]
                if kind
                else []
            )
            return self._send(200, dict(job, status={"conditions": conditions}))
        found = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path)
        if found:
            selector = parse_qs(url.query)["labelSelector"][0]
            name = re.match(r"jobset.sigs.k8s.io/jobset-name=([^,]+)", selector).group(1)  # type: ignore[union-attr]
            nodes = self.jobs.get(name, {}).get("spec", {}).get("trainer", {}).get("numNodes", 1)
            return self._send(
                200,
                {
                    "apiVersion": "v1",
                    "kind": "PodList",
                    "metadata": {},
                    "items": [_pod(name, found.group(1), i) for i in range(nodes)],
                },
            )
        if re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", path):
            return self._send(200, b"train: epoch 1/2: loss 1.0 (rank 0)\n", "text/plain")
        return self._missing()

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


def _pod(job: str, namespace: str, index: int) -> dict[str, Any]:
    labels = {
        "jobset.sigs.k8s.io/jobset-name": job,
        "jobset.sigs.k8s.io/replicatedjob-name": "node",
        "batch.kubernetes.io/job-completion-index": str(index),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job}-node-0-{index}-x",
            "namespace": namespace,
            "creationTimestamp": NOW,
            "labels": labels,
        },
        "spec": {
            "containers": [
                {"name": "node", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "2"}}}
            ]
        },
        "status": {"phase": "Running"},
    }


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Path, type[FakeApi]]]:
    """The loopback API server and a kubeconfig that points at it."""
    FakeApi.requests, FakeApi.jobs, FakeApi.outcome, FakeApi.model = [], {}, "complete", None
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = loopback_kubeconfig(tmp_path / "kubeconfig", server.server_address[1])
    try:
        yield kubeconfig, FakeApi
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def task(make_tree: Callable[..., Path], tmp_path: Path) -> tuple[Path, dict[str, Path]]:

    def edit(raw: dict[str, Any]) -> None:
        raw["train"].update({"epochs": 1, "batch_size": 8, "trainable_stages": 1})
        raw["train"]["distributed"].update(
            {"nodes": 2, "procs_per_node": 2, "namespace": "tlops", "poll_s": 0.2}
        )
        raw["train"]["distributed"]["runtime"] = "tlops-torch-distributed"

    return training_inputs(make_tree(per_class=20, size=16), tmp_path, list(CLASSES), REPO, edit)


def _train(
    kubeconfig: Path,
    params_file: Path,
    inputs: dict[str, Path],
    out: Path,
    checkpoints: Path,
    *overrides: str,
) -> subprocess.CompletedProcess[str]:
    command = [
        str(BIN / "tlops"),
        "step",
        "train",
        "--params",
        str(params_file),
        "--dataset",
        str(inputs["dataset"]),
        "--report",
        str(inputs["report"]),
        "--model",
        str(out),
        "--checkpoint-root",
        str(checkpoints),
    ]
    for item in overrides:
        command += ["-S", item]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "COLUMNS": "200"}
    return subprocess.run(
        command, env=env, capture_output=True, text=True, check=False, timeout=300
    )


def test_a_multi_node_train_creates_a_trainjob_streams_its_log_and_takes_its_model(
    api: tuple[Path, type[FakeApi]], task: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    kubeconfig, server = api
    params_file, inputs = task
    params = load_params(params_file)
    one = params.model_copy(
        update={
            "train": params.train.model_copy(
                update={
                    "distributed": params.train.distributed.model_copy(
                        update={"nodes": 1, "procs_per_node": 1}
                    )
                }
            )
        }
    )
    run_step("train", one, inputs, {"model": tmp_path / "rank0"})
    server.model = tmp_path / "rank0"
    checkpoints = tmp_path / "checkpoints"
    result = _train(kubeconfig, params_file, inputs, tmp_path / "model", checkpoints)
    assert result.returncode == 0, result.stdout + result.stderr

    (post,) = [r for r in server.requests if r["method"] == "POST"]
    assert post["path"] == f"{API}/namespaces/tlops/trainjobs"
    job = post["body"]
    assert job["kind"] == "TrainJob"
    spec = job["spec"]
    assert spec["runtimeRef"]["name"] == "tlops-torch-distributed"
    trainer = spec["trainer"]
    assert trainer["image"] == params.kfp.base_image and trainer["numNodes"] == 2
    limits = trainer["resourcesPerNode"]["limits"]
    assert (
        limits["nvidia.com/gpu"] == "2" and limits["cpu"] == params.kfp.resources["train"].cpu_limit
    )
    command = trainer["command"] + trainer["args"]
    assert command[:4] == ["python", "-m", "torch.distributed.run", "--nproc-per-node=2"]
    assert "--standalone" not in command  # the Trainer's rendezvous (PET_*), not a local one
    assert command[command.index("-m", 3) + 1 : command.index("-m", 3) + 4] == [
        "tlops.cli",
        "step",
        "train",
    ]
    exchange = Path(command[command.index("--dataset") + 1]).parent
    assert exchange.parent == checkpoints / "trainjobs" and exchange.name == job["metadata"]["name"]
    assert command[command.index("--checkpoint-root") + 1] == str(checkpoints)
    env = {e["name"]: e["value"] for e in trainer["env"]}
    assert env["TLOPS_MLFLOW_RUN_ID"]  # rank 0 logs into the task's run
    assert not any("PASSWORD" in name or "SECRET" in name for name in env)  # from the runtime
    pod = spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod_spec = pod["template"]["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod_spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": params.kfp.shm_size}
    assert volumes["tlops-checkpoints"]["persistentVolumeClaim"]["claimName"] == "tlops-checkpoints"
    mounts = {m["name"]: m["mountPath"] for m in pod_spec["containers"][0]["volumeMounts"]}
    assert mounts == {"dshm": "/dev/shm", "tlops-checkpoints": str(checkpoints)}

    assert "train: epoch 1/2: loss 1.0 (rank 0)" in result.stderr  # node 0's log, streamed
    assert not [r for r in server.requests if r["method"] == "DELETE"]  # a complete job stays
    assert read_json(tmp_path / "model" / "train.json") == read_json(
        tmp_path / "rank0" / "train.json"
    )
    assert not (checkpoints / "trainjobs" / job["metadata"]["name"]).exists()  # cleaned up


def _train_here(
    kubeconfig: Path,
    params_file: Path,
    inputs: dict[str, Path],
    out: Path,
    checkpoints: Path,
    monkeypatch: pytest.MonkeyPatch,
    **distributed: Any,
) -> None:
    """The step in this process (as a runner calls it): the failure paths raise."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    params = load_params(params_file)
    dp = params.train.distributed.model_copy(update=distributed)
    params = params.model_copy(
        update={"train": params.train.model_copy(update={"distributed": dp})}
    )
    run_step("train", params, inputs, {"model": out}, checkpoint_root=str(checkpoints))


def test_a_failed_trainjob_fails_the_task_and_writes_nothing(
    api: tuple[Path, type[FakeApi]],
    task: tuple[Path, dict[str, Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kubeconfig, server = api
    server.outcome = "fail"
    params_file, inputs = task
    with pytest.raises(LaunchFailed, match=r"TrainJob tlops-train-\w+ failed"):
        _train_here(
            kubeconfig, params_file, inputs, tmp_path / "model", tmp_path / "ckpt", monkeypatch
        )
    assert not (tmp_path / "model").exists()
    assert not list((tmp_path / "ckpt" / "trainjobs").iterdir())
    # the failed job is deleted: a retry's job is alone on the checkpoints
    assert [r["method"] for r in server.requests].count("DELETE") == 1


def test_a_trainjob_past_its_timeout_is_deleted_and_fails_the_task(
    api: tuple[Path, type[FakeApi]],
    task: tuple[Path, dict[str, Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kubeconfig, server = api
    server.outcome = "hang"
    params_file, inputs = task
    with pytest.raises(
        LaunchFailed, match=r"did not finish within train.distributed.timeout_s \(2 s"
    ):
        _train_here(
            kubeconfig,
            params_file,
            inputs,
            tmp_path / "model",
            tmp_path / "ckpt",
            monkeypatch,
            timeout_s=2.0,
        )
    deleted = [r for r in server.requests if r["method"] == "DELETE"]
    assert len(deleted) == 1 and deleted[0]["path"].startswith(f"{API}/namespaces/tlops/trainjobs/")
    assert not (tmp_path / "model").exists()


def test_a_missing_runtime_is_a_clear_error_before_any_job(
    api: tuple[Path, type[FakeApi]],
    task: tuple[Path, dict[str, Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kubeconfig, server = api
    params_file, inputs = task
    with pytest.raises(LaunchFailed, match=r"could not create TrainJob .*no-such-runtime"):
        _train_here(
            kubeconfig,
            params_file,
            inputs,
            tmp_path / "model",
            tmp_path / "ckpt",
            monkeypatch,
            runtime="no-such-runtime",
        )
    assert not [r for r in server.requests if r["method"] == "POST"]
    assert not (tmp_path / "model").exists()
