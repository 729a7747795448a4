"""Benchmark: training throughput of tlops' loop against a plain reference loop, in one run.

Same model (ImageNet EfficientNet-Lite0), data (the UCI digits train split), resolution, batch
size and augmentation strength. The reference is the textbook loop: a Dataset that opens, decodes
and transforms the PNG with PIL + torchvision on every step, a DataLoader, and every layer in the
autograd graph. tlops' loop decodes once into a uint8 memmap, augments whole batches with one
affine warp, and (fine-tuning with a frozen lower half) keeps the frozen stages out of the graph.

Feature extraction throughput is reported as achieved GFLOP/s against this machine's measured
float32 matmul GFLOP/s.

    .venv/bin/python bench/throughput.py [--epochs 2] [--image-size 64] [--batch 64]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from machine import describe
from tlops.config import Params, apply_overrides, load_params
from tlops.data.dataset import load_splits
from tlops.data.demo import write_demo
from tlops.data.tensors import SplitTensors
from tlops.models.inference import pooled_features
from tlops.models.init import create_model
from tlops.runtime import seed_everything
from tlops.steps.execute import execute
from tlops.train.loop import fit
from tlops.train.strategies import TrainData, get_strategy

REPO = Path(__file__).resolve().parents[1]
CLASSES = [str(i) for i in range(10)]
LITE0 = "timm:tf_efficientnet_lite0"


class PngDataset(Dataset[tuple[torch.Tensor, int]]):
    """Decode + transform with PIL/torchvision on every access (the reference)."""

    def __init__(self, root: Path, split: SplitTensors, size: int) -> None:
        self.files = [root / p for p in split.paths]
        self.labels = split.labels.tolist()
        self.transform = transforms.Compose(
            [
                transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(size),
                transforms.RandomAffine(10, translate=(0.08, 0.08), scale=(0.9, 1.1)),
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            ]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[i]) as image:
            return self.transform(image.convert("RGB")), self.labels[i]


def ingest(params: Params, data: Path, out: Path) -> None:
    """ingest_data of ``data`` into ``out``, as every runner calls it."""
    with_data = apply_overrides(params, {"data.target": str(data)})
    execute("ingest_data", with_data, {}, {"dataset": out}, {"domain": "target"})


def reference_loop(root: Path, split: SplitTensors, size: int, batch: int, epochs: int) -> float:
    seed_everything(0)
    model = create_model(LITE0, CLASSES, pretrained=True, dropout=0.2)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    loader = DataLoader(
        PngDataset(root, split, size), batch_size=batch, shuffle=True, num_workers=0
    )
    seen, started = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
    return seen / (time.perf_counter() - started)


def tlops_loop(
    params: object,
    train: SplitTensors,
    val: SplitTensors,
    stages: int | None,
    epochs: int,
    batch: int,
    ckpt: Path,
) -> float:
    cfg = params.train.model_copy(
        update={  # type: ignore[attr-defined]
            "strategy": "finetune",
            "epochs": epochs,
            "batch_size": batch,
            "trainable_stages": stages,
            "backbone_lr_mult": 1.0,
        }
    )
    seed_everything(0)
    model = create_model(LITE0, CLASSES, pretrained=True, dropout=0.2)
    # validation is not training throughput: an empty val split keeps it out of the measurement
    empty = SplitTensors(val.images[:0], val.labels[:0], [])
    data = TrainData(CLASSES, train, empty)
    outcome = fit(get_strategy(cfg), model, data, cfg, ckpt, f"bench-{stages}", torch.device("cpu"))
    return outcome.train_images_per_s


def matmul_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    runs, started = 10, time.perf_counter()
    for _ in range(runs):
        a @ b
    return 2 * 2048**3 * runs / (time.perf_counter() - started) / 1e9


def extraction(split: SplitTensors, batch: int) -> tuple[float, float]:
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(LITE0, CLASSES, pretrained=True).eval()
    size = split.images.shape[-1]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.features(torch.zeros(1, 3, size, size))
    flops_per_image = counter.get_total_flops()
    pooled_features(model, split, batch, torch.device("cpu"))  # warm up
    started = time.perf_counter()
    pooled_features(model, split, batch, torch.device("cpu"))
    per_s = len(split) / (time.perf_counter() - started)
    return per_s, per_s * flops_per_image / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = load_params(
            REPO / "params.yaml",
            {"model.image_size": args.image_size, "extract_features.cache_dir": str(work)},
        )
        write_demo(work / "source", work / "target")
        ingest(params, work / "target", work / "ingest")
        splits = load_splits(params, work / "ingest", CLASSES, ("train", "val"))
        train, val = splits["train"], splits["val"]
        n_stages = len(create_model(LITE0, CLASSES, pretrained=False).stages)
        half = math.ceil(n_stages / 2)
        reference = reference_loop(
            work / "ingest" / "images", train, args.image_size, args.batch, args.epochs
        )
        full = tlops_loop(params, train, val, None, args.epochs, args.batch, work / "c1")
        frozen = tlops_loop(params, train, val, half, args.epochs, args.batch, work / "c2")
        peak = matmul_gflops()
        per_s, achieved = extraction(train, 256)
    print(f"machine: {describe()}")
    print(
        f"{len(train)} training images at {args.image_size}x{args.image_size}, batch "
        f"{args.batch}, {args.epochs} epochs per variant, EfficientNet-Lite0 "
        f"({n_stages} stages)\n"
    )
    print("| loop | images/s | ratio to reference |")
    print("|---|---|---|")
    print(
        f"| reference: PIL decode + transforms per step, all layers in the graph | "
        f"{reference:.1f} | 1.00x |"
    )
    print(f"| tlops finetune, all layers trained | {full:.1f} | {full / reference:.2f}x |")
    print(
        f"| tlops finetune, lower {n_stages - half} of {n_stages} stages frozen | "
        f"{frozen:.1f} | {frozen / reference:.2f}x |"
    )
    print(
        f"\nfeature extraction: {per_s:.0f} images/s = {achieved:.1f} GFLOP/s; "
        f"float32 matmul 2048x2048: {peak:.1f} GFLOP/s; "
        f"extraction reaches {100 * achieved / peak:.1f}% of matmul throughput"
    )


if __name__ == "__main__":
    main()
