"""Benchmark: serving the registered model: MLflow's scoring server and tlops' KServe predictor.

Part 1, the image-taking registered model against the raw-array model it replaced:

Both are served by ``mlflow models serve`` (one worker, loopback) from the same MLflow store and
the same weights (EfficientNet-Lite0 ImageNet + a 10-class head, 64 px, as ``make run``
trains), one after the other in one process run, and driven by one client in a closed loop:

* **images** (today's model, ``tlops.tracking.serving``): the request carries the PNG files as
  they are, base64 in a JSON column; the model decodes, converts, resizes and normalises them
  and answers with class names and probabilities;
* **raw arrays** (the model before, ``mlflow.pytorch`` with a pickled module): the client
  decodes and resizes each image itself to 64x64x3 float32 (what the old README asked of a
  client) and sends the pixels as JSON; the answer is bare probabilities.

For single images and batches of 32 (UCI digits PNGs, 8x8): requests/s, p50 and p99 latency,
and the request size. The client's own decode/resize time is part of the raw-array latency
(a client must do it), measured separately too.

Part 2, ``tlops serve`` (the predictor of the InferenceService: KServe's model server, the Open
Inference Protocol V2, base64 PNGs as a BYTES tensor) on the same registered version, with the
traffic recorder off and on. The two servers run side by side and each request goes to both in
alternating order, so the recording's cost on p50 is measured under the same machine state.
Then a bounded load test of the recording server: ``--clients`` concurrent clients send
``--load`` single-image requests; errors (goal 0), p50/p99 under load and the server's memory
(resident set size) after it.

    .venv/bin/python bench/serving.py | tee bench/results/serving.txt
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from machine import describe
from tlops.config import TrackingConfig, load_params
from tlops.data.demo import digits_target
from tlops.data.tensors import resize_square
from tlops.models.init import create_model
from tlops.tracking.runs import active_run, client, start_run
from tlops.tracking.serving import encode_png, log_and_register

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
PARAMS = load_params(REPO / "params.yaml")
SIZE = 64


class RawArrayModel(nn.Module):
    """The model tlops registered before: float32 (N, S, S, 3) pixels in, probabilities out."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(model.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(model.std).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float().div(255.0)
        return torch.softmax(self.model((x - self.mean) / self.std), dim=1)


def log_models(cfg: TrackingConfig, pngs: list[bytes]) -> tuple[str, str]:
    """Both models from the same weights: (images model URI, raw-array model URI).

    The images model is registered as ``bench-images`` version 1 (what ``tlops serve`` serves).
    """
    import mlflow
    from mlflow.models import infer_signature

    torch.manual_seed(0)
    model = create_model("timm:tf_efficientnet_lite0", [str(i) for i in range(10)]).eval()
    model.image_size = SIZE
    run_id = start_run(cfg, "serving-bench", {}, {})
    images = log_and_register(cfg, run_id, model, "bench-images", PARAMS.image, pngs[0], {})
    raw = RawArrayModel(model).eval()
    example = client_pixels(pngs[:1])
    with torch.no_grad():
        signature = infer_signature(example, raw(torch.from_numpy(example)).numpy())
    with active_run(cfg, run_id):
        info = mlflow.pytorch.log_model(
            raw,
            name="raw",
            serialization_format="pickle",
            signature=signature,
            input_example=example,
        )
    return images.model_uri, info.model_uri


def client_pixels(pngs: list[bytes]) -> np.ndarray:
    """What a raw-array client must do: decode, RGB, resize + crop to 64, float32."""
    return np.stack(
        [
            np.asarray(
                resize_square(Image.open(io.BytesIO(png)).convert("RGB"), SIZE), dtype=np.float32
            )
            for png in pngs
        ]
    )


def images_body(pngs: list[bytes]) -> bytes:
    rows = [[base64.b64encode(png).decode()] for png in pngs]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()


def raw_body(pngs: list[bytes]) -> bytes:
    return json.dumps({"inputs": client_pixels(pngs).tolist()}).encode()


