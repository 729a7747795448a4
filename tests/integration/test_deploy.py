"""The ``deploy`` step, up to the Kubernetes API boundary, with the canary judged by real traffic.

No cluster runs here: the kubernetes client (reading a kubeconfig) talks to a loopback server
that answers like the API server with KServe's CRD (merge patches, generations, the Ready
condition) and keeps every request. When the canary's patch arrives, the server plays the
predictors: it records traffic for the canary and the stable version through the recorder
into a real S3 endpoint (moto_server), where the step reads it back. The registry is a real
MLflow store.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

import numpy as np
import pytest
from infra.prod_local import DVC_BUCKET, Topology

from tests.helpers import FakeApiHandler, changed, loopback_kubeconfig, repo_params, run_step
from tlops.config import Params, apply_overrides
from tlops.io import read_json, write_json
from tlops.layout import DECISION_FILE
from tlops.serving.deploy import MODEL_ENV, VERSION_LABEL, DeployError, model_uri_of
from tlops.serving.recorder import ObjectSink, Served, TrafficRecorder

pytestmark = [pytest.mark.integration]
API = "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices"
MODEL = "digits"


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what the client sends for a dict body)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


class FakeKServe(FakeApiHandler):
    """The API server's answers for InferenceServices.

    Modes: ready | canary_never_ready (a revision with a canary share never gets ready) |
    refuse (403 on every change) | slow (answers after the client's timeout).
    """

    requests: ClassVar[list[dict[str, Any]]] = []
    services: ClassVar[dict[str, dict[str, Any]]] = {}
    mode: ClassVar[str] = "ready"
    on_canary: ClassVar[Callable[[dict[str, Any]], None] | None] = None

    def _stored(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A change as KServe's serverless mode reports it: a new revision, ready or not."""
        meta = obj.setdefault("metadata", {})
        meta["generation"] = int(meta.get("generation") or 0) + 1
        canary = "canaryTrafficPercent" in obj.get("spec", {}).get("predictor", {})
        ready = "False" if self.mode == "canary_never_ready" and canary else "True"
        message = "revision failed" if ready == "False" else ""
        before = (obj.get("status") or {}).get("components", {}).get("predictor", {})
        created = f"{meta['name']}-predictor-{meta['generation']:05d}"
        served = created if ready == "True" else before.get("latestReadyRevision")
        obj["status"] = {
            # copied from the child service: not this object's generation (kserve#6081)
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": ready, "message": message}],
            "components": {
                "predictor": {"latestCreatedRevision": created, "latestReadyRevision": served}
            },
        }
        self.services[meta["name"]] = obj
        return obj

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        size = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(size)) if size else None
        self.requests.append({"method": method, "path": url.path, "body": body,
                              "type": self.headers.get("Content-Type")})  # fmt: skip
        if self.mode == "slow":
            time.sleep(3)
        if self.mode == "refuse" and method != "GET":
            return self._status(403, "Forbidden", "pipeline-runner cannot patch inferenceservices")
        if url.path == API and method == "POST":
            return self._send(201, self._stored(body))
        found = re.fullmatch(API + r"/([^/]+)", url.path)
        if not found:
            return self._status(404, "NotFound", url.path)
        current = self.services.get(found.group(1))
        if current is None:
            return self._status(404, "NotFound", "inferenceservices not found")
        if method == "GET":
            return self._send(200, current)
        updated = self._stored(merge(current, body))
        if "canaryTrafficPercent" in updated["spec"]["predictor"] and self.on_canary:
            type(self).on_canary(updated)  # type: ignore[misc]
        return self._send(200, updated)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeKServe]]:
    FakeKServe.requests, FakeKServe.services = [], {}
    FakeKServe.mode, FakeKServe.on_canary = "ready", None
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKServe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = loopback_kubeconfig(tmp_path / "kubeconfig", server.server_address[1])
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    yield FakeKServe
    server.shutdown()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Params:
    """A real store where v1 was champion and v2 has just been promoted over it."""
    from tlops.tracking.registry import promote
    from tlops.tracking.runs import client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = repo_params()
    tracking = changed(params.tracking, tracking_uri=uri, artifact_location=tmp_path / "art")
    mlflow = client(tracking)
    mlflow.create_registered_model(MODEL)
    for _ in range(2):
        mlflow.create_model_version(MODEL, str(tmp_path / "model"))
    promote(tracking, MODEL, "1")
    promote(tracking, MODEL, "2")
    return apply_overrides(
        params,
        {
            "tracking.tracking_uri": uri,
            "register_model.model_name": MODEL,
            "deploy.target": "kserve",
            "deploy.namespace": "models",
            "deploy.watch_s": 1.0,
            "deploy.poll_s": 0.05,
            "deploy.ready_timeout_s": 120.0,
            # generous: the fake answers a canary's patch only after the predictors recorded
            "deploy.api_timeout_s": 120.0,
            "deploy.policy.min_requests": 20,
            "serve.record.uri": f"s3://{DVC_BUCKET}/traffic",
            "serve.record.flush_s": 0.1,  # the step waits two flushes for the last records
        },
    )


