"""``tune.engine: katib`` creates a Katib Experiment, up to the Kubernetes API boundary.

No cluster runs here: the kubernetes client (reading a kubeconfig) talks to a loopback server
that answers like the API server with Katib's CRDs and keeps every request. The server plays
Katib: on success it reports the Experiment Succeeded and lists its trials with their
observations; on failure it reports it Failed; else it keeps it running until the task's
timeout deletes it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from tests.helpers import FakeApiHandler, loopback_kubeconfig, repo_params
from tlops.config import Params, apply_overrides
from tlops.io import read_json
from tlops.runner import katib
from tlops.runner.launch import LaunchFailed
from tlops.runner.spec import StepIO
from tlops.training.strategies.mcc import Mcc

pytestmark = [pytest.mark.integration]
API = "/apis/kubeflow.org/v1beta1"
NOW = "2026-12-01T00:00:00Z"


class FakeKatib(FakeApiHandler):
    """The API server's answers for Experiments and Trials; ``outcome``: succeed | fail | hang."""

    requests: ClassVar[list[dict[str, Any]]] = []
    experiments: ClassVar[dict[str, dict[str, Any]]] = {}
    outcome: ClassVar[str] = "succeed"
    refuse: ClassVar[bool] = False

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        size = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(size)) if size else None
        self.requests.append(
            {"method": method, "path": url.path, "query": parse_qs(url.query), "body": body}
        )
        found = re.fullmatch(API + r"/namespaces/([^/]+)/experiments", url.path)
        if found and method == "POST":
            if self.refuse:
                return self._status(403, "Forbidden")
            self.experiments[body["metadata"]["name"]] = body
            return self._send(201, body)
        found = re.fullmatch(API + r"/namespaces/([^/]+)/experiments/([^/]+)", url.path)
        if found:
            experiment = self.experiments.get(found.group(2))
            if experiment is None:
                return self._status(404, "NotFound")
            if method == "DELETE":
                del self.experiments[found.group(2)]
                return self._send(200, {"kind": "Status", "status": "Success"})
            kind = {"succeed": "Succeeded", "fail": "Failed"}.get(self.outcome, "Running")
            message = "max failed trials reached" if kind == "Failed" else kind
            condition = {"type": kind, "status": "True", "message": message}
            return self._send(200, dict(experiment, status={"conditions": [condition]}))
        found = re.fullmatch(API + r"/namespaces/([^/]+)/trials", url.path)
        if found:
            selector = parse_qs(url.query)["labelSelector"][0]
            name = selector.split("=", 1)[1]
            return self._send(200, {"items": _trials(self.experiments[name], name)})
        return self._status(404, "NotFound")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