def serve(uri: str, port: int, env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    """Start ``mlflow models serve`` on ``uri`` (its stderr to ``log``); wait until it answers."""
    server = subprocess.Popen(
        [
            *(str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local"),
            *("-h", "127.0.0.1", "-p", str(port), "-w", "1"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )
    return _wait_for(f"http://127.0.0.1:{port}/ping", server, log, f"mlflow models serve {uri}")


def _wait_for(url: str, server: Any, log: Any, what: str, seconds: float = 300) -> Any:
    """Until ``url`` answers; the server's log tail if it exits or never does."""
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return server
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-3000:]
                raise RuntimeError(f"{what} did not get ready:\n{tail}") from None
            time.sleep(0.5)


def drive(port: int, make_body: Any, batches: list[list[bytes]]) -> dict[str, float]:
    """One client, closed loop: each request's latency (building the body included)."""
    latencies, sizes = [], []
    for batch in batches:
        started = time.perf_counter()
        body = make_body(batch)
        _post(f"http://127.0.0.1:{port}/invocations", body)
        latencies.append(time.perf_counter() - started)
        sizes.append(len(body))
    return _summary(latencies, sizes)


def tlops_serve(port: int, env: dict[str, str], log: Any, record: Path | None) -> Any:
    """``tlops serve models:/bench-images/1`` on ``port``; wait until the model is ready."""
    server = subprocess.Popen(
        [str(BIN / "tlops"), "serve", "models:/bench-images/1", "--port", str(port),
         "-S", f"serve.record.uri={record if record else 'null'}"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    ready = f"http://127.0.0.1:{port}/v2/models/bench-images/ready"
    return _wait_for(ready, server, log, "tlops serve")


def v2_body(pngs: list[bytes]) -> bytes:
    data = [base64.b64encode(png).decode() for png in pngs]
    tensor = {"name": "image", "shape": [len(data)], "datatype": "BYTES", "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


def _post(url: str, body: bytes) -> None:
    """POST a JSON body and read the whole answer."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()


def _post_v2(port: int, body: bytes) -> float:
    started = time.perf_counter()
    _post(f"http://127.0.0.1:{port}/v2/models/bench-images/infer", body)
    return time.perf_counter() - started


def _summary(latencies: list[float], sizes: list[int]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "requests_per_s": len(latencies) / sum(latencies),
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "request_kb": statistics.mean(sizes) / 1024,
    }


def side_by_side(ports: tuple[int, int], batches: list[list[bytes]]) -> list[dict[str, float]]:
    """Each request to both servers, in alternating order; each server's figures."""
    latencies: list[list[float]] = [[], []]
    sizes = []
    for i, batch in enumerate(batches):
        body = v2_body(batch)
        sizes.append(len(body))
        for which in (0, 1) if i % 2 == 0 else (1, 0):
            latencies[which].append(_post_v2(ports[which], body))
    return [_summary(latencies[0], sizes), _summary(latencies[1], sizes)]


def load_test(port: int, pngs: list[bytes], clients: int, total: int) -> dict[str, float]:
    """``clients`` threads send ``total`` single-image requests; errors and latency under load."""
    from concurrent.futures import ThreadPoolExecutor

    bodies = [v2_body([pngs[i % len(pngs)]]) for i in range(total)]

    def one(body: bytes) -> float | None:
        try:
            return _post_v2(port, body)
        except OSError:
            return None

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(one, bodies))
    wall = time.perf_counter() - started
    ok = sorted(a for a in answers if a is not None)
    return {
        "errors": float(len(answers) - len(ok)),
        "images_per_s": len(ok) / wall,
        "p50_ms": 1000 * statistics.median(ok) if ok else float("nan"),
        "p99_ms": 1000 * ok[min(len(ok) - 1, int(0.99 * len(ok)))] if ok else float("nan"),
    }


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def predictor_part(
    env: dict[str, str], tmp: Path, stack: contextlib.ExitStack, singles: list[list[bytes]],
    batches: list[list[bytes]], pngs: list[bytes], clients: int, load: int,
) -> tuple[dict[tuple[str, str], dict[str, float]], dict[str, float], float, str]:  # fmt: skip
    """tlops serve with the recorder off and on, side by side; then the load test (on)."""
    servers = []
    for port, record in ((5310, None), (5311, tmp / "traffic")):
        log = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 - the stack closes it
        servers.append((port, tlops_serve(port, env, log, record), log))
    try:
        ports = (servers[0][0], servers[1][0])
        side_by_side(ports, singles[:20])  # warm-up
        one = side_by_side(ports, singles)
        many = side_by_side(ports, batches)
        loaded = load_test(ports[1], pngs, clients, load)
        memory = rss_mb(servers[1][1].pid)
    finally:
        for _, server, _ in servers:
            os.killpg(server.pid, signal.SIGINT)
            server.wait(timeout=60)
    log = servers[1][2]
    log.seek(0)
    recorded = next(
        (
            ln
            for ln in log.read().decode(errors="replace").splitlines()
            if ln.startswith("traffic:")
        ),
        "traffic: (no summary line)",
    )
    results = {}
    for i, name in enumerate(("tlops serve, recording off", "tlops serve, recording on")):
        results[(name, "1")] = one[i]
        results[(name, "32")] = many[i]
    return results, loaded, memory, recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--single", type=int, default=300, help="single-image requests")
    parser.add_argument("--batches", type=int, default=60, help="batch-of-32 requests")
    parser.add_argument("--clients", type=int, default=8, help="load test: concurrent clients")
    parser.add_argument("--load", type=int, default=400, help="load test: requests in all")
    args = parser.parse_args()
    images, _ = digits_target()
    pngs = [encode_png(image) for image in images[:512]]
    rng = np.random.default_rng(0)
    singles = [[pngs[i]] for i in rng.integers(0, len(pngs), args.single)]
    batches = [[pngs[i] for i in rng.integers(0, len(pngs), 32)] for _ in range(args.batches)]
    results: dict[tuple[str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        # mlflow models serve execs uvicorn from PATH
        path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path}
        os.environ["MLFLOW_TRACKING_URI"] = uri
        store = {"tracking_uri": uri, "artifact_location": Path(tmp) / "mlartifacts"}
        cfg = PARAMS.tracking.model_validate({**PARAMS.tracking.model_dump(), **store})
        client(cfg)
        image_uri, raw_uri = log_models(cfg, pngs)
        for name, model_uri, make_body in (
            ("images (PNG bytes in, class names out)", image_uri, images_body),
            ("raw arrays (client resizes, float JSON)", raw_uri, raw_body),
        ):
            port = 5300 + len(results)
            log = stack.enter_context(tempfile.TemporaryFile())
            server = serve(model_uri, port, env, log)
            try:
                drive(port, make_body, singles[:20])  # warm-up
                results[(name, "1")] = drive(port, make_body, singles)
                results[(name, "32")] = drive(port, make_body, batches)
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
        served, loaded, memory, recorded = predictor_part(
            env, Path(tmp), stack, singles, batches, pngs, args.clients, args.load
        )
        results.update(served)
    started = time.perf_counter()
    client_pixels([pngs[0]] * 100)
    prep_ms = 10 * (time.perf_counter() - started)
    print(f"machine: {describe()}")
    print(f"{args.single} single-image and {args.batches} batch-of-32 requests per model\n")
    print("| model | batch | requests/s | images/s | p50 ms | p99 ms | request KB |")
    print("|---|---|---|---|---|---|---|")
    for (name, batch), r in results.items():
        print(
            f"| {name} | {batch} | {r['requests_per_s']:.1f} | "
            f"{r['requests_per_s'] * int(batch):.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['request_kb']:.1f} |"
        )
    print(f"\nclient-side decode + resize of one image for the raw-array model: {prep_ms:.2f} ms")
    off = results[("tlops serve, recording off", "1")]["p50_ms"]
    on = results[("tlops serve, recording on", "1")]["p50_ms"]
    cost = 100 * (on / off - 1)
    print(
        f"recording's cost on the single-image p50: {cost:+.1f} % "
        f"(goal <= 5 %: {'met' if cost <= 5 else 'missed'}); {recorded}"
    )
    print(
        f"load test (recording on): {args.clients} concurrent clients, {args.load} single-image "
        f"requests: {loaded['errors']:.0f} errors (goal 0: "
        f"{'met' if loaded['errors'] == 0 else 'missed'}), {loaded['images_per_s']:.0f} images/s, "
        f"p50 {loaded['p50_ms']:.1f} ms, p99 {loaded['p99_ms']:.1f} ms"
    )
    print(f"memory of one replica (tlops serve, resident after the load test): {memory:.0f} MiB")


if __name__ == "__main__":
    main()
