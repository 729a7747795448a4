"""Benchmark: data-parallel ``train``, 1 against 2 processes here, and the gradient all-reduce.

1. ``tlops step train`` (finetune, EfficientNet-Lite0, the demo target's UCI digits at 64 px,
   global batch 64, 2 epochs) in one process (the baseline: the library's own trainer), then
   under torchrun with 2 processes (``train.distributed.procs_per_node=2``, gloo): training
   images/s as the train step's ``step.json`` records it (epoch time only, so process
   start-up is not counted).
   The machine's cores are shared: one process gets all of them as threads, two get half each.
   Both use ``train.distributed.batchnorm: frozen``, so they train the same model.
2. The all-reduce alone: 2 gloo processes all-reduce a float32 buffer the size of the trainable
   gradients (the model's parameters that train at ``train.trainable_stages``), and one 1/16 of
   it, to fit this transport's latency a and time per byte b (median of 20 after 3 warm-ups).
3. From those: the ring all-reduce model t(N) = 2 (N - 1) a + 2 (N - 1) / N x S x b, and the
   scaling efficiency E(N) = c / (c + t(N)) for N processes, with c the measured compute time of
   one step of one process (its share of the global batch) and no overlap of the all-reduce
   with the backward pass (DDP overlaps its buckets: this is the worst case).

    .venv/bin/python bench/distributed.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from machine import describe

REPO = Path(__file__).resolve().parents[1]
SIZES = (8, 32)


def _allreduce_worker(rank: int, world: int, port: int, numels: list[int], out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    for numel in numels:
        buffer = torch.ones(numel)
        for _ in range(3):
            dist.all_reduce(buffer)
        times = []
        for _ in range(20):
            dist.barrier()
            started = time.perf_counter()
            dist.all_reduce(buffer)
            times.append(time.perf_counter() - started)
        results[numel] = statistics.median(times)
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


def allreduce_seconds(numels: list[int]) -> dict[int, float]:
    """Median seconds of one gloo all-reduce of ``numel`` floats between 2 processes."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        mp.spawn(_allreduce_worker, args=(2, port, numels, out.name), nprocs=2, join=True)
        return {int(k): float(v) for k, v in json.loads(Path(out.name).read_text()).items()}


def trainable_numel(params: Any) -> int:
    """Parameters that train at ``train.trainable_stages`` (what DDP all-reduces)."""
    from tlops.models.init import create_model

    model = create_model(params.model.backbone, [str(i) for i in range(10)], pretrained=False)
    model.freeze(params.train.trainable_stages)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def prepare(root: Path, params_file: Path) -> tuple[Any, dict[str, Path]]:
    """The demo target, ingested and validated, and the params of the runs."""
    import yaml

    from tlops.config import apply_overrides, load_params
    from tlops.data.demo import write_demo
    from tlops.runner.execute import execute
    from tlops.steps import spec_of

    write_demo(root / "source", root / "target", drops=3)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update({"epochs": 2, "batch_size": 64, "numerics": "fp32+channels_last+eager"})
    raw["train"]["early_stopping"]["patience"] = 10
    # both variants train the same model: batch-norm on its running statistics (what 2 gloo
    # processes use by default), so only dropout's masks differ between them
    raw["train"]["distributed"]["batchnorm"] = "frozen"
    raw["extract_features"]["cache_dir"] = str(root / "cache")
    raw["tracking"]["tracking_uri"] = f"sqlite:///{root / 'mlflow.db'}"
    raw["tracking"]["artifact_location"] = str(root / "mlartifacts")
    params_file.write_text(yaml.safe_dump(raw))
    params = apply_overrides(load_params(params_file), {"data.target": str(root / "target")})
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    dataset, report = root / "ingest", root / "report"
    execute(spec_of("ingest_data"), params, {}, {"dataset": dataset}, {"domain": "target"})
    execute(spec_of("validate_data"), params, {"dataset": dataset}, {"report": report})
    return params, {"dataset": dataset, "report": report}