def _decision(tmp_path: Path, version: str = "2", aliases: tuple[str, ...] = ("champion",)) -> Path:
    folder = tmp_path / "decision"
    folder.mkdir(exist_ok=True)
    write_json(folder / DECISION_FILE, {"model_name": MODEL, "version": version,
                                        "aliases": list(aliases), "released": True,
                                        "previous_champion": "1"})  # fmt: skip
    return folder


def _deploy(params: Params, tmp_path: Path, **decision: Any) -> tuple[str, dict[str, Any]]:
    out = tmp_path / "deployment"
    result = run_step("deploy", params, {"decision": _decision(tmp_path, **decision)},
                      {"deployment": out})  # fmt: skip
    return result.summary, read_json(out / "deploy.json")


def _serving(api: type[FakeKServe], params: Params, version: str) -> None:
    """The service as it stands before the step: serving ``version``."""
    from tlops.serving.deploy import inference_service
    from tlops.steps.deploy import service_spec

    spec = service_spec(params, params.section("deploy"), "models")
    obj = inference_service(spec, f"models:/{MODEL}/{version}", version, None)
    obj["metadata"]["generation"] = 4
    api.services[obj["metadata"]["name"]] = obj


def _predictors(params: Params, canary_confidence: float, errors: int = 0) -> Callable[..., None]:
    """What the canary's and the stable version's pods record once the canary is live."""
    assert params.serve.record.uri is not None
    cfg = changed(params.serve.record, batch_size=64)

    def play(_: dict[str, Any]) -> None:
        recorder = TrafficRecorder(cfg, ObjectSink(cfg.uri or "")).start()
        rng = np.random.default_rng(0)
        for i in range(60):
            version = "2" if i % 2 else "1"
            confidence = canary_confidence if version == "2" else 0.9
            failed = version == "2" and i < 2 * errors
            recorder.record([Served(
                time=time.time(), request_id=f"r{i}", version=version, sha256=f"{i:064x}",
                predicted="" if failed else "cat", confidence=np.nan if failed else confidence,
                probabilities=np.array([confidence, 1 - confidence], dtype=np.float32),
                embedding=rng.normal(size=4).astype(np.float32), latency_ms=20.0,
                status="error" if failed else "ok")])  # fmt: skip
        recorder.close()

    return play


def test_without_a_cluster_the_step_says_so_and_calls_nothing(tmp_path: Path) -> None:
    line, facts = _deploy(repo_params(), tmp_path)
    assert line == "deploy: no cluster configured (deploy.target: none): nothing deployed"
    assert facts["action"] == "none"


def test_a_version_that_is_not_the_champion_changes_nothing(
    api: type[FakeKServe], registry: Params, tmp_path: Path
) -> None:
    line, facts = _deploy(registry, tmp_path, aliases=("challenger",))
    assert "is not the champion" in line and facts["action"] == "unchanged"
    assert api.requests == []