def _trials(experiment: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Three trials: complete (0.62), complete (0.81, the best), early stopped."""
    metric = experiment["spec"]["objective"]["objectiveMetricName"]
    names = [p["name"] for p in experiment["spec"]["parameters"]]
    items = []
    for index, (state, value) in enumerate(
        [("Succeeded", 0.62), ("Succeeded", 0.81), ("EarlyStopped", 0.3)]
    ):
        assignments = [{"name": n, "value": str(0.001 * (index + 1))} for n in names]
        observed = {"name": metric, "latest": str(value), "max": str(value), "min": str(value)}
        items.append(
            {
                "metadata": {
                    "name": f"{name}-t{index}",
                    "creationTimestamp": f"2026-12-01T00:0{index}:00Z",
                    "labels": {katib.EXPERIMENT_LABEL: name},
                },
                "spec": {"parameterAssignments": assignments},
                "status": {
                    "conditions": [{"type": state, "status": "True"}],
                    "observation": {"metrics": [observed]},
                },
            }
        )
    return list(reversed(items))  # the API's order is not the order they ran in


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeKatib]]:
    """The loopback API server, and KUBECONFIG pointing at it."""
    FakeKatib.requests, FakeKatib.experiments = [], {}
    FakeKatib.outcome, FakeKatib.refuse = "succeed", False
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKatib)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = loopback_kubeconfig(tmp_path / "kubeconfig", server.server_address[1])
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    try:
        yield FakeKatib
    finally:
        server.shutdown()
        server.server_close()


def _task(tmp_path: Path, **overrides: Any) -> tuple[Params, StepIO]:
    params = apply_overrides(
        repo_params(),
        {
            "train.strategy": "mcc",
            "train.target_labels": 0,
            "train.selection.criterion": "dev",
            "tune.trials": 3,
            "tune.engine": "katib",
            "tune.katib.namespace": "tlops",
            "tune.katib.poll_s": 0.05,
            **overrides,
        },
    )
    inputs = {}
    for port in ("dataset", "report", "source_dataset", "source_report"):
        (tmp_path / "in" / port).mkdir(parents=True)
        (tmp_path / "in" / port / "marker.json").write_text("{}")
        inputs[port] = tmp_path / "in" / port
    checkpoints = tmp_path / "checkpoints"
    io = StepIO(inputs, {"tuned": tmp_path / "tuned"}, {"checkpoint_root": str(checkpoints)})
    return params, io


def test_the_search_becomes_an_experiment_of_train_containers_and_its_best_trial_wins(
    api: type[FakeKatib], tmp_path: Path
) -> None:
    params, io = _task(tmp_path)
    study = katib.run(params, io)

    (post,) = [r for r in api.requests if r["method"] == "POST"]
    assert post["path"] == f"{API}/namespaces/tlops/experiments"
    experiment = post["body"]
    spec = experiment["spec"]
    assert spec["objective"] == {"type": "maximize", "objectiveMetricName": "select_score"}
    assert spec["algorithm"]["algorithmName"] == "tpe"
    assert {"name": "random_state", "value": "0"} in spec["algorithm"]["algorithmSettings"]
    assert spec["earlyStopping"]["algorithmName"] == "medianstop"
    assert spec["maxTrialCount"] == 3 and spec["parallelTrialCount"] == 2
    parameters = {p["name"]: p for p in spec["parameters"]}
    weight = Mcc.space["mcc.weight"]  # the range mcc's file declares, on its log scale
    assert parameters["mcc-weight"]["feasibleSpace"] == {
        "min": str(weight.low), "max": str(weight.high), "distribution": "logUniform"
    }  # fmt: skip
    assert parameters["mcc-temperature"]["feasibleSpace"]["distribution"] == "uniform"
    assert spec["metricsCollectorSpec"]["collector"] == {"kind": "StdOut"}
    template = spec["trialTemplate"]
    job = template["trialSpec"]
    assert job["kind"] == "Job" and template["primaryContainerName"] == "training"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == params.kfp.base_image
    command = container["command"]
    assert command[:6] == ["python", "-m", "tlops.cli", "step", "train", "--params"]
    assert "-S" in command and "train.mcc.weight=${trialParameters.mcc-weight}" in command
    exchange = Path(command[command.index("--dataset") + 1]).parent
    assert exchange.parent == tmp_path / "checkpoints" / "katib"
    assert command[command.index("--model") + 1].endswith("/trials/${trialSpec.Name}/model")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["securityContext"]["runAsUser"] == params.kfp.task_uid
    secret_env = [e for e in container["env"] if "valueFrom" in e]
    assert {e["name"] for e in secret_env} >= {"MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID"}
    assert not exchange.exists()  # the staged inputs are removed once the search is over

    assert [t.number for t in study.trials] == [1, 2, 3]  # in the order they ran
    assert [t.state for t in study.trials] == ["complete", "complete", "pruned"]
    assert study.best is not None and study.best.number == 2 and study.best.value == 0.81
    assert study.best.params["mcc.weight"] == pytest.approx(0.002)


def test_the_experiment_manifest_is_what_katibs_api_models_accept(tmp_path: Path) -> None:
    from kubeflow_katib_api.models import V1beta1Experiment

    from tlops.training.search import space_of

    params, io = _task(tmp_path)
    manifest = katib.experiment(
        params, io, "x", "/checkpoints/katib/x", space_of(params), "m", True
    )
    parsed = V1beta1Experiment.from_dict(manifest)
    assert parsed is not None and parsed.to_dict() == manifest  # no field it does not know
    # its trials' Job is a core kind: the Kubernetes schemas check it as the manifests are
    import kubernetes_validate

    job = dict(manifest["spec"]["trialTemplate"]["trialSpec"], metadata={"name": "trial"})
    kubernetes_validate.validate(job, "1.33.0", strict=True)


def test_a_failed_experiment_fails_the_task_with_katibs_reason_and_is_deleted(
    api: type[FakeKatib], tmp_path: Path
) -> None:
    api.outcome = "fail"
    params, io = _task(tmp_path)
    with pytest.raises(LaunchFailed, match="failed: max failed trials reached"):
        katib.run(params, io)
    assert any(r["method"] == "DELETE" for r in api.requests) and not api.experiments
    assert not (tmp_path / "tuned").exists()


def test_an_experiment_past_its_timeout_is_deleted(api: type[FakeKatib], tmp_path: Path) -> None:
    api.outcome = "hang"
    params, io = _task(tmp_path, **{"tune.katib.timeout_s": 0.3})
    with pytest.raises(LaunchFailed, match=r"did not finish within tune.katib.timeout_s \(0.3 s"):
        katib.run(params, io)
    assert not api.experiments


def test_an_api_that_refuses_the_experiment_is_a_clear_error(
    api: type[FakeKatib], tmp_path: Path
) -> None:
    api.refuse = True
    params, io = _task(tmp_path)
    with pytest.raises(LaunchFailed, match=r"could not create Katib Experiment tlops/.*403"):
        katib.run(params, io)


def test_without_a_checkpoint_volume_the_trials_could_not_read_the_inputs(tmp_path: Path) -> None:
    params, io = _task(tmp_path, **{"kfp.checkpoint_pvc": None})
    with pytest.raises(LaunchFailed, match=r"set kfp\.checkpoint_pvc"):
        katib.run(params, io)


def test_the_tune_step_on_katib_writes_the_best_trial_as_trains_overrides(
    api: type[FakeKatib], tmp_path: Path
) -> None:
    from tests.helpers import run_step

    params, io = _task(tmp_path)
    result = run_step("tune", params, io.inputs, io.outputs, **io.args)
    tuned = read_json(tmp_path / "tuned" / "tuned.json")
    assert tuned["engine"] == "katib" and tuned["best_trial"] == 2
    assert tuned["params"]["train.mcc.weight"] == pytest.approx(0.002)
    assert tuned["counts"] == {"complete": 2, "pruned": 1, "failed": 0}
    assert "best trial 2 (select_score 0.8100)" in result.summary


def test_no_trials_asked_for_creates_nothing(api: type[FakeKatib], tmp_path: Path) -> None:
    from tests.helpers import run_step

    params, io = _task(tmp_path, **{"tune.trials": 0})
    result = run_step("tune", params, io.inputs, io.outputs, **io.args)
    assert not api.requests and read_json(tmp_path / "tuned" / "tuned.json")["params"] == {}
    assert "no trial completed: train keeps its params" in result.summary
