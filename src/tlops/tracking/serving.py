"""The registered model: an MLflow pyfunc that takes images and answers with class names.

What is logged (``mlflow.pyfunc.log_model`` with a ``loader_module``, no pickle anywhere):

* ``data/tlops_model.pt`` - the weights-only tlops checkpoint (architecture spec, classes,
  normalisation, resolution, alignment, state dict), read with ``torch.load(weights_only=True)``;
* ``data/preprocess.json`` - how the training images were read (``image`` params: mode,
  background for transparency, the decompression-bomb limit);
* ``MLmodel`` naming this module as the loader: MLflow calls :func:`_load_pyfunc`, so the code
  that runs on the serving host is the installed ``tlops`` package (the project image), never
  code from the artifact store. A tampered ``tlops_model.pt`` cannot run code: the weights-only
  unpickler refuses anything but tensors and plain containers.

The input is a DataFrame (or dict) with an ``image`` column; each value is encoded image bytes
(PNG, JPEG, ... or a base64 string of them, as JSON carries them) or an array of pixel values
0..255 of any size, (H, W) gray or (H, W, 1|3|4). Each image is prepared as training prepared it
(mode conversion, alignment, resize of the shorter side + centre crop to the model's
resolution, normalisation). The answer is one row per image: ``class``, ``probability`` and
``probabilities`` (class name -> probability). A bad image is an ``MlflowException`` with
``INVALID_PARAMETER_VALUE`` (HTTP 400 from ``mlflow models serve``) naming the row and the rule.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlops.config import ImageConfig, TrackingConfig
from tlops.data.images import ImageDecodeError, convert_mode, decode_bytes
from tlops.data.tensors import model_input, normalize
from tlops.models.init import load_model
from tlops.models.model import CHECKPOINT_ARTIFACT, TransferModel
from tlops.tracking.registry import CHALLENGER
from tlops.tracking.runs import active_run, client

PREPROCESS_FILE = "preprocess.json"
IMAGE_COLUMN = "image"
LOADER_MODULE = __name__
MAX_BATCH = 256  # images per forward pass: bounds memory whatever a request holds


class BadImage(ValueError):
    """An input that is not an image the model can take: the row (if one) and the rule."""

    def __init__(self, reason: str, row: int | None = None) -> None:
        super().__init__(reason if row is None else f"row {row}: {reason}")
        self.reason = reason
        self.row = row


@dataclass
class ImageClassifier:
    """What MLflow's pyfunc calls: images in, class names and probabilities out."""

    model: TransferModel
    image: ImageConfig

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """Classify every image of ``data`` (see the module docstring for the input forms).

        Raises:
            mlflow.exceptions.MlflowException: An input is not a usable image (HTTP 400).
        """
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            pixels = self.prepare(images_of(data))
        except BadImage as exc:
            # MLflow's scoring server puts "Failed to predict data '<the whole request>'" before
            # any message; `detail` comes back on its own in the 400's JSON, for clients to show
            raise MlflowException(
                str(exc),
                error_code=INVALID_PARAMETER_VALUE,
                error_class="INVALID_IMAGE",
                detail=str(exc),
            ) from None
        return self.answer(self.probabilities(pixels))

    def prepare(self, images: Sequence[Any]) -> np.ndarray:
        """Each input as the model takes it: uint8 (N, C, S, S), prepared as in training."""
        size = self.model.image_size
        if size is None:
            raise BadImage("the model records no training resolution (not trained by tlops)")
        if not len(images):
            raise BadImage(f"no images: send a column '{IMAGE_COLUMN}' with at least one row")
        prepared = []
        for row, value in enumerate(images):
            picture = to_picture(value, row, self.image)
            prepared.append(model_input(picture, size, self.model.align))
        return np.stack(prepared)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, classes) of prepared images, in batches."""
        return self.scores(pixels)[0]

    def scores(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N, classes) and pooled embeddings (N, D) of prepared images.

        One backbone pass gives both (the predictor records the embeddings of its traffic).
        """
        model = self.model.eval()
        probs, embeddings = [], []
        with torch.no_grad():
            for start in range(0, len(pixels), MAX_BATCH):
                batch = torch.from_numpy(pixels[start : start + MAX_BATCH])
                features = model.features(normalize(batch, model.mean, model.std))
                probs.append(torch.softmax(model.head(features), dim=1).numpy())
                embeddings.append(features.numpy())
        return np.concatenate(probs).astype(np.float64), np.concatenate(embeddings)

    def answer(self, probabilities: np.ndarray) -> Any:
        """One row per image: the class, its probability, every class's probability."""
        import pandas as pd

        classes = self.model.classes
        best = probabilities.argmax(axis=1)
        return pd.DataFrame(
            {
                "class": [classes[i] for i in best],
                "probability": probabilities[np.arange(len(best)), best],
                "probabilities": [
                    {name: float(p) for name, p in zip(classes, row, strict=True)}
                    for row in probabilities
                ],
            }
        )


