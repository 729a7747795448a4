"""The registered model takes images: logged as a pyfunc into a real MLflow store, loaded back.

A tiny random-init model (3 classes, 16 px) is enough: what is tested is the artifact (no
pickle, weights only), the input forms, the preprocessing (the same as training's) and the
answer (class names), not accuracy. Serving over HTTP is in test_pipeline_mlflow.py.
"""

from __future__ import annotations

import base64
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.helpers import changed, repo_params
from tlops.config import TrackingConfig
from tlops.data.tensors import model_input, normalize
from tlops.models.init import create_model
from tlops.models.model import CHECKPOINT_ARTIFACT

pytestmark = [pytest.mark.integration]
CLASSES = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TrackingConfig:
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return changed(repo_params().tracking, tracking_uri=uri, artifact_location=root / "mlartifacts")


@pytest.fixture(autouse=True)
def _module_store(store: TrackingConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)


@pytest.fixture(scope="module")
def registered(store: TrackingConfig) -> tuple[str, TrackingConfig, object]:
    from tlops.tracking.runs import start_run
    from tlops.tracking.serving import encode_png, log_and_register

    torch.manual_seed(0)
    model = create_model("timm:mobilenetv3_small_050", CLASSES, pretrained=False).eval()
    model.image_size = 16
    model.align = changed(repo_params().model.align, autocontrast=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
        run_id = start_run(store, "serving-test", {}, {})
        example = encode_png(np.random.default_rng(0).integers(0, 256, (20, 20), dtype=np.uint8))
        version = log_and_register(
            store, run_id, model, "tiny", repo_params().image, example, {"a": "b"}
        )
    return version.model_uri, store, model


def _load(uri: str, cfg: TrackingConfig):  # type: ignore[no-untyped-def]
    import mlflow

    from tlops.tracking.runs import client

    client(cfg)
    return mlflow.pyfunc.load_model(uri)


def _png(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def test_the_artifact_holds_no_pickle_only_weights_and_the_loader_module(
    registered: tuple[str, TrackingConfig, object],
) -> None:
    import mlflow
    import yaml

    uri, cfg, _ = registered
    _load(uri, cfg)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]
    assert set(flavor) == {"python_function"}  # no pytorch flavor, no pickled module
    assert flavor["python_function"]["loader_module"] == "tlops.tracking.serving"
    assert flavor["python_function"].get("code") is None  # no code travels with the model
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert f"data/tlops/{CHECKPOINT_ARTIFACT}" in files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))]


