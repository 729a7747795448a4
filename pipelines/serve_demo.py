"""``make serve-demo``: the champion served, asked about drifted images, and the check that sees it.

In a folder of its own (its own git repository, DVC, MLflow store and params.yaml), every step
a real command:

1. drop 1 of the target data, committed -> ``tlops retrain``: the first champion;
2. ``tlops serve`` on loopback: the champion on KServe's model server, recording its traffic
   under ``runs/traffic`` (the images kept, so they can be labeled later);
3. a client sends the demo's drifted digits (inverted contrast) over the Open Inference
   Protocol, as model users would; the server is stopped (its recorder writes what is left);
4. ``tlops retrain`` again: the data is unchanged, and detect_change reports the drift from
   the served traffic alone.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.retrain_demo import _env, _read, _setup, _sh

BATCH = 16  # images per request


@dataclass
class ServeStory:
    """What the story showed."""

    champion: str
    requests: int
    images: int
    mean_confidence: float
    request_example: str  # one V2 request, shortened
    answer_example: str
    server_line: str  # the server's own summary of what it recorded
    action: str
    reasons: list[str]
    triggers: int
    exported: str  # tlops data traffic's line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drifted_images(count: int) -> list[bytes]:
    """``count`` of the demo's drifted target digits (the drifted drop), as PNG bytes."""
    from tlops.data.demo import TARGET_DROPS, digits_target, drifted, drop_of
    from tlops.tracking.serving import encode_png

    images, labels = digits_target()
    chosen = drifted(images)[drop_of(labels, TARGET_DROPS, 0) == TARGET_DROPS - 1][:count]
    return [encode_png(pixels) for pixels in chosen]


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return dict(json.loads(answer.read()))


def _wait_ready(url: str, server: subprocess.Popen[str], seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, OSError):
            if server.poll() is not None or time.monotonic() > deadline:
                out = server.communicate(timeout=30)[0] if server.poll() is not None else ""
                raise RuntimeError(f"serve-demo: the predictor never got ready\n{out}") from None
            time.sleep(0.5)


def _send(base: str, images: list[bytes]) -> tuple[int, float, str, str]:
    """The images as V2 requests of ``BATCH``; (requests, mean confidence, examples)."""
    confidences: list[float] = []
    requests = 0
    example = answer = ""
    for start in range(0, len(images), BATCH):
        data = [base64.b64encode(i).decode() for i in images[start : start + BATCH]]
        body = {
            "id": f"demo-{start // BATCH}",
            "inputs": [{"name": "image", "shape": [len(data)], "datatype": "BYTES", "data": data}],
        }
        reply = _post(f"{base}/infer", body)
        requests += 1
        confidences += reply["outputs"][1]["data"]
        if not example:
            body["inputs"][0]["data"] = [data[0][:24] + "...", "..."]
            example = json.dumps(body)
            reply["outputs"] = reply["outputs"][:2]
            for output in reply["outputs"]:
                output["data"] = [*output["data"][:2], "..."]
            answer = json.dumps(reply)
    return requests, sum(confidences) / max(len(confidences), 1), example, answer


def _serve(workdir: Path, model: str, images: list[bytes]) -> tuple[int, float, str, str, str]:
    """``tlops serve`` on the champion while the client sends ``images``; then stopped."""
    port = _free_port()
    server = subprocess.Popen(
        ["tlops", "serve", "--port", str(port), "-S", "serve.record.keep_images=true",
         "-S", "serve.record.flush_s=0.5"],
        cwd=workdir, env=_env(workdir), text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/v2/models/{model}"
    try:
        _wait_ready(f"{base}/ready", server)
        requests, confidence, example, answer = _send(base, images)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
        out = server.communicate(timeout=120)[0]
    line = next((ln for ln in out.splitlines() if ln.startswith("traffic: ")), "")
    if not line:
        raise RuntimeError(f"serve-demo: the predictor did not say what it recorded\n{out}")
    return requests, confidence, example, answer, line


def run_story(
    workdir: Path, params_file: Path, echo: Callable[[str], None] = print, images: int = 160
) -> ServeStory:
    """Tell the story in ``workdir`` (replaced)."""
    _setup(workdir, params_file)
    model = yaml.safe_load((workdir / "params.yaml").read_text())["register_model"]["model_name"]
    echo("[1/4] drop 1 -> the first champion")
    _sh(workdir, "tlops", "data", "demo", "--drops", "1")
    _sh(workdir, "git", "add", "data")
    _sh(workdir, "git", "commit", "-qm", "data: drop 1")
    _sh(workdir, "tlops", "retrain", "--out", "runs/1-drop-1")
    (decision,) = (workdir / "runs/1-drop-1").glob("kfp/*/register-model/decision/decision.json")
    champion = str(_read(decision)["version"])
    echo(f"    {model} v{champion} is the champion")
    echo(f"[2/4] tlops serve: {model} v{champion} on loopback (Open Inference Protocol V2)")
    echo(f"[3/4] a client sends {images} drifted digits (inverted contrast), {BATCH} per request")
    requests, confidence, example, answer, line = _serve(workdir, model, drifted_images(images))
    echo(f"    {requests} requests answered; mean confidence {confidence:.3f}")
    echo(f"    {line}")
    echo("[4/4] tlops retrain: the data is unchanged; the traffic is not")
    _sh(workdir, "tlops", "retrain", "--out", "runs/2-served-traffic")
    (found,) = (workdir / "runs/2-served-traffic").glob("kfp/*/detect-change/change/change.json")
    change = _read(found)
    for reason in change["reasons"][: max(change["triggers"], 1) + 1]:
        echo(f"    - {reason}")
    exported = _sh(
        workdir, "tlops", "data", "traffic", "--out", "runs/served-images", "--version", champion
    ).strip()
    echo(f"    {exported}")
    return ServeStory(
        champion, requests, images, confidence, example, answer, line,
        str(change["action"]), list(change["reasons"]), int(change["triggers"]), exported,
    )  # fmt: skip