def images_of(data: Any) -> list[Any]:
    """The image values of a request: a DataFrame or dict column, a list, or an array batch."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        if IMAGE_COLUMN not in data.columns:
            columns = [str(c) for c in data.columns]
            raise BadImage(f"the input has no column '{IMAGE_COLUMN}' (columns: {columns})")
        return list(data[IMAGE_COLUMN])
    if isinstance(data, dict):
        if IMAGE_COLUMN not in data:
            raise BadImage(f"the input has no field '{IMAGE_COLUMN}' (fields: {sorted(data)})")
        value = data[IMAGE_COLUMN]
        return list(value) if isinstance(value, list | tuple) else [value]
    if isinstance(data, np.ndarray) and data.dtype != object and data.ndim in (3, 4):
        if data.ndim == 4 or data.shape[-1] not in (1, 3, 4):
            return list(data)  # a batch of images
        return [data]
    if isinstance(data, list | tuple):
        return list(data)
    return [data]


def to_picture(value: Any, row: int, cfg: ImageConfig) -> Any:
    """One input value as a PIL image in ``cfg.mode`` (the bomb guard and mode rules apply)."""
    from PIL import Image

    where = Path(f"row {row}")
    if isinstance(value, str):
        value = from_base64(value, row)
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            picture, _ = decode_bytes(bytes(value), where, cfg)
        except ImageDecodeError as exc:
            raise BadImage(f"{exc.status.value}: {exc.detail}", row) from None
        return picture
    if value is None:
        raise BadImage("no image (null)", row)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise BadImage(f"not an array of pixels: {exc}", row) from None
    if array.dtype == object or array.dtype.kind not in "uif":
        raise BadImage(f"pixel values must be numbers (got {array.dtype})", row)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise BadImage(
            f"an array image is (H, W) or (H, W, 1|3|4) pixels, got shape {tuple(array.shape)}",
            row,
        )
    if array.shape[0] * array.shape[1] > cfg.max_pixels:
        raise BadImage(
            f"{array.shape[1]}x{array.shape[0]} pixels is more than image.max_pixels "
            f"= {cfg.max_pixels:,}",
            row,
        )
    if array.size and (not np.isfinite(array).all() or array.min() < 0 or array.max() > 255):
        raise BadImage("pixel values must be within 0..255", row)
    mode = "L" if array.ndim == 2 else {3: "RGB", 4: "RGBA"}[array.shape[-1]]
    picture = Image.fromarray(np.rint(array).astype(np.uint8), mode=mode)
    return convert_mode(picture, cfg)


def from_base64(text: str, row: int) -> bytes:
    """The bytes of a base64 string (or a ``data:`` URL) of an encoded image."""
    payload = text.split(",", 1)[1] if text.startswith("data:") else text  # a data: URL
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage(
            "a string must be base64 of an encoded image (PNG, JPEG, ...)", row
        ) from None


def _load_pyfunc(data_path: str) -> ImageClassifier:
    """MLflow's entry point (``loader_module``): the classifier from the model's data folder."""
    folder = Path(data_path)
    preprocess = json.loads((folder / PREPROCESS_FILE).read_text(encoding="utf-8"))
    model = load_model(folder / CHECKPOINT_ARTIFACT)
    return ImageClassifier(model.cpu().eval(), ImageConfig.model_validate(preprocess["image"]))


@dataclass(frozen=True)
class Registered:
    """A registered model version and the aliases it holds."""

    name: str
    version: str
    aliases: tuple[str, ...]
    model_uri: str


def _requirements() -> list[str]:
    # Explicit pins: MLflow would otherwise spend seconds inferring them by importing the model.
    from importlib.metadata import version

    names = [
        "torch",
        "torchvision",
        "timm",
        "mlflow",
        "numpy",
        "pillow",
        "pydantic",
        "pyyaml",
        "pandas",
    ]
    return [f"{name}=={version(name)}" for name in names]


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 (C, H, W) or (H, W[, C]) pixels as PNG bytes (input examples, tests, benchmarks)."""
    from PIL import Image

    array = pixels.transpose(1, 2, 0) if pixels.ndim == 3 and pixels.shape[0] in (1, 3) else pixels
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def log_and_register(
    cfg: TrackingConfig,
    run_id: str,
    model: TransferModel,
    model_name: str,
    image_cfg: ImageConfig,
    example: bytes,
    tags: dict[str, str],
    alias: str | None = CHALLENGER,
) -> Registered:
    """Log the model as an image-taking pyfunc and register it as a new version.

    Args:
        cfg: Tracking params.
        run_id: The pipeline's run.
        model: The trained model (CPU); its checkpoint records resolution and alignment.
        model_name: Registered model name.
        image_cfg: How training read images (the model reads its inputs the same way).
        example: One encoded image (the input example MLflow validates the model with).
        tags: Tags for the version.
        alias: The alias the new version takes (``challenger``; None: none, an experiment).

    Returns:
        The registered version.
    """
    model = model.cpu().eval()
    info = _log_pyfunc(cfg, run_id, model, image_cfg, example)
    return _register_version(cfg, run_id, model_name, info, tags, alias)


