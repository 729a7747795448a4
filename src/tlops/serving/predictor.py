"""The predictor: a registered version on KServe's model server, Open Inference Protocol (V2).

:class:`ImagePredictor` is a ``kserve.Model``. It loads the version through the same code the
MLflow pyfunc runs (:func:`tlops.tracking.serving.load_classifier`: the weights-only
checkpoint and ``preprocess.json``), so the two answer alike to the last digit. A request:

``POST /v2/models/<name>/infer``::

    {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                 "data": ["<base64 of a PNG>", "<base64 of a JPEG>"]}]}

(over gRPC the BYTES elements are the encoded images themselves). The answer has three
outputs, one row per image: ``class`` (BYTES), ``probability`` (FP32, the top class's) and
``probabilities`` (FP32, ``[N, classes]``, in the order of the ``classes`` parameter, a JSON
list). A bad image is a 400 naming the input, the element and the rule; more than
``serve.max_images`` images a 400; a body over ``serve.max_request_bytes`` a 413
(:func:`body_limit`). ``/v2/models/<name>/ready`` is false (503) until the model has loaded; a
model that cannot load logs one line saying why and stays not ready.

Scoring runs in the server's thread pool, never on the event loop, and each answered image is
handed to the traffic recorder, which never makes a response wait.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput, ModelNotReady

from tlops.config import ImageConfig, ServeConfig
from tlops.serving.recorder import Served, TrafficRecorder
from tlops.tracking.serving import BadImage, ImageClassifier, from_base64, load_classifier

log = logging.getLogger("tlops.serving")


class ImagePredictor(Model):  # type: ignore[misc]
    """A registered image classifier as a KServe model.

    Args:
        name: The name requests use (``/v2/models/<name>/infer``): the registered model's.
        model_uri: What to load: ``models:/<name>/<version or @alias>``, ``runs:/...``, a
            downloaded model folder, or a tlops checkpoint.
        image: How to read images when the model does not bring its own ``preprocess.json``.
        serve: Request limits.
        recorder: Where each answered image's record goes (None: not recorded).
        version: The version to report (and record); found from the URI when None.
    """

    def __init__(
        self,
        name: str,
        model_uri: str,
        image: ImageConfig,
        serve: ServeConfig,
        recorder: TrafficRecorder | None = None,
        version: str | None = None,
    ) -> None:
        super().__init__(name)
        self.model_uri = model_uri
        self.image = image
        self.serve = serve
        self.recorder = recorder
        self.version = version or _version_of(model_uri)
        self.classifier: ImageClassifier | None = None
        self.load_error: str | None = None
        self._attempted = threading.Event()

    def start(self) -> None:
        """KServe's start would mark the model ready: it is ready only once :meth:`load` is."""

    def load_until_ready(self, first_wait_s: float = 2.0, max_wait_s: float = 60.0) -> None:
        """Load, and after a failure try again (waits doubling up to ``max_wait_s``).

        A store that is briefly down (MLflow, S3) must not leave a pod unready for good while
        its liveness probe keeps passing; each failure logs its line.
        """
        wait = first_wait_s
        while not self.load():
            time.sleep(wait)
            wait = min(2 * wait, max_wait_s)
            self._attempted.clear()

    def load(self) -> bool:
        """Load the model once; later calls (KServe calls it per request while not ready) wait.

        Returns:
            Whether the model is ready.
        """
        if self._attempted.is_set():  # loading (or failed): the loading thread owns retries
            return bool(self.ready)  # type: ignore[has-type]
        self._attempted.set()
        started = time.perf_counter()
        try:
            self.classifier = load_classifier(self.model_uri, self.image)
        except Exception as exc:  # a clear line, not a traceback: readiness stays false
            self.load_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.error(
                "tlops serve: cannot load %s: %s (not ready)", self.model_uri, self.load_error
            )
            return False
        model = self.classifier.model
        log.info(
            "tlops serve: %s ready in %.1f s: %d classes, %s px, version %s",
            self.model_uri,
            time.perf_counter() - started,
            len(model.classes),
            model.image_size,
            self.version or "?",
        )
        self.ready = True
        return True

    def get_input_types(self) -> list[dict[str, Any]]:
        """The V2 model metadata's inputs."""
        return [{"name": "image", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        """The V2 model metadata's outputs."""
        classes = len(self.classifier.model.classes) if self.classifier else -1
        return [
            {"name": "class", "datatype": "BYTES", "shape": [-1]},
            {"name": "probability", "datatype": "FP32", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
        ]

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> InferResponse:
        """Classify the images of a V2 request (see the module docstring).

        Raises:
            InvalidInput: Not a V2 request of images, too many, or a bad image (HTTP 400).
            ModelNotReady: The model has not loaded (HTTP 503).
        """
        arrived = time.time()
        if not self.ready or self.classifier is None:
            raise ModelNotReady(self.name)
        if not isinstance(payload, InferRequest):
            raise InvalidInput(
                f"send the Open Inference Protocol (V2): POST /v2/models/{self.name}/infer"
            )
        name, values = "image", list[Any]()
        try:
            name, values = self._images(payload)
            loop = asyncio.get_running_loop()
            probs, embeddings, encoded = await loop.run_in_executor(None, self._score, values)
        except BadImage as exc:
            self._record_failure(payload, arrived, len(values))
            where = f"input '{name}'" + (f", element {exc.row}" if exc.row is not None else "")
            raise InvalidInput(f"{where}: {exc.reason}") from None
        except Exception:  # refused or failed: it counts in the error rate a canary is judged by
            self._record_failure(payload, arrived, len(values))
            raise
        response = self._response(payload, probs)
        self._record(payload, encoded, probs, embeddings, arrived)
        return response

    def _images(self, payload: InferRequest) -> tuple[str, list[Any]]:
        if len(payload.inputs) != 1:
            names = [i.name for i in payload.inputs]
            raise InvalidInput(f"send one input of images (datatype BYTES), got {names}")
        tensor = payload.inputs[0]
        if tensor.datatype != "BYTES":
            raise InvalidInput(
                f"input '{tensor.name}': datatype must be BYTES (encoded images), "
                f"got {tensor.datatype}"
            )
        try:
            values = list(np.asarray(tensor.as_numpy(), dtype=object).ravel())
        except Exception as exc:  # a shape that does not fit the data
            raise InvalidInput(f"input '{tensor.name}': {exc}") from None
        if not values:
            raise InvalidInput(f"input '{tensor.name}': no images")
        if len(values) > self.serve.max_images:
            raise InvalidInput(
                f"input '{tensor.name}': {len(values)} images, more than serve.max_images "
                f"= {self.serve.max_images} per request"
            )
        return tensor.name, values

    def _score(self, values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        classifier = self.classifier
        assert classifier is not None
        encoded = [_encoded(v, row) for row, v in enumerate(values)]
        pixels = classifier.prepare(encoded)  # the pyfunc's own preparation
        probs, embeddings = classifier.scores(pixels)
        return probs, embeddings, encoded

    def _response(self, payload: InferRequest, probs: np.ndarray) -> InferResponse:
        assert self.classifier is not None
        classes = self.classifier.model.classes
        best = probs.argmax(axis=1)
        n = len(best)
        outputs = [
            InferOutput("class", [n], "BYTES", [classes[i] for i in best]),
            InferOutput("probability", [n], "FP32", [float(p) for p in probs[np.arange(n), best]]),
            InferOutput(
                "probabilities",
                [n, len(classes)],
                "FP32",
                [float(p) for p in probs.ravel()],
                parameters={"classes": json.dumps(classes)},
            ),
        ]
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            model_version=self.version,
            infer_outputs=outputs,
        )

    def _record(
        self,
        payload: InferRequest,
        encoded: Sequence[bytes],
        probs: np.ndarray,
        embeddings: np.ndarray,
        arrived: float,
    ) -> None:
        if self.recorder is None:
            return
        assert self.classifier is not None
        classes = self.classifier.model.classes
        latency = (time.time() - arrived) * 1000.0
        keep = self.recorder.cfg.keep_images
        self.recorder.record(
            [
                Served(
                    time=arrived,
                    request_id=payload.id or "",
                    version=self.version or "",
                    sha256=hashlib.sha256(data).hexdigest(),
                    predicted=classes[int(row.argmax())],
                    confidence=float(row.max()),
                    probabilities=row.astype(np.float32),
                    embedding=emb.astype(np.float32),
                    latency_ms=latency,
                    image=data if keep else None,
                )
                for data, row, emb in zip(encoded, probs, embeddings, strict=True)
            ]
        )

    def _record_failure(self, payload: InferRequest, arrived: float, images: int) -> None:
        """A refused request: one error row per image it held (at least one)."""
        if self.recorder is None:
            return
        nan = np.full(0, np.nan, dtype=np.float32)
        self.recorder.record(
            [
                Served(
                    time=arrived,
                    request_id=payload.id or "",
                    version=self.version or "",
                    sha256="",
                    predicted="",
                    confidence=float("nan"),
                    probabilities=nan,
                    embedding=nan,
                    latency_ms=(time.time() - arrived) * 1000.0,
                    status="error",
                )
            ]
            * max(images, 1)
        )


def _encoded(value: Any, row: int) -> bytes:
    """An element's image bytes: gRPC and binary tensors carry bytes, JSON carries base64."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return from_base64(str(value), row)


def _version_of(model_uri: str) -> str | None:
    """``models:/name/3`` -> ``3``; other URIs name no version."""
    if model_uri.startswith("models:/"):
        tail = model_uri.removeprefix("models:/").rstrip("/").split("/")
        if len(tail) == 2 and tail[1].isdigit():
            return tail[1]
    return None
