"""``tlops serve``: a registered version on KServe's model server, asked over real HTTP.

A tiny random-init model (3 classes, 16 px) in a real MLflow store; the server is the real
``tlops serve`` process on loopback. What is tested: the V2 answer equals the pyfunc's on the
same images (one code path), the errors (a bad image, too many, an oversized body, a model that
cannot load) and the traffic the server recorded.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import BIN, project_env
from tests.helpers import changed, free_port, repo_params
from tlops.config import TrackingConfig
from tlops.models.init import create_model
from tlops.serving.traffic import read_traffic

pytestmark = [pytest.mark.integration]
CLASSES = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TrackingConfig:
    from tlops.tracking.runs import start_run
    from tlops.tracking.serving import encode_png, log_and_register

    root = tmp_path_factory.mktemp("predictor")
    cfg = changed(
        repo_params().tracking,
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifact_location=root / "mlartifacts",
    )
    torch.manual_seed(0)
    model = create_model("timm:mobilenetv3_small_050", CLASSES, pretrained=False).eval()
    model.image_size = 16
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", cfg.tracking_uri)
        run_id = start_run(cfg, "predictor-test", {}, {})
        example = encode_png(np.random.default_rng(0).integers(0, 256, (20, 20), dtype=np.uint8))
        log_and_register(cfg, run_id, model, "tiny", repo_params().image, example, {}, "champion")
    return cfg


def _image(seed: int, fmt: str, size: tuple[int, int] = (24, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _request(images: list[bytes] | list[str], request_id: str = "r") -> bytes:
    data = [i if isinstance(i, str) else base64.b64encode(i).decode() for i in images]
    body = {
        "id": request_id,
        "inputs": [{"name": "image", "shape": [len(data)], "datatype": "BYTES", "data": data}],
    }
    return json.dumps(body).encode()


def _post(port: int, body: bytes, model: str = "tiny") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/{model}/infer",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


class Server:
    """A ``tlops serve`` process, its output as it comes, and where it records."""

    def __init__(self, proc: subprocess.Popen[str], port: int, traffic: Path) -> None:
        self.proc, self.port, self.traffic = proc, port, traffic
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, seconds: float = 120) -> None:
        """Until a line of the output holds ``text`` (fails if the process ends first)."""
        deadline = time.monotonic() + seconds
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None and time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGINT) -> str:
        """SIGINT (Ctrl-C) or SIGTERM (a pod's end); its whole output."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=120)
        self._reader.join(30)
        return "".join(self.lines)


def _start(store: TrackingConfig, tmp: Path, uri: str, *extra: str) -> Server:
    port, traffic = free_port(), tmp / "traffic"
    extra = tuple(a.replace("GRPC_PORT", str(free_port())) for a in extra)
    env = {**project_env(tmp), "MLFLOW_TRACKING_URI": store.tracking_uri}
    proc = subprocess.Popen(
        [
            str(BIN / "tlops"), "serve", uri, "--port", str(port),
            "-S", f"serve.record.uri={traffic}", "-S", "serve.record.flush_s=0.2",
            "-S", "serve.max_request_bytes=65536", "-S", "serve.max_images=4", *extra,
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    running = Server(proc, port, traffic)
    running.wait_for("Uvicorn running on")
    return running


@pytest.fixture(scope="module")
def server(store: TrackingConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = _start(
        store, tmp_path_factory.mktemp("serve"), "models:/tiny@champion",
        "-S", "serve.grpc_port=GRPC_PORT",
    )  # fmt: skip
    running.wait_for("ready in")
    yield running
    running.stop()


def test_png_and_jpeg_come_back_as_the_pyfunc_answers_them(
    server: Server, store: TrackingConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    images = [_image(1, "PNG"), _image(2, "JPEG", (40, 20))]
    code, answer = _post(server.port, _request(images, "both"))
    assert code == 200, answer
    assert answer["model_name"] == "tiny" and answer["model_version"] == "1"
    assert answer["id"] == "both"
    outputs = {o["name"]: o for o in answer["outputs"]}
    probs = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    assert json.loads(outputs["probabilities"]["parameters"]["classes"]) == CLASSES

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model("models:/tiny/1").predict({"image": images})
    expected = np.array([[row[c] for c in CLASSES] for row in pyfunc["probabilities"]])
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert outputs["class"]["data"] == list(pyfunc["class"])
    np.testing.assert_allclose(outputs["probability"]["data"], pyfunc["probability"], atol=1e-6)
    metadata = json.loads(
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/v2/models/tiny").read()
    )
    assert [o["name"] for o in metadata["outputs"]] == ["class", "probability", "probabilities"]
    assert metadata["inputs"][0]["datatype"] == "BYTES"


def test_a_bad_image_is_a_400_naming_the_input_and_element(server: Server) -> None:
    code, answer = _post(server.port, _request([_image(1, "PNG"), b"not an image"]))
    assert code == 400
    assert answer["error"].startswith("input 'image', element 1: not_an_image")
    code, answer = _post(server.port, _request([_image(1, "PNG"), "%%% not base64"]))
    assert code == 400 and "element 1: a string must be base64" in answer["error"]
    body = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]})
    code, answer = _post(server.port, body.encode())
    assert code == 400 and "datatype must be BYTES" in answer["error"]


def test_too_many_images_and_an_oversized_body_are_refused(server: Server) -> None:
    code, answer = _post(server.port, _request([_image(i, "PNG") for i in range(5)]))
    assert code == 400 and "more than serve.max_images = 4" in answer["error"]
    big = _image(3, "PNG", (200, 200))  # ~120 KB: over the 64 KiB limit the server was given
    code, answer = _post(server.port, _request([big]))
    assert code == 413 and "serve.max_request_bytes = 65,536" in answer["error"]
    # the server still answers after refusing
    assert _post(server.port, _request([_image(4, "PNG")]))[0] == 200


def test_a_model_that_cannot_load_is_never_ready_and_says_why(
    store: TrackingConfig, tmp_path: Path
) -> None:
    broken = _start(store, tmp_path, "models:/tiny/99")
    try:
        broken.wait_for("tlops serve: cannot load models:/tiny/99")
        ready = f"http://127.0.0.1:{broken.port}/v2/models/tiny/ready"
        assert _status(ready) == 503
        assert _post(broken.port, _request([_image(1, "PNG")]))[0] == 503
    finally:
        out = broken.stop()
    assert "(not ready)" in out and "ready in" not in out


def test_each_answered_image_is_recorded_with_its_hash_embedding_and_confidence(
    store: TrackingConfig, tmp_path: Path
) -> None:
    running = _start(store, tmp_path, "models:/tiny/1")
    running.wait_for("ready in")
    images = [_image(10, "PNG"), _image(11, "JPEG")]
    answers = [_post(running.port, _request([image], f"q{i}"))[1] for i, image in enumerate(images)]
    assert _post(running.port, _request([b"broken"], "bad"))[0] == 400
    out = running.stop(signal.SIGTERM)  # as Kubernetes stops a pod: what is held is written
    assert running.proc.returncode == 0
    assert "traffic: 3 records" in out and "0 dropped" in out

    traffic = read_traffic(str(running.traffic), since=0.0)
    order = np.argsort(traffic.request_id)  # bad, q0, q1
    assert list(traffic.request_id[order]) == ["bad", "q0", "q1"]
    assert list(traffic.status[order]) == ["error", "ok", "ok"]
    ok = traffic.ok.where(np.argsort(traffic.ok.request_id))
    assert list(ok.sha256) == [hashlib.sha256(image).hexdigest() for image in images]
    confidences = [a["outputs"][1]["data"][0] for a in answers]
    np.testing.assert_allclose(ok.confidence, confidences, rtol=1e-6)
    assert list(ok.predicted) == [a["outputs"][0]["data"][0] for a in answers]
    assert ok.embedding.shape == (2, 1024) and np.isfinite(ok.embedding).all()
    assert set(ok.version) == {"1"}
    assert not (running.traffic / "images").exists()  # keep_images is off


def test_grpc_takes_the_encoded_images_as_they_are(server: Server) -> None:
    import grpc
    from kserve import InferResponse
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    port = int(next(a for a in server.proc.args if str(a).startswith("serve.grpc_port="))
               .split("=")[1])  # fmt: skip
    images = [_image(1, "PNG"), _image(2, "JPEG", (40, 20))]
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="image", datatype="BYTES", shape=[2],
        contents=pb.InferTensorContents(bytes_contents=images),
    )  # fmt: skip
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = GRPCInferenceServiceStub(channel)
        reply = stub.ModelInfer(pb.ModelInferRequest(model_name="tiny", id="g", inputs=[tensor]))
        with pytest.raises(grpc.RpcError) as refused:
            big = pb.InferTensorContents(bytes_contents=[b"x" * 70_000])
            stub.ModelInfer(pb.ModelInferRequest(model_name="tiny", inputs=[
                pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1],
                                                      contents=big)]))  # fmt: skip
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    answer = InferResponse.from_grpc(reply)
    outputs = {o.name: o.as_numpy() for o in answer.outputs}
    code, rest = _post(server.port, _request(images))
    assert code == 200
    expected = {o["name"]: o["data"] for o in rest["outputs"]}
    assert [c.decode() if isinstance(c, bytes) else c for c in outputs["class"]] == expected[
        "class"
    ]
    np.testing.assert_allclose(outputs["probability"], expected["probability"], rtol=1e-6)