def test_images_in_any_form_come_back_with_class_names(
    registered: tuple[str, TrackingConfig, object],
) -> None:
    uri, cfg, model = registered
    served = _load(uri, cfg)
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    rgba = rng.integers(0, 256, (60, 100, 4), dtype=np.uint8)
    rgb = rng.integers(0, 256, (31, 17, 3), dtype=np.uint8)
    frame = pd.DataFrame(
        {
            "image": [
                _png(gray),  # bytes
                base64.b64encode(_png(rgb)).decode(),  # base64, as JSON carries bytes
                "data:image/jpeg;base64," + base64.b64encode(_png(rgb, "JPEG")).decode(),
                gray.astype(np.float32),  # an array of any size and mode
                rgba,
            ]
        }
    )
    answer = served.predict(frame)
    assert list(answer.columns) == ["class", "probability", "probabilities"]
    assert set(answer["class"]) <= set(CLASSES)
    for _, row in answer.iterrows():
        assert set(row["probabilities"]) == set(CLASSES)
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-5
        assert row["probability"] == max(row["probabilities"].values())
    # an encoded image and the same pixels as an array are the same input
    assert answer["probabilities"][0] == pytest.approx(answer["probabilities"][3])
    # the preprocessing is training's: mode conversion, alignment, resize, normalisation
    picture = Image.open(io.BytesIO(_png(gray))).convert("RGB")
    x = torch.from_numpy(np.array(model_input(picture, 16, model.align)[None]))  # type: ignore[attr-defined]
    with torch.no_grad():
        expected = torch.softmax(model(normalize(x, model.mean, model.std)), 1)[0]  # type: ignore[attr-defined,operator]
    assert [answer["probabilities"][0][c] for c in CLASSES] == pytest.approx(
        expected.tolist(), abs=1e-6
    )
    # a dict (a JSON body's fields) works as well as a DataFrame
    assert served.predict({"image": [_png(gray)]})["class"][0] == answer["class"][0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"GIF89a not really", "row 0: truncated"),
        ("not base64 at all!", "row 0: a string must be base64 of an encoded image"),
        (base64.b64encode(b"hello").decode(), "row 0: not_an_image"),
        (np.zeros((4, 4, 2)), "row 0: an array image is (H, W) or (H, W, 1|3|4) pixels"),
        (np.full((4, 4), 300.0), "row 0: pixel values must be within 0..255"),
        (None, "row 0: no image"),
    ],
)
def test_a_bad_image_is_a_short_error_naming_the_row_and_the_rule(
    registered: tuple[str, TrackingConfig, object], value: object, message: str
) -> None:
    from mlflow.exceptions import MlflowException

    uri, cfg, _ = registered
    served = _load(uri, cfg)
    with pytest.raises(MlflowException) as caught:
        served.predict(pd.DataFrame({"image": [value]}))
    assert message in caught.value.message
    assert caught.value.get_http_status_code() == 400
    with pytest.raises(MlflowException, match=r"missing inputs \['image'\]"):
        served.predict(pd.DataFrame({"pixels": [b""]}))


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_tampered_checkpoint_cannot_run_code_on_the_serving_host(
    registered: tuple[str, TrackingConfig, object], tmp_path: Path
) -> None:
    import mlflow

    uri, cfg, _ = registered
    _load(uri, cfg)
    # the artifact store as an attacker with write access to it would change it
    source = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri)).resolve()
    tampered = tmp_path / "model"
    import shutil

    shutil.copytree(source, tampered)
    marker = tmp_path / "pwned"
    with (tampered / "data" / "tlops" / CHECKPOINT_ARTIFACT).open("wb") as handle:
        pickle.dump({"format": 1, "state_dict": _Exploit(marker)}, handle, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        mlflow.pyfunc.load_model(str(tampered))
    assert not marker.exists()


def test_tlops_predict_names_the_file_that_breaks_a_rule_of_the_models_preprocessing(
    registered: tuple[str, TrackingConfig, object], tmp_path: Path
) -> None:
    """What the model's own preprocessing refuses comes back as the file, not a request row."""
    from typer.testing import CliRunner

    from tests.conftest import REPO
    from tests.helpers import png_with_size
    from tlops.cli import app

    uri, _, _ = registered
    good = tmp_path / "good.png"
    good.write_bytes(_png(np.zeros((20, 20), np.uint8)))
    bomb = png_with_size(tmp_path / "bomb.png", 40_000, 40_000)  # over image.max_pixels
    result = CliRunner().invoke(
        app,
        ["predict", str(good), str(bomb), "--model", uri, "--params", str(REPO / "params.yaml")],
    )
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert f"{bomb}: decompression_bomb" in said and "row 1" not in result.output
    assert f"refused by {uri}" in said  # which model judged it


def test_tlops_predict_names_a_file_no_image_reader_takes_before_fetching_a_model(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from tests.conftest import REPO
    from tlops.cli import app

    good = tmp_path / "good.png"
    good.write_bytes(_png(np.zeros((20, 20), np.uint8)))
    broken = tmp_path / "broken.png"
    broken.write_bytes(good.read_bytes()[:30])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for bad, rule in ((broken, "truncated"), (empty, "empty_file")):
        # the model named is none: the file is judged before any model is looked up
        result = CliRunner().invoke(
            app,
            [
                "predict",
                str(good),
                str(bad),
                "--model",
                "models:/nope/9",
                "--params",
                str(REPO / "params.yaml"),
            ],
        )
        assert result.exit_code == 1, result.output
        assert f"{bad}: {rule}" in " ".join(result.output.split())
        assert "nope" not in result.output  # no model was looked up
        assert isinstance(result.exception, SystemExit)  # a clear exit, no traceback
    # every file that fails is named, not only the first
    both = CliRunner().invoke(
        app,
        ["predict", str(broken), str(good), str(empty), "--model", "models:/nope/9",
         "--params", str(REPO / "params.yaml")],
    )  # fmt: skip
    said = " ".join(both.output.split())
    assert both.exit_code == 1 and "2 image files refused" in said, both.output
    assert f"{broken}: truncated" in said and f"{empty}: empty_file" in said