def _signature() -> Any:
    """The pyfunc's signature: an ``image`` column in; class, probability, probabilities out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, DataType, Map, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(AnyType(), IMAGE_COLUMN)]),  # type: ignore[no-untyped-call]
        outputs=Schema(
            [
                ColSpec(DataType.string, "class"),
                ColSpec(DataType.double, "probability"),
                ColSpec(Map(DataType.double), "probabilities"),
            ]
        ),
    )


def _metadata(model: TransferModel) -> dict[str, Any]:
    """What the ``MLmodel`` file says about the model, for a reader of the registry."""
    return {
        "classes": model.classes,
        "image_size": model.image_size,
        "input": (
            f"column '{IMAGE_COLUMN}': encoded image bytes (base64 in JSON) or "
            "pixel arrays 0..255, any size and mode; prepared as in training"
        ),
        "output": "class, probability, probabilities (class name -> probability)",
        "align": model.align.model_dump(mode="json") if model.align.active else None,
        "backbone": model.spec,
        "serving": "needs the tlops package installed (the project image)",
    }


def _log_pyfunc(
    cfg: TrackingConfig, run_id: str, model: TransferModel, image_cfg: ImageConfig, example: bytes
) -> Any:
    """Log the model into the run as a pyfunc (weights-only checkpoint + preprocess.json)."""
    import mlflow
    import pandas as pd

    signature = _signature()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "tlops"
        data.mkdir()
        torch.save(model.checkpoint(), data / CHECKPOINT_ARTIFACT)
        (data / PREPROCESS_FILE).write_text(
            json.dumps({"image": image_cfg.model_dump(mode="json")}, indent=2), encoding="utf-8"
        )
        with active_run(cfg, run_id):
            return mlflow.pyfunc.log_model(
                name="model",
                loader_module=LOADER_MODULE,
                data_path=str(data),
                signature=signature,
                input_example=pd.DataFrame(
                    {IMAGE_COLUMN: [base64.b64encode(example).decode("ascii")]}
                ),
                pip_requirements=_requirements(),
                metadata=_metadata(model),
            )


def _register_version(
    cfg: TrackingConfig,
    run_id: str,
    model_name: str,
    info: Any,
    tags: dict[str, str],
    alias: str | None,
) -> Registered:
    """A new version of ``model_name`` (created if new) from the logged model ``info``."""
    import mlflow

    mlflow_client = client(cfg)
    try:
        mlflow_client.create_registered_model(model_name)
    except mlflow.exceptions.MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    # the logged model's id goes with its models:/ URI: a tracking server checks the two agree
    version = mlflow_client.create_model_version(
        model_name, info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id
    )
    if alias is not None:
        mlflow_client.set_registered_model_alias(model_name, alias, version.version)
    aliases = (alias,) if alias is not None else ()
    return Registered(model_name, str(version.version), aliases, info.model_uri)


def load_classifier(spec: str, image_cfg: ImageConfig) -> ImageClassifier:
    """The classifier of a registered model (``models:/...``, ``runs:/...``) or a checkpoint.

    A registered model brings its own ``preprocess.json``; a checkpoint file (``model.pt`` of a
    train output) is read with ``image_cfg``, the params' ``image`` section.
    """
    from tlops.models.init import is_mlflow_uri

    if is_mlflow_uri(spec):
        import mlflow

        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=spec))
        found = sorted(local.rglob(PREPROCESS_FILE))
        if not found:
            raise FileNotFoundError(
                f"{spec}: not an image model logged by tlops (no {PREPROCESS_FILE})"
            )
        return _load_pyfunc(str(found[0].parent))
    return ImageClassifier(load_model(Path(spec)).cpu().eval(), image_cfg)
