"""Benchmark: tlops' training and inference speed against strong peers, side by side in one run.

Every runner gets the same model (architecture, initial weights, head), the same data (the UCI
digits train split, decoded once to uint8 tensors at the row's resolution), batch 64, the same
augmentation (tlops' per-sample affine warp), the same optimiser (AdamW) and trains every layer:

- **tlops (auto)**: ``fit`` with the numerics ``train.numerics: auto`` picks for a
  ``--run-epochs``-epoch run on the whole train split (calibrated once on this machine, then
  cached: its calibration seconds are printed; the timed runs, as every later run, pay nothing);
- **plain fp32**: a tuned 30-line PyTorch loop: channels-last model and batches, decoded
  tensors, ``zero_grad(set_to_none=True)``, fp32 (PyTorch's default numerics);
- **Lightning fp32**: PyTorch Lightning's ``Trainer`` (CPU or GPU accelerator,
  ``precision="32-true"``) on a ``LightningModule`` with the same channels-last model and a
  batch-sampling ``DataLoader`` over the decoded tensors;
- where the device computes bf16 natively (a CPU with AMX or AVX512-BF16, an Ampere+ GPU), each
  peer's own one-flag answer too: **plain bf16** (the same loop under ``torch.autocast(...,
  dtype=torch.bfloat16)``) and **Lightning bf16** (``precision="bf16-mixed"``), so the ratio
  measures tlops and not a flag; "best peer" is the fastest of them all;
- **tlops bf16 (pinned)**: ``train.numerics: bf16`` (channels-last, eager), in the same rounds:
  what a fixed "use bf16" rule gives on this machine.

Whether ``auto`` picks the fastest candidate or the noise of a short timing: each row also
calibrates ``--recalibrate`` more times from scratch (no cache) and prints every pick with the
candidates' step timings, beside the steady-state speeds of the runs.

Images/s are steady-state: the first epoch (warm-up: oneDNN primitive creation, allocator)
is not counted, nor is validation. Inference: the whole split in eval mode, batch 256, after a
warm-up pass. Also printed: the machine's 2048x2048 matmul GFLOP/s in fp32 and bf16.

    .venv/bin/python bench/train_speed.py [--images 256] [--epochs 2] [--rounds 5] \\
        [--recalibrate 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from machine import describe
from tlops.config import Params, TrainConfig, apply_overrides, load_params
from tlops.data.dataset import load_splits
from tlops.data.demo import write_demo
from tlops.data.tensors import Augment, SplitTensors, augment_batch, normalize
from tlops.models.device import bf16_units
from tlops.models.inference import inference_numerics, predict_logits
from tlops.models.init import create_model
from tlops.models.model import TransferModel
from tlops.models.numerics import CACHE_FILE
from tlops.runner.execute import execute
from tlops.runtime import resolve_device, seed_everything
from tlops.steps import spec_of
from tlops.training.calibration import training_numerics
from tlops.training.loop import fit
from tlops.training.strategies import TrainData, get_strategy

REPO = Path(__file__).resolve().parents[1]
CLASSES = [str(i) for i in range(10)]
MODELS = {"EfficientNet-Lite0": "timm:tf_efficientnet_lite0", "ResNet-18": "torchvision:resnet18"}
BATCH, EVAL_BATCH, LR = 64, 256, 1e-3


def make_model(spec: str) -> TransferModel:
    """The same initial weights for every runner (random init: speed does not depend on it)."""
    seed_everything(0)
    return create_model(spec, CLASSES, pretrained=False, dropout=0.2)


def matmul_gflops(dtype: torch.dtype, device: torch.device) -> float:
    a = torch.randn(2048, 2048, device=device).to(dtype)
    b = torch.randn(2048, 2048, device=device).to(dtype)
    for _ in range(3):
        a @ b
    runs = 10
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(runs):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * 2048**3 * runs / (time.perf_counter() - started) / 1e9


def steady(epoch_seconds: list[float], images: int) -> float:
    """Images/s over the epochs after the first."""
    timed = epoch_seconds[1:]
    return images * len(timed) / sum(timed)


def tlops_train(
    spec: str,
    cfg: TrainConfig,
    data: TrainData,
    device: torch.device,
    setting: str,
    work: Path,
    run_epochs: int,
) -> tuple[float, str, float]:
    strategy = get_strategy(cfg)
    model = make_model(spec)
    model.image_size = int(data.train.images.shape[-1]) if data.train is not None else None
    choice_cfg = cfg.model_copy(update={"epochs": run_epochs})
    choice = training_numerics(
        setting, get_strategy(choice_cfg), model, data, device, work / CACHE_FILE
    )
    ckpt = work / "ckpt" / f"{spec.replace(':', '_')}-{model.image_size}-{setting}"
    shutil.rmtree(ckpt, ignore_errors=True)  # never "resume" an earlier, finished run
    outcome = fit(strategy, model, data, cfg, ckpt, setting, device, None, choice.numerics)
    seconds = [row["epoch_seconds"] for row in outcome.history]
    return steady(seconds, len(data.train_labels())), choice.numerics.spec, choice.spent_seconds


def plain_train(
    spec: str, split: SplitTensors, epochs: int, device: torch.device, bf16: bool = False
) -> float:
    """The tuned plain loop a PyTorch user writes (``bf16``: under bf16 autocast)."""
    model = make_model(spec).to(device).to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    images, labels = torch.from_numpy(np.asarray(split.images)), torch.from_numpy(split.labels)
    aug, generator = Augment(10, (0.9, 1.1), 0.08), torch.Generator().manual_seed(0)
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        for idx in torch.randperm(len(labels), generator=generator).split(BATCH):
            x = augment_batch(
                normalize(images[idx].to(device), model.mean, model.std), aug, generator
            )
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(
                    model(x.contiguous(memory_format=torch.channels_last)),
                    labels[idx].to(device),
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return steady(seconds, len(labels))


def lightning_train(
    spec: str, split: SplitTensors, epochs: int, device: torch.device, bf16: bool = False
) -> float:
    """Lightning's Trainer (``bf16``: ``precision="bf16-mixed"``, else ``"32-true"``)."""
    import pytorch_lightning as pl

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = make_model(spec).to(memory_format=torch.channels_last)
            self.loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
            self.aug, self.generator = Augment(10, (0.9, 1.1), 0.08), torch.Generator()
            self.generator.manual_seed(0)

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            images, labels = batch
            x = normalize(images, self.model.mean, self.model.std)
            x = augment_batch(x, self.aug, self.generator)
            logits = self.model(x.contiguous(memory_format=torch.channels_last))
            loss: torch.Tensor = self.loss_fn(logits, labels)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=LR, weight_decay=1e-4)

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_train_epoch_start(self, *_: Any) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_end(self, *_: Any) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self.started)

    timer = Timer()
    images, labels = torch.from_numpy(np.asarray(split.images)), torch.from_numpy(split.labels)
    loader = torch.utils.data.DataLoader(
        _Batches(images, labels), batch_size=None, shuffle=False, num_workers=0
    )
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=epochs,
        precision="bf16-mixed" if bf16 else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(Module(), loader)
    return steady(timer.seconds, len(labels))


