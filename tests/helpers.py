"""Helpers that write images and odd files for the tests."""

from __future__ import annotations

import functools
import json
import os
import struct
import zlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from PIL import Image
from pydantic import BaseModel

if TYPE_CHECKING:
    from tlops.config import Params
    from tlops.runner.spec import StepResult

_REPO = Path(__file__).resolve().parents[1]
_Model = TypeVar("_Model", bound=BaseModel)


@functools.cache
def repo_params() -> Params:
    """The repository's params.yaml, loaded once.

    Where a test takes a config object from: the params models have no defaults of their own,
    params.yaml holds every one.
    """
    from tlops.config import load_params

    return load_params(_REPO / "params.yaml")


def changed(config: _Model, **changes: Any) -> _Model:
    """``config`` with ``changes``, validated again (``model_copy`` would not check them)."""
    return type(config).model_validate({**config.model_dump(), **changes})


def save_image(path: Path, seed: int, size: int = 16, mode: str = "L", fmt: str = "PNG") -> Path:
    """Write a small image with content unique to ``seed``."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": 1, "RGB": 3}[mode]
    pixels = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)
    image.save(path, format=fmt)
    return path


def png_with_size(path: Path, width: int, height: int) -> Path:
    """Write a tiny valid-looking PNG whose header declares ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to a fraction of its length."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def symlink(target: Path, link: Path) -> Path:
    """Create ``link`` pointing at ``target``."""
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)
    return link


def run_step(
    name: str, params: Any, inputs: dict[str, Path], outputs: dict[str, Path], **args: str
) -> StepResult:
    """Run a step as every runner does (tlops.runner.execute) and return its result."""
    from tlops.runner.execute import execute
    from tlops.steps import spec_of

    return execute(spec_of(name), params, inputs, outputs, args)


def ingest(params: Any, root: Path, out: Path, domain: str = "target") -> SimpleNamespace:
    """``ingest_data`` of the ImageFolder at ``root`` (as params ``data.<domain>``) into ``out``.

    Returns:
        What the step wrote in ``ingest.json``, read as attributes.
    """
    from tlops.config import apply_overrides
    from tlops.io import read_json

    with_root = apply_overrides(params, {f"data.{domain}": str(root)})
    run_step("ingest_data", with_root, {}, {"dataset": out}, domain=domain)
    return SimpleNamespace(**read_json(out / "ingest.json"))


def validate(params: Any, ingest_dir: Path, out: Path) -> SimpleNamespace:
    """``validate_data`` of an ingest output into ``out``.

    Returns:
        What the step wrote in ``validation.json``, read as attributes.
    """
    from tlops.io import read_json

    run_step("validate_data", params, {"dataset": ingest_dir}, {"report": out})
    return SimpleNamespace(**read_json(out / "validation.json"))


def tiny_project(root: Path, repo: Path, drops: int = 1) -> Path:
    """A throwaway project at ``root``: demo target drops and a params.yaml tuned for speed.

    Drops 1..``drops`` of the target; 32 px, 2 epochs; the source entry points at the target
    (the default strategy does not read it).
    """
    import yaml

    from tlops.data.demo import write_demo

    write_demo(None, root / "data" / "target", drops=drops)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update({"source": "data/target", "target": "data/target"})
    params["model"]["image_size"] = 32
    params["train"].update({"epochs": 2, "trainable_stages": 3, "batch_size": 32})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def free_port() -> int:
    """A TCP port free on loopback now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, server: Any, seconds: float = 120) -> None:
    """Wait until ``url`` answers; fail with the server's output if it exits or never does."""
    import time
    import urllib.request

    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                output = server.stdout.read() if server.stdout else ""
                text = output.decode() if isinstance(output, bytes) else output
                raise AssertionError(f"{url} did not answer:\n{text}") from None
            time.sleep(0.5)


