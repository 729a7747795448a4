"""Domain adaptation strategies and the label budget on tiny source and target trees."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import fast_da, ingest, run_step, save_image, train_da, validate
from tlops.config import Params, apply_overrides
from tlops.data.budget import UNLABELED, budget_labels
from tlops.io import read_json

DA = ("source_only", "dan", "coral", "dann", "mcc")
TERMS = {"dan": "loss_mmd", "coral": "loss_coral", "dann": "loss_domain", "mcc": "loss_mcc"}


def _history(model_dir: Path) -> list[dict[str, float]]:
    rows = read_json(model_dir / "history.json")
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]


def _evaluate(params: Params, tmp_path: Path, model: str, source: bool = True) -> dict[str, Any]:
    """``evaluate`` of the model in ``tmp_path / model`` on the target; its evaluation.json."""
    inputs = {"dataset": tmp_path / "target_ingest", "model": tmp_path / model}
    if source:
        inputs["source_dataset"] = tmp_path / "source_ingest"
    run_step("evaluate", params, inputs, {"evaluation": tmp_path / "e"})
    evaluation: dict[str, Any] = read_json(tmp_path / "e" / "evaluation.json")
    return evaluation


@pytest.mark.parametrize("strategy", DA)
def test_each_strategy_trains_and_logs_its_domain_term(
    strategy: str, params: Params, domains: dict[str, Path], tmp_path: Path
) -> None:
    fast = fast_da(params, tmp_path, **{"train.strategy": strategy, "train.epochs": 1})
    result = train_da(fast, tmp_path, "model")
    rows = read_json(tmp_path / "model" / "history.json")
    assert result.epochs_run == 1 and all(np.isfinite(row["loss_ce"]) for row in rows)
    if strategy in TERMS:
        assert all(np.isfinite(row[TERMS[strategy]]) for row in rows)
    assert not any(key in rows[0] for key in TERMS.values() if key != TERMS.get(strategy))


@pytest.mark.parametrize(
    ("criterion", "selection"),
    [("source", "source val"), ("dev", "dev criterion (no target label)")],
)
def test_without_target_labels_training_cannot_see_them(
    criterion: str, selection: str, params: Params, domains: dict[str, Path], tmp_path: Path
) -> None:
    """Permuting the target's labels (its class folders) leaves the trained weights identical.

    With the source's validation split picking the best epoch, and with a label-free criterion
    (dev: the target images and the source's validation split).
    """
    permuted = tmp_path / "permuted"
    for old, new in (("cat", "dog"), ("dog", "fox"), ("fox", "cat")):
        shutil.copytree(domains["target"] / old, permuted / new)
    ingest(params, permuted, tmp_path / "permuted_ingest")
    validate(params, tmp_path / "permuted_ingest", tmp_path / "permuted_report")
    fast = fast_da(
        params,
        tmp_path,
        **{
            "train.strategy": "dann",
            "train.target_labels": 0,
            "train.selection.criterion": criterion,
        },
    )
    train_da(fast, tmp_path, "a")
    train_da(fast, tmp_path, "b", target="permuted")
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the same curves (every label-free criterion among them) and the same best epoch
    assert _history(tmp_path / "a") == _history(tmp_path / "b")
    assert read_json(tmp_path / "a" / "train.json")["selection"] == selection


def test_unlabeled_target_images_join_the_strategies_that_learn_from_them(
    params: Params, domains: dict[str, Path], tmp_path: Path
) -> None:
    from tlops.data.dataset import load_manifest

    folder = tmp_path / "unlabeled"
    for i in range(6):
        save_image(folder / f"u_{i}.png", 5000 + i)
    with_folder = apply_overrides(params, {"data.target_unlabeled": str(folder)})
    ingest(with_folder, domains["target"], tmp_path / "withu_ingest")
    validate(params, tmp_path / "withu_ingest", tmp_path / "withu_report")
    manifest = load_manifest(tmp_path / "withu_ingest")
    n_train = int((manifest["split"] == "train").sum())
    one = {"train.epochs": 1}
    mcc = fast_da(params, tmp_path, **one, **{"train.strategy": "mcc", "train.target_labels": 0})
    train_da(mcc, tmp_path, "mcc", target="withu")
    info = read_json(tmp_path / "mcc" / "train.json")
    assert info["target_images"] == n_train + 6 and info["unlabeled_data_version"]
    finetune = fast_da(params, tmp_path, **one, **{"train.target_labels": 2})
    train_da(finetune, tmp_path, "finetune", target="withu")
    info = read_json(tmp_path / "finetune" / "train.json")
    assert info["target_images"] == n_train and info["unlabeled_data_version"] is None


def test_a_strategy_on_target_labels_refuses_a_budget_of_zero(
    params: Params, domains: dict[str, Path], tmp_path: Path
) -> None:
    fast = fast_da(params, tmp_path, **{"train.strategy": "finetune", "train.target_labels": 0})
    with pytest.raises(ValueError, match="target_labels is 0: use a domain adaptation"):
        train_da(fast, tmp_path, "m")
    assert not (tmp_path / "m").exists()


def test_a_label_budget_trains_on_k_images_per_class(
    params: Params, domains: dict[str, Path], tmp_path: Path
) -> None:
    fast = fast_da(params, tmp_path, **{"train.target_labels": 2, "train.epochs": 1})
    result = train_da(fast, tmp_path, "m")
    assert result.epochs_run == 1
    info = read_json(tmp_path / "m" / "train.json")
    assert info["labeled_images"] == 6  # 2 per class, 3 classes
    # DVC gives every evaluate the source; a model not trained on it is not measured against it
    assert _evaluate(fast, tmp_path, "m").get("domain_distance") is None


def test_domain_adaptation_needs_the_source(
    params: Params, domains: dict[str, Path], tmp_path: Path
) -> None:
    fast = fast_da(params, tmp_path, **{"train.strategy": "coral"})
    inputs = {"dataset": tmp_path / "target_ingest", "report": tmp_path / "target_report"}
    with pytest.raises(ValueError, match="--source-dataset"):
        run_step("train", fast, inputs, {"model": tmp_path / "m"})


def test_the_budget_draw_is_per_class_seeded_and_stable() -> None:
    paths = [f"{c}/img_{i}.png" for c in "abc" for i in range(10)]
    labels = np.repeat(np.arange(3), 10)
    kept = budget_labels(paths, labels, 3, seed=0)
    assert [int((kept == c).sum()) for c in range(3)] == [3, 3, 3]
    assert (kept[kept != UNLABELED] == labels[kept != UNLABELED]).all()
    np.testing.assert_array_equal(kept, budget_labels(paths, labels, 3, seed=0))
    assert not np.array_equal(kept, budget_labels(paths, labels, 3, seed=1))
    # a new image changes the draw only where it ranks among the kept ones
    more = budget_labels([*paths, "a/new.png"], np.append(labels, 0), 3, seed=0)
    assert (more[:10] != UNLABELED).sum() + (more[30] != UNLABELED) == 3
    np.testing.assert_array_equal(more[10:30], kept[10:30])
    assert (budget_labels(paths, labels, "all", 0) == labels).all()
    assert (budget_labels(paths, labels, 0, 0) == UNLABELED).all()


def test_multitask_trains_a_head_per_domain_and_registers_the_target_one(
    params: Params, domains: dict[str, Path], tmp_path: Path
) -> None:
    fast = fast_da(params, tmp_path, **{"train.strategy": "multitask"})
    result = train_da(fast, tmp_path, "m")
    rows = read_json(tmp_path / "m" / "history.json")
    assert result.epochs_run == 2
    assert all(row["loss_target"] > 0 and row["loss_source"] > 0 for row in rows)
    state = torch.load(tmp_path / "m" / "model.pt", weights_only=True)["state_dict"]
    assert not any("source_head" in key for key in state)  # a means of training, not shipped
    assert read_json(tmp_path / "m" / "train.json")["selection"] == "target val"
    zero = fast_da(params, tmp_path, **{"train.strategy": "multitask", "train.target_labels": 0})
    with pytest.raises(ValueError, match="target_labels is 0"):
        train_da(zero, tmp_path, "z")


def test_a_source_only_reference_is_trained_and_scored_in_the_same_run(
    params: Params, domains: dict[str, Path], tmp_path: Path
) -> None:
    fast = fast_da(
        params,
        tmp_path,
        **{"train.strategy": "mcc", "train.epochs": 1, "train.da.reference": True},
    )
    train_da(fast, tmp_path, "m")
    assert (tmp_path / "m" / "reference.pt").is_file()
    evaluation = _evaluate(fast, tmp_path, "m")
    assert 0 <= evaluation["source_only_reference"]["accuracy"] <= 1
    assert (
        evaluation["overall"]["source_only_accuracy"]
        == (evaluation["source_only_reference"]["accuracy"])
    )
    distance = evaluation["domain_distance"]
    assert distance["domain_mmd2_before"] >= 0 and distance["domain_mmd2_after"] >= 0


def test_distill_a_small_student_from_a_trained_teacher(
    params: Params, domains: dict[str, Path], tmp_path: Path
) -> None:
    teacher = fast_da(params, tmp_path, **{"train.epochs": 1})
    train_da(teacher, tmp_path, "teacher")
    student = fast_da(
        params,
        tmp_path,
        **{
            "train.strategy": "distill",
            "train.epochs": 2,
            "train.target_labels": 2,
            "train.distill.teacher": str(tmp_path / "teacher" / "model.pt"),
            "model.backbone": "timm:mobilenetv3_small_050",
            "model.pretrained": False,
        },
    )
    train_da(student, tmp_path, "student")
    rows = read_json(tmp_path / "student" / "history.json")
    assert all(row["loss_kd"] >= 0 for row in rows)
    info = read_json(tmp_path / "student" / "train.json")
    assert info["teacher"] == str(tmp_path / "teacher" / "model.pt")
    assert info["labeled_images"] == 6  # and all 42 images through the teacher's soft targets
    compared = _evaluate(student, tmp_path, "student", source=False)["teacher"]
    assert compared["student_params"] * 4 < compared["teacher_params"]
    assert compared["student_images_per_s"] > 0 and compared["teacher_images_per_s"] > 0
    assert 0 <= compared["teacher_accuracy"] <= 1


def test_distill_without_a_teacher_or_champion_is_a_clear_error(
    params: Params, domains: dict[str, Path], tmp_path: Path
) -> None:
    student = fast_da(params, tmp_path, **{"train.strategy": "distill"})
    with pytest.raises(ValueError, match="no champion to distill from"):
        train_da(student, tmp_path, "m")
    architecture = fast_da(
        params, tmp_path, **{"train.strategy": "distill", "train.distill.teacher": "timm:resnet18"}
    )
    with pytest.raises(ValueError, match="a teacher is a trained model"):
        train_da(architecture, tmp_path, "m")
    assert not (tmp_path / "m").exists()


def test_autoencoder_pretrains_the_encoder_then_fine_tunes(
    params: Params, domains: dict[str, Path], tmp_path: Path
) -> None:
    fast = fast_da(
        params,
        tmp_path,
        **{
            "train.strategy": "autoencoder",
            "train.epochs": 1,
            "train.autoencoder.epochs": 2,
            "train.autoencoder.batch_size": 16,
            "model.backbone": "timm:mobilenetv3_small_050",
            "model.pretrained": False,
        },
    )
    train_da(fast, tmp_path, "a")
    pretraining = read_json(tmp_path / "a" / "pretraining.json")
    assert [row["epoch"] for row in pretraining] == [1, 2]  # counted from 1, as everywhere
    losses = [row["ae_reconstruction_loss"] for row in pretraining]
    assert np.isfinite(losses).all() and losses[1] < losses[0]  # it learns to reconstruct
    assert read_json(tmp_path / "a" / "train.json")["init"] == "random"
    # deterministic: the same pretraining and fine-tuning again give the same weights
    train_da(fast, tmp_path, "b")
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