class _Batches(torch.utils.data.IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Shuffled whole batches of decoded tensors (no per-item collate: the tuned form)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels, self.epoch = images, labels, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.epoch += 1
        order = torch.randperm(
            len(self.labels), generator=torch.Generator().manual_seed(self.epoch)
        )
        for idx in order.split(BATCH):
            yield self.images[idx], self.labels[idx]


def timed_pass(run: Callable[[], Any], images: int) -> float:
    run()  # warm-up
    started = time.perf_counter()
    run()
    return images / (time.perf_counter() - started)


def tlops_infer(
    spec: str, split: SplitTensors, device: torch.device, work: Path
) -> tuple[float, str]:
    model = make_model(spec)
    # the choice auto makes for a pass over 100,000 images like these (cached after once)
    passes = max(1, 100_000 // len(split))
    choice = inference_numerics(
        "auto", model, [split] * passes, EVAL_BATCH, device, work / CACHE_FILE
    )
    speed = timed_pass(
        lambda: predict_logits(model, split, EVAL_BATCH, device, choice.numerics), len(split)
    )
    return speed, choice.numerics.spec


def plain_infer(spec: str, split: SplitTensors, device: torch.device, bf16: bool = False) -> float:
    model = make_model(spec).to(device).to(memory_format=torch.channels_last).eval()
    images = torch.from_numpy(np.asarray(split.images))

    @torch.no_grad()
    def run() -> None:
        for batch in images.split(EVAL_BATCH):
            x = normalize(batch.to(device), model.mean, model.std)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model(x.contiguous(memory_format=torch.channels_last))
            out.float().cpu()

    return timed_pass(run, len(split))


def lightning_infer(
    spec: str, split: SplitTensors, device: torch.device, bf16: bool = False
) -> float:
    import pytorch_lightning as pl

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = make_model(spec).to(memory_format=torch.channels_last)

        def predict_step(self, batch: Any, _: int) -> torch.Tensor:
            x = normalize(batch, self.model.mean, self.model.std)
            out: torch.Tensor = self.model(x.contiguous(memory_format=torch.channels_last))
            return out.float().cpu()

    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if bf16 else "32-true",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = Module()
    images = torch.from_numpy(np.asarray(split.images))
    loader = torch.utils.data.DataLoader(list(images.split(EVAL_BATCH)), batch_size=None)
    return timed_pass(lambda: trainer.predict(module, loader), len(split))


def interleaved(
    runners: dict[str, Callable[[], float]], rounds: int
) -> dict[str, tuple[float, float, float]]:
    """(median, min, max) images/s of each runner over ``rounds`` rounds, order rotated.

    This shared machine's speed drifts between minutes: interleaving gives every runner the same
    share of slow and fast moments, and min/max show the spread.
    """
    names = list(runners)
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            results[name].append(runners[name]())
    return {name: (statistics.median(v), min(v), max(v)) for name, v in results.items()}


def row(
    name: str,
    size: int,
    params: Params,
    device: torch.device,
    work: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    spec = MODELS[name]
    sized = apply_overrides(params, {"model.image_size": size})
    splits = load_splits(sized, work / "ingest", CLASSES, ("train",))
    full = splits["train"]
    n = min(args.images, len(full))
    train_split = SplitTensors(np.asarray(full.images[:n]), full.labels[:n], full.paths[:n])
    empty = SplitTensors(train_split.images[:0], train_split.labels[:0], [])
    data = TrainData(CLASSES, train_split, empty)  # validation is not training throughput
    cfg = sized.train.model_copy(
        update={
            "strategy": "scratch",  # every layer trains, at one learning rate, as in the peers
            "epochs": args.epochs,
            "batch_size": BATCH,
            "lr": LR,
            "warmup_epochs": 0.0,
            "early_stopping": sized.train.early_stopping.model_copy(update={"patience": 99}),
        }
    )
    result: dict[str, Any] = {"model": name, "size": size}
    # the first auto run on this machine calibrates and caches; the timed rounds reuse the cache
    model = make_model(spec)
    model.image_size = size
    long_run = cfg.model_copy(update={"epochs": args.run_epochs})
    whole = TrainData(CLASSES, full, SplitTensors(full.images[:0], full.labels[:0], []))
    calibrated = training_numerics(
        "auto", get_strategy(long_run), model, whole, device, work / CACHE_FILE
    )
    result["choice"] = calibrated.numerics.spec
    result["calibration_s"] = calibrated.spent_seconds
    result["calibration"] = calibrated.as_dict()
    native_bf16 = bf16_units(device)
    train: dict[str, Callable[[], float]] = {
        "tlops (auto)": lambda: tlops_train(spec, cfg, data, device, "auto", work, args.run_epochs)[
            0
        ],
        "plain fp32": lambda: plain_train(spec, train_split, args.epochs, device),
        "Lightning fp32": lambda: lightning_train(spec, train_split, args.epochs, device),
    }
    if native_bf16:
        train["plain bf16"] = lambda: plain_train(spec, train_split, args.epochs, device, True)
        train["Lightning bf16"] = lambda: lightning_train(
            spec, train_split, args.epochs, device, True
        )
    if not args.no_bf16:
        train["tlops bf16 (pinned)"] = lambda: tlops_train(
            spec, cfg, data, device, "bf16", work, args.run_epochs
        )[0]
    result["train"] = interleaved(train, args.rounds)
    # the same calibration again from scratch: does it pick the same, and the fastest?
    result["recalibrations"] = [
        training_numerics("auto", get_strategy(long_run), model, whole, device, None)
        for _ in range(args.recalibrate)
    ]
    infer_choice: list[str] = []

    def infer_tlops() -> float:
        speed, choice = tlops_infer(spec, full, device, work)
        infer_choice.append(choice)
        return speed

    infer: dict[str, Callable[[], float]] = {
        "tlops (auto)": infer_tlops,
        "plain fp32": lambda: plain_infer(spec, full, device),
        "Lightning fp32": lambda: lightning_infer(spec, full, device),
    }
    if native_bf16:
        infer["plain bf16"] = lambda: plain_infer(spec, full, device, True)
        infer["Lightning bf16"] = lambda: lightning_infer(spec, full, device, True)
    result["infer"] = interleaved(infer, args.rounds)
    result["infer_choice"] = infer_choice[0]
    result["infer_images"] = len(full)
    result["train_images"] = n
    return result


def spread(stats: tuple[float, float, float]) -> str:
    median, low, high = stats
    return f"{median:.1f} ({low:.0f}-{high:.0f})"


def report(rows: list[dict[str, Any]], device: torch.device, args: argparse.Namespace) -> None:
    print(f"machine: {describe()}")
    print(
        f"device: {device}; bf16 units: {bf16_units(device)}; matmul 2048x2048: "
        f"fp32 {matmul_gflops(torch.float32, device):.0f} GFLOP/s, "
        f"bf16 {matmul_gflops(torch.bfloat16, device):.0f} GFLOP/s\n"
    )
    peers = [k for k in rows[0]["train"] if not k.startswith("tlops")]
    pinned = "tlops bf16 (pinned)" in rows[0]["train"]
    print(
        "| model | px | tlops (auto) train img/s, median (min-max) | "
        + " | ".join(peers)
        + " | tlops / best peer"
        + (" | tlops bf16 (pinned)" if pinned else "")
        + " | auto's choice (calibration s) | inference img/s tlops / "
        + " / ".join(peers)
        + " | tlops / best peer |"
    )
    print("|---" * (len(peers) + 6 + pinned) + "|")
    for r in rows:
        t = {k: v[0] for k, v in r["train"].items()}
        i = {k: v[0] for k, v in r["infer"].items()}
        best_t = max(t[k] for k in peers)
        best_i = max(i[k] for k in peers)
        print(
            f"| {r['model']} | {r['size']} | {spread(r['train']['tlops (auto)'])} | "
            + " | ".join(spread(r["train"][k]) for k in peers)
            + f" | **{t['tlops (auto)'] / best_t:.2f}x**"
            + (f" | {spread(r['train']['tlops bf16 (pinned)'])}" if pinned else "")
            + f" | {r['choice']} ({r['calibration_s']:.1f}) "
            + f"| {i['tlops (auto)']:.0f} / "
            + " / ".join(f"{i[k]:.0f}" for k in peers)
            + f" | **{i['tlops (auto)'] / best_i:.2f}x** |"
        )
    print("\nauto's calibration, then each fresh recalibration: pick, and ms per step timed")
    for r in rows:
        for index, calibration in enumerate([r["calibration"], *r["recalibrations"]]):
            entry = calibration if isinstance(calibration, dict) else calibration.as_dict()
            timings = ", ".join(
                f"{spec} {1000 * seconds:.0f}" for spec, seconds in entry["timings"].items()
            )
            print(
                f"- {r['model']} {r['size']} px, {'first' if index == 0 else f'again {index}'}: "
                f"{entry['numerics']} ({timings})"
            )
    r0 = rows[0]
    print(
        f"\n{r0['train_images']} training images, batch {BATCH}, {args.epochs} epochs per runner "
        f"(the first not timed); inference over {r0['infer_images']} images, batch {EVAL_BATCH}; "
        f"auto calibrated for a {args.run_epochs}-epoch run"
    )


def main() -> None:
    args = _args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = load_params(REPO / "params.yaml", {"extract_features.cache_dir": str(work)})
        write_demo(work / "source", work / "target")
        with_data = apply_overrides(params, {"data.target": str(work / "target")})
        execute(
            spec_of("ingest_data"),
            with_data,
            {},
            {"dataset": work / "ingest"},
            {"domain": "target"},
        )
        device = resolve_device(args.device)
        rows = []
        for name in args.models:
            for size in args.sizes:
                rows.append(row(name, size, params, device, work, args))
                print(f"done: {name} {size} px: {rows[-1]['train']}", flush=True)
    print()
    report(rows, device, args)
    for r in rows:
        print(f"calibration {r['model']} {r['size']} px: {r['calibration']}")


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=256, help="training images per row")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per runner (first: warm-up)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--run-epochs", type=int, default=30, help="run length auto calibrates for")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-bf16", action="store_true", help="skip the pinned-bf16 column")
    parser.add_argument(
        "--recalibrate", type=int, default=3, help="fresh calibrations per row (no cache)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    main()
