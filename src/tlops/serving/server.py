"""Run the predictor on KServe's model server: REST (and gRPC when a port is given).

KServe's ``ModelServer`` listens on every interface and refuses to start without a model that
is ready; :func:`serve` binds the REST server to ``serve.host`` (loopback by default) and starts
answering at once, with the model loading in a thread of its own, so an orchestrator's
readiness probe (``/v2/models/<name>/ready``) says "not yet" instead of the port being closed.
KServe's gRPC server (``serve.grpc_port``) always listens on every interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tlops.config import ServeConfig

log = logging.getLogger("tlops.serving")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
# past this, a refused body is not read to its end (the client sees a reset, not the 413)
DRAIN_LIMIT = 256 * 2**20
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is a 413, before any parsing."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 413 when its body is over the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._drain(receive, int(declared))
            await self._refuse(send, int(declared))
            return
        # a chunked body declares no length: read it up to the limit, then hand it on
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            more = bool(message.get("more_body", False))
            size += len(chunk)
            if size > self.limit:
                if more:
                    await self._drain(receive, size)
                await self._refuse(send, size)
                return
            chunks.append(chunk)
        body, replayed = b"".join(chunks), False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _drain(self, receive: Receive, size: int) -> None:
        """Read (and drop) a refused body, so the client gets the 413 instead of a reset."""
        read = 0
        while size and read < DRAIN_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                return
            read += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, send: Send, size: int) -> None:
        body = json.dumps(
            {
                "error": f"request body of {size:,} bytes is more than serve.max_request_bytes "
                f"= {self.limit:,}"
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _report_grpc(task: asyncio.Future[Any]) -> None:
    """A gRPC server that could not start (its port taken) says so; REST goes on."""
    if not task.cancelled() and task.exception() is not None:
        log.error("tlops serve: the gRPC server stopped: %s", task.exception())


def import_kserve_server() -> Any:
    """``kserve.model_server``, imported without letting it parse this process's arguments.

    KServe parses ``sys.argv`` when the module is imported (its own command line); tlops'
    options must not be read as KServe's.
    """
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve.model_server as model_server
    finally:
        sys.argv = argv
    return model_server


def serve(model: Any, cfg: ServeConfig, on_stop: Callable[[], None] | None = None) -> None:
    """Serve ``model`` (an :class:`~tlops.serving.predictor.ImagePredictor`) until stopped.

    Args:
        model: The predictor; it is loaded in a thread while the server already answers.
        cfg: ``serve``: host, ports, the request body limit.
        on_stop: Called once the server has stopped (flushes the traffic recorder).
    """
    model_server = import_kserve_server()
    from kserve.protocol.rest.server import RESTServer

    model_server.app.add_middleware(BodyLimit, limit=cfg.max_request_bytes)
    server = model_server.ModelServer(
        http_port=cfg.http_port,
        grpc_port=cfg.grpc_port or 0,
        enable_grpc=cfg.grpc_port is not None,
        enable_latency_logging=False,
    )
    server.register_model(model)  # not ready yet: KServe's start would refuse it
    threading.Thread(target=model.load_until_ready, name="tlops-load", daemon=True).start()
    rest = RESTServer(
        model_server.FASTAPI_APP_IMPORT_STRING,
        server.dataplane,
        server.model_repository_extension,
        cfg.http_port,
    )
    rest.config.host = cfg.host  # KServe binds 0.0.0.0; locally, loopback
    grpc = None
    if cfg.grpc_port is not None:
        from kserve.protocol.grpc.server import GRPCServer

        # the request limit holds over gRPC too (a larger message: RESOURCE_EXHAUSTED)
        limits = {
            "grpc_max_receive_message_length": cfg.max_request_bytes,
            "grpc_max_send_message_length": 64 * 2**20,
        }
        grpc = GRPCServer(
            cfg.grpc_port, server.dataplane, server.model_repository_extension, limits, 5
        )
    where = f"http://{cfg.host}:{cfg.http_port}/v2/models/{model.name}"
    log.info("tlops serve: %s%s", where, f", gRPC :{cfg.grpc_port}" if grpc else "")

    async def main() -> None:
        # scoring runs in the loop's default executor (ImagePredictor.predict)
        from concurrent.futures import ThreadPoolExecutor

        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=4))
        # uvicorn re-raises a captured SIGTERM after it stops, which would end the process
        # before the recorder writes what it holds: the signals are handled here instead
        uvicorn = rest._server
        uvicorn.capture_signals = contextlib.nullcontext
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, uvicorn.handle_exit, sig, None)
        grpc_task = asyncio.ensure_future(grpc.start(server.max_threads)) if grpc else None
        if grpc_task is not None:
            grpc_task.add_done_callback(_report_grpc)
        await rest.start()  # returns when uvicorn stops, the requests in flight answered
        if grpc is not None and grpc_task is not None:
            await grpc.stop()  # KServe's gRPC server does not watch the signals itself
            grpc_task.cancel()

    try:
        asyncio.run(main())
    finally:
        if on_stop is not None:
            on_stop()
