"""Training strategies on tiny data: they learn, are deterministic and resume exactly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import ingest, run_step, validate
from tlops import plugins
from tlops.config import ConfigError, Params, TrainConfig, apply_overrides, load_params
from tlops.data.dataset import load_splits
from tlops.io import read_json
from tlops.models.init import create_model
from tlops.plugins import Need, needs_of
from tlops.training.loop import fit
from tlops.training.strategies import Strategy, TrainData, get_strategy

Tiny = tuple[Params, Path, Path]


@pytest.fixture
def tiny(params: Params, make_tree: Callable[..., Path], tmp_path: Path) -> Tiny:
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
    ingest(fast, root, tmp_path / "ingest")
    validate(fast, tmp_path / "ingest", tmp_path / "report")
    return fast, tmp_path / "ingest", tmp_path / "report"


def train(tiny: Tiny, out: Path, params: Params | None = None, **inputs: Path) -> Any:
    """Run the train step; what it wrote in ``train.json``, read as attributes."""
    base, dataset, report = tiny
    run_step(
        "train", params or base, {"dataset": dataset, "report": report, **inputs}, {"model": out}
    )
    return SimpleNamespace(**read_json(out / "train.json"))


def history(path: Path) -> list[dict[str, float]]:
    """The per-epoch metrics, without the wall-clock timing."""
    return [
        {k: v for k, v in row.items() if k != "epoch_seconds"}
        for row in read_json(path / "history.json")
    ]


def _with(params: Params, **train: object) -> Params:
    return params.model_copy(update={"train": params.train.model_copy(update=train)})


def test_the_strategies_are_what_the_files_register(params: Params) -> None:
    # every file of tlops/training/strategies registers one strategy; nothing lists them by hand
    files = {
        p.stem
        for p in (Path(__file__).parents[2] / "src/tlops/training/strategies").glob("*.py")
        if p.stem not in ("__init__", "base")
    }
    declared = plugins.strategies()
    assert {decl.module.rsplit(".", 1)[1] for decl in declared.values()} == files
    for name, decl in declared.items():
        assert issubclass(decl.cls, Strategy) and decl.cls.name == name, name
        chosen = apply_overrides(params, {"train.strategy": name})
        assert (
            get_strategy(chosen.train).needs
            == needs_of(chosen.train)
            == decl.needs_of(chosen.train)
        )
        assert set(decl.sections) <= set(chosen.train.model_dump()), name  # params.yaml has them
    with pytest.raises(ConfigError, match="'nope': unknown"):
        apply_overrides(params, {"train.strategy": "nope"})


def test_what_a_strategy_trains_on_may_depend_on_its_params(params: Params) -> None:
    encoder = apply_overrides(params, {"train.strategy": "autoencoder"})
    assert needs_of(encoder.train) == {Need.IMAGES}
    with_source = apply_overrides(encoder, {"train.autoencoder.source": True})
    assert needs_of(with_source.train) == {Need.IMAGES, Need.SOURCE}
    assert get_strategy(with_source.train).needs == {Need.IMAGES, Need.SOURCE}


def test_a_strategy_section_is_validated_by_its_own_model(params: Params) -> None:
    with pytest.raises(ConfigError, match=r"train\.dan\.weight: Input should be greater"):
        apply_overrides(params, {"train.strategy": "dan", "train.dan.weight": -1})
    with pytest.raises(ConfigError, match=r"has no key 'wieght' \(did you mean 'weight'\?\)"):
        apply_overrides(params, {"train.dan.wieght": 1})
    without = params.model_dump(mode="json")
    del without["train"]["dan"]
    without["train"]["strategy"] = "dan"
    with pytest.raises(ValueError, match=r"train\.dan: missing \(train\.strategy dan reads it"):
        Params.model_validate(without)


def test_finetune_is_deterministic(tiny: Tiny, tmp_path: Path) -> None:
    first = train(tiny, tmp_path / "a")
    second = train(tiny, tmp_path / "b")
    assert history(tmp_path / "a") == history(tmp_path / "b")
    assert first.epochs_run == 3
    assert read_json(tmp_path / "a" / "step.json")["resumed_from_epoch"] is None  # a run's fact
    assert (tmp_path / "a" / "model.pt").is_file() and (tmp_path / "a" / "history.csv").is_file()
    assert (tmp_path / "a" / "training_curves.png").is_file()
    assert second.best_metric == first.best_metric
    assert not (tiny[0].extract_features.cache_dir / "checkpoints").exists() or not any(
        (tiny[0].extract_features.cache_dir / "checkpoints").iterdir()
    )  # a finished run leaves no checkpoint to be "resumed" later


def _loop(params: Params, dataset: Path, strategy_name: str = "finetune") -> tuple[Any, ...]:
    """A strategy, a fresh model and the data for :func:`fit`, as the train step makes them."""
    cfg = _with(params, strategy=strategy_name).train
    strategy = get_strategy(cfg)
    torch.manual_seed(0)
    model = create_model("timm:tf_efficientnet_lite0", ["cat", "dog", "fox"], dropout=0.2)
    splits = load_splits(params, dataset, ["cat", "dog", "fox"], ("train", "val"))
    return strategy, model, TrainData(["cat", "dog", "fox"], splits["train"], splits["val"]), cfg


def test_a_crashed_run_resumes_to_the_same_result(tiny: Tiny, tmp_path: Path) -> None:
    params, dataset, _ = tiny
    cpu = torch.device("cpu")
    full = fit(*_loop(params, dataset), tmp_path / "full", "run-a", cpu)

    def crash_in_epoch_1(row: dict[str, float]) -> None:
        if row["epoch"] == 1:
            raise KeyboardInterrupt  # the process dies before epoch 1's checkpoint is written

    with pytest.raises(KeyboardInterrupt):
        fit(*_loop(params, dataset), tmp_path / "ckpt", "run-a", cpu, crash_in_epoch_1)
    resumed = fit(*_loop(params, dataset), tmp_path / "ckpt", "run-a", cpu)
    assert resumed.resumed_from_epoch == 1
    assert [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in resumed.history] == [
        {k: v for k, v in row.items() if k != "epoch_seconds"} for row in full.history
    ]


def test_checkpoint_of_another_run_is_not_resumed(tiny: Tiny, tmp_path: Path) -> None:
    params, dataset, _ = tiny
    cpu = torch.device("cpu")
    fit(*_loop(params, dataset), tmp_path / "ckpt", "run-a", cpu)  # leaves last.pt behind
    other = fit(*_loop(params, dataset), tmp_path / "ckpt", "run-b", cpu)
    assert other.resumed_from_epoch is None and len(other.history) == 3


def test_scratch_and_linear_probe(tiny: Tiny, tmp_path: Path) -> None:
    params, dataset, _ = tiny
    scratch = train(tiny, tmp_path / "s", _with(params, strategy="scratch"))
    info = read_json(tmp_path / "s" / "train.json")
    assert scratch.strategy == "scratch" and info["init"] == "random"
    probe_params = apply_overrides(
        params, {"train.strategy": "linear_probe", "train.linear_probe.epochs": 60}
    )
    run_step("extract_features", probe_params, {"dataset": dataset}, {"features": tmp_path / "f"})
    probe = train(tiny, tmp_path / "p", probe_params, features=tmp_path / "f")
    assert probe.epochs_run == 60
    assert read_json(tmp_path / "p" / "train.json")["init"].startswith("imagenet")
    with pytest.raises(ValueError, match="needs the extract_features output"):
        train(tiny, tmp_path / "q", probe_params)


def test_linear_probe_trains_the_head_only(tiny: Tiny, tmp_path: Path) -> None:
    params, dataset, _ = tiny
    probe_params = apply_overrides(
        params, {"train.strategy": "linear_probe", "train.linear_probe.epochs": 5}
    )
    run_step("extract_features", probe_params, {"dataset": dataset}, {"features": tmp_path / "f"})
    train(tiny, tmp_path / "p", probe_params, features=tmp_path / "f")
    before = create_model("timm:tf_efficientnet_lite0", ["cat", "dog", "fox"]).state_dict()
    after = torch.load(tmp_path / "p" / "model.pt", weights_only=True)["state_dict"]
    backbone = [k for k in before if k.startswith("backbone.") and before[k].is_floating_point()]
    assert all(torch.equal(before[k], after[k]) for k in backbone)
    assert not torch.equal(before["head.weight"], after["head.weight"])


def test_train_refuses_data_that_failed_validation(tiny: Tiny, tmp_path: Path) -> None:
    params, dataset, report = tiny
    failed = tmp_path / "failed"
    failed.mkdir()
    verdict = read_json(report / "validation.json") | {"passed": False}
    (failed / "validation.json").write_text(__import__("json").dumps(verdict))
    with pytest.raises(ValueError, match="failed validation"):
        run_step("train", params, {"dataset": dataset, "report": failed}, {"model": tmp_path / "m"})
    assert not (tmp_path / "m").exists()


def test_features_are_reused(tiny: Tiny, tmp_path: Path) -> None:
    params, dataset, _ = tiny

    def extract(p: Params, out: str) -> Any:
        """Run extract_features; what it wrote in ``features.json``, read as attributes."""
        run_step("extract_features", p, {"dataset": dataset}, {"features": tmp_path / out})
        # a cache hit is a fact of the run (step.json), not of the features
        facts = read_json(tmp_path / out / "step.json")
        return SimpleNamespace(**read_json(tmp_path / out / "features.json"), **facts)

    first, second = extract(params, "f1"), extract(params, "f2")
    assert not first.reused and second.reused and first.key == second.key
    assert first.num_features == 1280 and sum(first.counts.values()) == 42
    np.testing.assert_array_equal(
        np.load(tmp_path / "f1" / "train.npy"), np.load(tmp_path / "f2" / "train.npy")
    )
    other = params.model_copy(update={"model": params.model.model_copy(update={"image_size": 40})})
    assert not extract(other, "f3").reused


def test_gradual_unfreezing_and_class_weights(tiny: Tiny, tmp_path: Path) -> None:
    params = _with(tiny[0], unfreeze_milestones={1: 4, 2: None}, class_weights="balanced")
    assert train(tiny, tmp_path / "g", params).epochs_run == 3
    strategy = get_strategy(params.train)
    assert [strategy.trainable_stages(epoch) for epoch in range(3)] == [2, 4, None]


def test_a_new_strategy_with_its_own_module_needs_no_change_to_the_loop(
    tiny: Tiny, tmp_path: Path
) -> None:
    from torch import nn

    from tlops.data.tensors import normalize
    from tlops.training.strategies.finetune import FineTune

    class WithCritic(FineTune):  # the shape of a domain-adaptation strategy: an extra module
        name = "with_critic"

        def __init__(self, cfg: TrainConfig) -> None:
            super().__init__(cfg)
            self.extra["critic"] = nn.Linear(1280, 1)

        def loss(self, model: Any, batch: Any, generator: torch.Generator) -> torch.Tensor:
            x = normalize(batch[0], model.mean, model.std)
            critic = self.extra["critic"](model.features(x)).pow(2).mean()
            return super().loss(model, batch, generator) + 0.1 * critic

    params, dataset, _ = tiny
    _, model, data, cfg = _loop(params, dataset)
    with_critic = WithCritic(cfg)
    before = with_critic.extra["critic"].weight.detach().clone()
    fit(with_critic, model, data, cfg, tmp_path / "ckpt", "critic", torch.device("cpu"))
    assert not torch.equal(before, with_critic.extra["critic"].weight)  # optimised by the loop
    saved = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert "modules.critic.weight" in saved["state"]  # and checkpointed, so resume is exact


def test_the_numerics_choice_is_recorded_with_the_model(tiny: Tiny, tmp_path: Path) -> None:
    params, _, _ = tiny
    train(tiny, tmp_path / "p", _with(params, numerics="fp32+contiguous+eager"))
    # the choice and why: a fact of the run (step.json); what trained: the model's train.json
    choice = read_json(tmp_path / "p" / "step.json")["numerics_choice"]
    assert (choice["source"], choice["numerics"]) == ("pinned", "fp32+contiguous+eager")
    assert read_json(tmp_path / "p" / "train.json")["numerics"] == "fp32+contiguous+eager"
    train(tiny, tmp_path / "a")  # 3 epochs of 3 batches: not worth calibrating
    choice = read_json(tmp_path / "a" / "step.json")["numerics_choice"]
    assert choice["source"] == "default" and "too short" in choice["reason"]
    assert read_json(tmp_path / "a" / "train.json")["numerics"] == "fp32+channels_last+eager"


def test_linear_probe_l1_selects_features(tiny: Tiny, tmp_path: Path) -> None:
    params, dataset, _ = tiny
    l1_params = apply_overrides(
        params,
        {
            "train.strategy": "linear_probe",
            "train.linear_probe.epochs": 30,
            "train.linear_probe.l1": 0.01,
        },
    )
    run_step("extract_features", l1_params, {"dataset": dataset}, {"features": tmp_path / "f"})
    train(tiny, tmp_path / "p", l1_params, features=tmp_path / "f")
    weight = torch.load(tmp_path / "p" / "model.pt", weights_only=True)["state_dict"]["head.weight"]
    used = int((weight.abs().sum(0) > 0).sum())
    assert 0 < used < weight.shape[1] // 2  # exact zeros: most of the 1,280 features drop out
    rows = read_json(tmp_path / "p" / "history.json")
    assert rows[-1]["features_used"] <= rows[0]["features_used"] and rows[-1]["loss_l1"] > 0


def test_the_l1_proximal_step_soft_thresholds_the_head(params: Params) -> None:
    cfg = apply_overrides(
        params, {"train.strategy": "linear_probe", "train.linear_probe.l1": 2.0}
    ).train
    strategy = get_strategy(cfg)
    model = create_model("timm:tf_efficientnet_lite0", ["a", "b"], pretrained=False)
    weight = model.head.weight
    optimizer = torch.optim.AdamW([weight], lr=0.1, betas=(0.9, 0.99), eps=0.0)
    with torch.no_grad():
        weight.copy_(torch.tensor([[0.5, -0.05], [-0.3, 0.01]]).repeat(1, 640))
    # Adam's state after 2 steps with gradients of size 0.5 (v_hat = 0.25: sqrt 0.5)
    optimizer.state[weight] = {
        "step": torch.tensor(2.0),
        "exp_avg": torch.zeros_like(weight),
        "exp_avg_sq": torch.full_like(weight, 0.25 * (1 - 0.99**2)),
    }
    strategy.after_step(model, optimizer)  # threshold 0.1 x 2.0 / 0.5 = 0.4
    expected = torch.tensor([[0.1, 0.0], [0.0, 0.0]]).repeat(1, 640)
    torch.testing.assert_close(model.head.weight.detach(), expected)


def test_epochs_are_counted_from_one_in_every_record(tiny: Tiny, tmp_path: Path) -> None:
    first = train(tiny, tmp_path / "a")
    rows = read_json(tmp_path / "a" / "history.json")
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    best = max(rows, key=lambda row: row[tiny[0].train.early_stopping.metric])
    assert first.best_epoch == best["epoch"]  # the row it names, counted the same way
    csv_epochs = (tmp_path / "a" / "history.csv").read_text().splitlines()[1].split(",")
    assert csv_epochs[list(rows[0]).index("epoch")] == "1"


def test_an_early_stop_says_when_and_why() -> None:
    from tlops.training.loop import TrainOutcome

    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    history = [{"epoch": float(e)} for e in range(7)]
    outcome = TrainOutcome(history, 3, 0.9872, True, None, 30.0, 100.0, "fp32+channels_last+eager")
    metric, patience = params.train.early_stopping.metric, params.train.early_stopping.patience
    assert outcome.stop_reason(params.train) == (
        f"stopped early after epoch 7 of {params.train.epochs}: {metric} did not improve on "
        f"epoch 4's 0.9872 for 3 epochs (train.early_stopping.patience {patience})"
    )
    assert replace(outcome, stopped_early=False).stop_reason(params.train) is None