def training_inputs(
    tree: Path, work: Path, classes: list[str], repo: Path, edit: Any = None
) -> tuple[Path, dict[str, Path]]:
    """A params file for training on the tiny ImageFolder ``tree``, and ``tree`` ingested and
    validated under ``work``: ``(params file, {"dataset": ..., "report": ...})``.

    The repository's params with ``classes``, 32 px, fp32 contiguous eager, patience 10 and the
    cache under ``work``; ``edit(raw)`` changes the raw params before they are written.
    """
    import yaml

    from tlops.config import load_params

    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["validate_data"].update({"classes": list(classes), "min_images_per_split_class": 0})
    raw["model"]["image_size"] = 32
    raw["train"]["numerics"] = "fp32+contiguous+eager"
    raw["train"]["early_stopping"]["patience"] = 10
    raw["extract_features"]["cache_dir"] = str(work / "cache")
    if edit is not None:
        edit(raw)
    params_file = work / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    params = load_params(params_file)
    ingest(params, tree, work / "ingest")
    validate(params, work / "ingest", work / "report")
    return params_file, {"dataset": work / "ingest", "report": work / "report"}


def label_as_the_demo_annotator(selection: Path, out: Path, root: Path) -> int:
    """Answer a select_labels round from the demo's ground truth; write the drop as a pull does.

    The tasks and their answers take the shape of Label Studio's export, so the drop is
    written by the pull's own code (the server itself is tested in test_label_studio).
    """
    from tlops.data.demo import unlabeled_truth
    from tlops.labeling.drop import read_export, write_drop
    from tlops.labeling.studio import choice_result, tasks_from_selection

    exported = [
        {
            "id": i,
            **task,
            "annotations": [
                {"id": i, "result": [choice_result(unlabeled_truth(task["data"]["file"]))]}
            ],
        }
        for i, task in enumerate(tasks_from_selection(selection, root=root), start=1)
    ]
    pulled = read_export(exported, [str(d) for d in range(10)], root)
    write_drop(pulled, out)
    return len(pulled.rows)


def fast_da(params: Any, tmp_path: Path, **overrides: Any) -> Any:
    """Params for training a domain adaptation strategy in seconds on the ``domains`` trees."""
    from tlops.config import apply_overrides

    return apply_overrides(
        params,
        {
            "model.image_size": 32,
            "extract_features.cache_dir": str(tmp_path / "cache"),
            "train.epochs": 2,
            "train.batch_size": 8,
            "train.trainable_stages": 2,
            "train.numerics": "fp32+contiguous+eager",
            "train.da.target_batch_size": 4,
            **overrides,
        },
    )


def da_inputs(tmp_path: Path, target: str = "target") -> dict[str, Path]:
    """The train step's inputs on the ``domains`` fixture's ingests (``target`` and the source)."""
    return {
        "dataset": tmp_path / f"{target}_ingest",
        "report": tmp_path / f"{target}_report",
        "source_dataset": tmp_path / "source_ingest",
        "source_report": tmp_path / "source_report",
    }


def train_da(params: Any, tmp_path: Path, out: str, target: str = "target") -> SimpleNamespace:
    """The train step on the target and the source; its ``train.json``, read as attributes."""
    from tlops.io import read_json

    run_step("train", params, da_inputs(tmp_path, target), {"model": tmp_path / out})
    return SimpleNamespace(**read_json(tmp_path / out / "train.json"))


def loopback_kubeconfig(path: Path, port: int) -> Path:
    """A kubeconfig at ``path`` whose cluster is a loopback API server on ``port``."""
    import yaml

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "loopback",
        "clusters": [{"name": "loopback", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "contexts": [{"name": "loopback", "context": {"cluster": "loopback", "user": "pipeline"}}],
        "users": [{"name": "pipeline", "user": {"token": "t"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


class FakeApiHandler(BaseHTTPRequestHandler):
    """A loopback stand-in for the Kubernetes API server: JSON answers and ``Status`` errors."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str | None = None) -> None:
        self._send(
            code,
            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
             "code": code, "message": message or reason},
        )  # fmt: skip