def train(params_file: Path, inputs: dict[str, Path], out: Path, procs: int) -> dict[str, Any]:
    command = [
        str(Path(sys.executable).parent / "tlops"), "step", "train", "--params", str(params_file),
        "-S", f"train.distributed.procs_per_node={procs}",
        "--dataset", str(inputs["dataset"]), "--report", str(inputs["report"]),
        "--model", str(out), "--checkpoint-root", str(out.parent / f"ckpt-{procs}"),
    ]  # fmt: skip
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # each variant gets the machine's default threading
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    summary: dict[str, Any] = json.loads((out / "train.json").read_text())
    history = json.loads((out / "history.json").read_text())
    facts = json.loads((out / "step.json").read_text())  # the run's times and speed
    summary["train_images_per_s"] = facts["train_images_per_s"]
    summary["wall_s"] = time.perf_counter() - started
    summary["epoch_s"] = facts["epoch_seconds"]
    summary["val_accuracy"] = history[-1]["val_accuracy"]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    print(f"machine: {describe()} ({time.strftime('%Y-%m-%d')})")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        params, inputs = prepare(root, root / "params.yaml")
        runs = {n: train(root / "params.yaml", inputs, root / f"model-{n}", n) for n in (1, 2)}
        numel = trainable_numel(params)
    print(
        f"\ntrain: finetune, {params.model.backbone}, {params.model.image_size} px, global batch "
        f"{params.train.batch_size}, {runs[1]['labeled_images']} training images, 2 epochs"
    )
    print(
        "\n| processes | images/s | epoch seconds | wall seconds (with start-up) | val accuracy |"
    )
    print("|---|---|---|---|---|")
    for n, run in runs.items():
        epochs = ", ".join(f"{s:.1f}" for s in run["epoch_s"])
        print(
            f"| {n} | {run['train_images_per_s']:.1f} | {epochs} | {run['wall_s']:.1f} | "
            f"{run['val_accuracy']:.4f} |"
        )
    speedup = runs[2]["train_images_per_s"] / runs[1]["train_images_per_s"]
    print(f"\n2 processes / 1: {speedup:.2f}x images/s")

    size = numel * 4
    measured = allreduce_seconds([numel, max(1, numel // 16)])
    small, large = measured[max(1, numel // 16)], measured[numel]
    # two points of t = a + S' b with S' = 2 (N-1)/N x S bytes (N = 2: S' = S)
    per_byte = (large - small) / (size - size / 16)
    latency = max(0.0, (large - size * per_byte) / 2)
    steps = runs[2]["labeled_images"] / params.train.batch_size
    step_s = statistics.median(runs[2]["epoch_s"]) / steps
    compute = max(1e-9, step_s - large)  # one process's step without its all-reduce
    print(
        f"\nall-reduce of the trainable gradients: {numel / 1e6:.2f} M floats "
        f"({size / 1e6:.1f} MB): {1000 * large:.1f} ms (gloo, 2 processes, loopback); "
        f"1/16 of it: {1000 * small:.2f} ms"
    )
    print(
        f"fitted: latency a = {1e6 * latency:.0f} us, {size / large / 1e9:.2f} GB/s algorithm "
        f"bandwidth; a step of one of 2 processes: {1000 * step_s:.0f} ms, of which "
        f"{100 * large / step_s:.1f} % is the all-reduce"
    )
    per_process = params.train.batch_size // 2
    print(
        f"\nexpected efficiency for N processes, each with a batch of {per_process} (the global"
        f" batch, train.batch_size, {per_process} N) and this transport:"
    )
    print("\n| processes N | ring all-reduce t(N), ms | efficiency c / (c + t(N)) |")
    print("|---|---|---|")
    for n in (2, *SIZES):
        t = 2 * (n - 1) * latency + 2 * (n - 1) / n * size * per_byte
        print(f"| {n} | {1000 * t:.1f} | {compute / (compute + t):.3f} |")
    if args.out:
        args.out.write_text(json.dumps({"runs": runs, "allreduce_s": measured, "numel": numel}))


if __name__ == "__main__":
    main()
