"""Training strategies on tiny data: they learn, are deterministic and resume exactly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tlops.config import Params
from tlops.io import read_json
from tlops.steps import extract_features, ingest_data, train


@pytest.fixture
def tiny(params: Params, make_tree: Callable[..., Path], tmp_path: Path) -> tuple[Params, Path]:
    root = make_tree(per_class=14, size=16)
    fast = params.model_copy(
        update={
            "model": params.model.model_copy(update={"image_size": 32}),
            "extract_features": params.extract_features.model_copy(
                update={"cache_dir": tmp_path / "cache"}
            ),
            "train": params.train.model_copy(
                update={
                    "epochs": 3,
                    "batch_size": 8,
                    "trainable_stages": 2,
                    "early_stopping": params.train.early_stopping.model_copy(
                        update={"patience": 5}
                    ),
                }
            ),
        }
    )
    ingest_data.run(fast, root, tmp_path / "ingest")
    return fast, tmp_path / "ingest"


def history(path: Path) -> list[dict[str, float]]:
    """The per-epoch metrics, without the wall-clock timing."""
    return [
        {k: v for k, v in row.items() if k != "epoch_seconds"}
        for row in read_json(path / "history.json")
    ]


def _with(params: Params, **train: object) -> Params:
    return params.model_copy(update={"train": params.train.model_copy(update=train)})


def test_finetune_is_deterministic(tiny: tuple[Params, Path], tmp_path: Path) -> None:
    params, ingest = tiny
    first = train.run(params, ingest, None, tmp_path / "a")
    second = train.run(params, ingest, None, tmp_path / "b")
    assert history(tmp_path / "a") == history(tmp_path / "b")
    assert first.epochs_run == 3 and first.resumed_from_epoch is None
    assert (tmp_path / "a" / "model.pt").is_file() and (tmp_path / "a" / "history.csv").is_file()
    assert (tmp_path / "a" / "training_curves.png").is_file()
    assert second.best_metric == first.best_metric


def test_killed_run_resumes_to_the_same_result(tiny: tuple[Params, Path], tmp_path: Path) -> None:
    params, ingest = tiny
    ckpt = tmp_path / "ckpt"
    train.run(params, ingest, None, tmp_path / "full")
    stopped = train.run(
        params, ingest, None, tmp_path / "resumed", checkpoint_dir=ckpt, stop_after_epoch=0
    )
    assert stopped.epochs_run == 1 and not (tmp_path / "resumed").exists()  # no partial output
    resumed = train.run(params, ingest, None, tmp_path / "resumed", checkpoint_dir=ckpt)
    assert resumed.resumed_from_epoch == 1
    assert history(tmp_path / "resumed") == history(tmp_path / "full")
    assert not ckpt.exists()  # a finished run leaves no checkpoint to be "resumed" later


def test_checkpoint_of_another_run_is_not_resumed(
    tiny: tuple[Params, Path], tmp_path: Path
) -> None:
    params, ingest = tiny
    ckpt = tmp_path / "ckpt"
    train.run(params, ingest, None, tmp_path / "x", checkpoint_dir=ckpt, stop_after_epoch=0)
    other = train.run(_with(params, lr=0.001), ingest, None, tmp_path / "y", checkpoint_dir=ckpt)
    assert other.resumed_from_epoch is None and other.epochs_run == 3


def test_scratch_and_linear_probe(tiny: tuple[Params, Path], tmp_path: Path) -> None:
    params, ingest = tiny
    scratch = train.run(_with(params, strategy="scratch"), ingest, None, tmp_path / "s")
    info = read_json(tmp_path / "s" / "train.json")
    assert scratch.strategy == "scratch" and info["init"] == "random"
    probe_params = _with(
        params,
        strategy="linear_probe",
        linear_probe=params.train.linear_probe.model_copy(update={"epochs": 60}),
    )
    extract_features.run(probe_params, ingest, tmp_path / "features")
    probe = train.run(probe_params, ingest, tmp_path / "features", tmp_path / "p")
    assert probe.epochs_run == 60
    assert read_json(tmp_path / "p" / "train.json")["init"].startswith("imagenet")
    with pytest.raises(ValueError, match="needs the extract_features output"):
        train.run(probe_params, ingest, None, tmp_path / "q")


def test_features_are_reused(tiny: tuple[Params, Path], tmp_path: Path) -> None:
    params, ingest = tiny
    first = extract_features.run(params, ingest, tmp_path / "f1")
    second = extract_features.run(params, ingest, tmp_path / "f2")
    assert not first.reused and second.reused and first.key == second.key
    assert first.num_features == 1280 and sum(first.counts.values()) == 42
    other = params.model_copy(update={"model": params.model.model_copy(update={"image_size": 40})})
    assert not extract_features.run(other, ingest, tmp_path / "f3").reused


def test_gradual_unfreezing_and_class_weights(tiny: tuple[Params, Path], tmp_path: Path) -> None:
    params, ingest = tiny
    result = train.run(
        _with(params, unfreeze_milestones={1: 4, 2: None}, class_weights="balanced"),
        ingest,
        None,
        tmp_path / "g",
    )
    assert result.epochs_run == 3