def test_the_first_champion_creates_the_inference_service(
    api: type[FakeKServe], registry: Params, tmp_path: Path
) -> None:
    line, facts = _deploy(registry, tmp_path)
    assert facts["action"] == "created" and "created, serving digits v2" in line
    created = [r for r in api.requests if r["method"] == "POST"]
    assert len(created) == 1
    body = created[0]["body"]
    assert model_uri_of(body) == "models:/digits/2"
    assert body["metadata"]["labels"][VERSION_LABEL] == "2"
    assert "canaryTrafficPercent" not in body["spec"]["predictor"]
    # the same version again: nothing to do
    assert _deploy(registry, tmp_path)[1]["action"] == "unchanged"


def test_a_confident_canary_is_rolled_forward(
    api: type[FakeKServe], registry: Params, s3: Topology, tmp_path: Path
) -> None:
    _serving(api, registry, "1")
    api.on_canary = _predictors(registry, canary_confidence=0.88)
    line, facts = _deploy(registry, tmp_path)
    assert facts["action"] == "forward", line
    patches = [r for r in api.requests if r["method"] == "PATCH"]
    assert patches[0]["type"] == "application/merge-patch+json"
    canary = patches[0]["body"]["spec"]["predictor"]
    assert canary["canaryTrafficPercent"] == registry.section("deploy").canary_percent
    assert [e["value"] for e in canary["containers"][0]["env"] if e["name"] == MODEL_ENV] == [
        "models:/digits/2"
    ]
    assert patches[-1]["body"]["spec"]["predictor"]["canaryTrafficPercent"] is None
    service = api.services["tlops-predictor"]
    assert model_uri_of(service) == "models:/digits/2"
    assert "canaryTrafficPercent" not in service["spec"]["predictor"]
    assert facts["figures"]["canary"]["requests"] == 30
    assert facts["figures"]["stable"]["mean_confidence"] == pytest.approx(0.9)
    assert any("drop +0.020 <= max_confidence_drop" in r for r in facts["reasons"])


def test_an_unsure_canary_is_rolled_back_and_the_champion_alias_with_it(
    api: type[FakeKServe], registry: Params, s3: Topology, tmp_path: Path
) -> None:
    from tlops.tracking.registry import CHAMPION, alias_version

    _serving(api, registry, "1")
    api.on_canary = _predictors(registry, canary_confidence=0.6, errors=1)
    line, facts = _deploy(registry, tmp_path)
    assert facts["action"] == "back", line
    assert any("drop +0.300 > max_confidence_drop" in r for r in facts["reasons"])
    assert any("error rate 0.0333 (1/30) > max_error_rate" in r for r in facts["reasons"])
    service = api.services["tlops-predictor"]
    assert model_uri_of(service) == "models:/digits/1"
    assert service["metadata"]["labels"][VERSION_LABEL] == "1"
    assert "canaryTrafficPercent" not in service["spec"]["predictor"]
    assert alias_version(registry.tracking, MODEL, CHAMPION) == "1"
    assert facts["registry"] == "champion alias v2 -> v1"


def test_the_manifest_applied_by_hand_names_the_alias_and_the_canary_still_knows_what_it_replaces(
    api: type[FakeKServe], registry: Params, s3: Topology, tmp_path: Path
) -> None:
    """infra/k8s serves models:/...@champion, unlabeled: the champion before is the stable one."""
    from tlops.serving.deploy import inference_service
    from tlops.steps.deploy import service_spec

    spec = service_spec(registry, registry.section("deploy"), "models")
    api.services["tlops-predictor"] = inference_service(
        spec, f"models:/{MODEL}@champion", None, None
    )
    api.on_canary = _predictors(registry, canary_confidence=0.5)
    _, facts = _deploy(registry, tmp_path)
    assert facts["action"] == "back" and facts["previous"] == "1"
    service = api.services["tlops-predictor"]
    assert model_uri_of(service) == "models:/digits/1"  # pinned: not the alias the canary holds
    assert service["metadata"]["labels"][VERSION_LABEL] == "1"


