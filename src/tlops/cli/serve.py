"""``tlops serve``: the predictor on loopback, as the InferenceService runs it on a cluster."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from tlops.cli.common import ParamsOpt, SetOpt, errors, guard, read_params


def serve(
    model_uri: Annotated[
        str | None,
        typer.Argument(
            help="models:/<name>/<version>, models:/<name>@<alias>, runs:/..., a model folder "
            "or a model.pt (default: the champion of register_model.model_name)."
        ),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default serve.http_port).")] = None,
    host: Annotated[str | None, typer.Option(help="Address (default serve.host).")] = None,
) -> None:
    """Serve a registered model over the Open Inference Protocol (V2) until Ctrl-C.

    POST /v2/models/<name>/infer with an input of datatype BYTES (base64 PNG/JPEG in JSON)
    answers class, probability and probabilities per image; /v2/models/<name>/ready says
    when the model has loaded. Each answered image is recorded (hash, embedding,
    prediction, confidence) under serve.record.uri for detect_change.
    """

    def body() -> None:
        resolved = read_params(params, overrides)
        cfg = resolved.serve.model_copy(
            update={
                "http_port": port if port is not None else resolved.serve.http_port,
                "host": host or resolved.serve.host,
            }
        )
        name = resolved.register_model.model_name
        spec = model_uri or f"models:/{name}@champion"
        from tlops.models.init import is_mlflow_uri
        from tlops.tracking.registry import pinned

        version = None
        if is_mlflow_uri(spec):
            spec, version = pinned(resolved.tracking, spec)  # an alias may move: serve one version

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        from tlops.serving.predictor import ImagePredictor
        from tlops.serving.recorder import ObjectSink, TrafficRecorder
        from tlops.serving.server import serve as run_server

        record = cfg.record
        recorder = None
        if record.uri:
            recorder = TrafficRecorder(record, ObjectSink(record.uri)).start()
        served = spec.removeprefix("models:/").split("/")[0] if is_mlflow_uri(spec) else name
        predictor = ImagePredictor(served, spec, resolved.image, cfg, recorder, version)

        def stopped() -> None:
            if recorder is not None:
                recorder.close()
                stats = recorder.stats
                errors.print(
                    f"traffic: {stats.recorded} records in {stats.files} files under "
                    f"{record.uri}, {stats.dropped} dropped",
                    highlight=False,
                )

        run_server(predictor, cfg, on_stop=stopped)

    guard(body)