def test_a_failure_mid_canary_gives_the_traffic_back_to_the_served_version(
    api: type[FakeKServe], registry: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import free_port
    from tlops.serving.traffic import TrafficError

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    _serving(api, registry, "1")
    with pytest.raises(TrafficError, match="reading the traffic record failed"):
        _deploy(registry, tmp_path)
    service = api.services["tlops-predictor"]
    assert model_uri_of(service) == "models:/digits/1"
    assert "canaryTrafficPercent" not in service["spec"]["predictor"]


def test_without_a_canary_the_version_takes_all_traffic_and_an_old_split_is_removed(
    api: type[FakeKServe], registry: Params, tmp_path: Path
) -> None:
    _serving(api, registry, "1")
    api.services["tlops-predictor"]["spec"]["predictor"]["canaryTrafficPercent"] = 30
    line, facts = _deploy(apply_overrides(registry, {"deploy.canary_percent": 0}), tmp_path)
    assert facts["action"] == "replaced" and "(was v1; no canary)" in line
    service = api.services["tlops-predictor"]
    assert model_uri_of(service) == "models:/digits/2"
    assert "canaryTrafficPercent" not in service["spec"]["predictor"]


def test_too_little_traffic_follows_the_policy(
    api: type[FakeKServe], registry: Params, s3: Topology, tmp_path: Path
) -> None:
    _serving(api, registry, "1")
    params = apply_overrides(registry, {"deploy.policy.min_requests": 1000})
    api.on_canary = _predictors(params, canary_confidence=0.9)
    _, facts = _deploy(params, tmp_path)
    assert facts["action"] == "back"
    assert facts["reasons"][0].startswith("canary v2 answered 30 images, fewer than")


def test_a_canary_that_never_becomes_ready_is_rolled_back(
    api: type[FakeKServe], registry: Params, s3: Topology, tmp_path: Path
) -> None:
    from tlops.tracking.registry import CHAMPION, alias_version

    _serving(api, registry, "1")
    api.mode = "canary_never_ready"
    params = apply_overrides(registry, {"deploy.ready_timeout_s": 0.3})
    _, facts = _deploy(params, tmp_path)
    assert facts["action"] == "back"
    assert facts["reasons"][0].startswith("the canary was not ready: InferenceService")
    assert "Ready=False: revision failed" in facts["reasons"][0]
    patches = [r["body"] for r in api.requests if r["method"] == "PATCH"]
    assert len(patches) == 2  # the canary, then the served version back
    assert model_uri_of(api.services["tlops-predictor"]) == "models:/digits/1"
    assert alias_version(registry.tracking, MODEL, CHAMPION) == "1"


def test_an_api_that_refuses_or_does_not_answer_fails_the_step_saying_so(
    api: type[FakeKServe], registry: Params, s3: Topology, tmp_path: Path
) -> None:
    _serving(api, registry, "1")
    api.mode = "refuse"
    with pytest.raises(DeployError, match="answered 403 Forbidden: pipeline-runner cannot patch"):
        _deploy(registry, tmp_path)
    api.mode = "slow"  # answers after 3 s
    with pytest.raises(DeployError, match="did not answer within 1 s"):
        _deploy(apply_overrides(registry, {"deploy.api_timeout_s": 1.0}), tmp_path)
    assert not (tmp_path / "deployment").exists()


def test_a_canary_needs_traffic_the_task_can_read(registry: Params, tmp_path: Path) -> None:
    params = apply_overrides(registry, {"serve.record.uri": "runs/traffic"})
    with pytest.raises(ValueError, match=r"serve\.record\.uri = 'runs/traffic' is not an object"):
        _deploy(params, tmp_path)
