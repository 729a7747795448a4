"""Where does bf16 enter a training step? A measurement per part, against the same step in fp32.

One batch of the demo's target images, the model and strategy as ``train`` builds them, the
step as the training loop runs it (``strategy.loss`` under the run's autocast, backward, one
AdamW step), pinned to fp32, to bf16 and to bf16-frozen (bf16 in the frozen stages, fp32 in
the ones that train), from the same weights and the same draws. For each part a bf16 run could
lose precision in, the table gives the dtype each run computed it in and its error against
fp32:

* the augmentation (the random affine warp: its sampling grid and warped images);
* the logits and the loss;
* the gradients (cosine similarity with fp32's) and the optimiser's state and master weights;
* batch-norm's running statistics after the step;
* the validation logits early stopping and checkpoint selection read, and how many val
  predictions would differ were they computed in bf16 (the same weights).

    .venv/bin/python bench/numerics_trace.py [--models EfficientNet-Lite0 ResNet-18]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from machine import describe
from numerics_accuracy import CLASSES, MODELS, REPO, _data
from tlops.config import load_params
from tlops.data import tensors
from tlops.models.inference import predict_logits
from tlops.models.init import create_model
from tlops.models.mixed import fp32_where_training
from tlops.models.numerics import Numerics
from tlops.training.engine import adamw
from tlops.training.strategies import get_strategy


def _step(
    model: nn.Module, strategy: Any, batch: Any, numerics: Numerics, data: Any
) -> dict[str, Any]:
    """One training step as the loop runs it; what it computed, for comparison."""
    cpu = torch.device("cpu")
    strategy.numerics = numerics
    model.to(memory_format=numerics.memory_format).train()
    model.freeze(strategy.trainable_stages(0))
    captured: dict[str, Any] = {}
    warp, grid_of = tensors.augment_batch, F.affine_grid

    def spy(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        captured["warped"] = out = warp(x, *args, **kwargs)
        return out

    def grid_spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        grid: torch.Tensor = grid_of(*args, **kwargs)
        captured["grid_dtype"] = grid.dtype
        return grid

    def logits_hook(_: nn.Module, __: Any, out: torch.Tensor) -> None:
        captured.setdefault("logits", out)
        captured["last_head_dtype"] = out.dtype

    handle = model.head.register_forward_hook(logits_hook)
    tensors.augment_batch, F.affine_grid = spy, grid_spy
    try:
        with numerics.autocast(cpu):
            loss = strategy.loss(model, batch, torch.Generator().manual_seed(1))
        optimizer = adamw(strategy.param_groups(model), 0.003, 1e-4, cpu)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        optimizer.step()
        state = [s for s in optimizer.state.values() if "exp_avg" in s]
        bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.training]
        model.eval()
        val_logits, _ = strategy.val_logits(model, data, cpu)
    finally:
        tensors.augment_batch, F.affine_grid = warp, grid_of
        handle.remove()
    return {
        "model": model,
        "val_dtype": captured["last_head_dtype"],
        **captured,
        "loss": loss,
        "grads": torch.cat([g.flatten().float() for g in grads]),
        "grad_dtypes": {str(g.dtype) for g in grads},
        "state_dtype": str(state[0]["exp_avg"].dtype) if state else "-",
        "param_dtypes": {str(p.dtype) for p in model.parameters()},
        "running_var": torch.cat([m.running_var.flatten() for m in bn]) if bn else None,
        "running_dtype": str(bn[0].running_var.dtype) if bn else "-",
        "val_logits": val_logits,
    }


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


REDUCED = ("bf16", "bf16-frozen")
# the runs against fp32: the two reduced precisions, and fp32 in the other memory layout (the
# same arithmetic summed in another order: what an ulp-sized difference grows to)
OTHERS = {**{p: Numerics(p) for p in REDUCED}, "control": Numerics("fp32", channels_last=False)}


def _dtypes(out: dict[str, Any], key: Callable[[dict[str, Any]], Any]) -> list[str]:
    return [str(key(out[p])).replace("torch.", "") for p in ("fp32", *REDUCED)]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    # in float64: float32's sums over millions of gradient entries drift past 1.0
    return float(F.cosine_similarity(a.double(), b.double(), 0))


def trace(name: str, params: Any, data: Any) -> list[list[str]]:
    """The table's rows: part, its dtype in each run, each reduced run against fp32."""
    backbone, strategy_name = MODELS[name]
    cfg = params.train.model_copy(update={"strategy": strategy_name})
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    base = create_model(
        backbone, CLASSES, pretrained=strategy_name != "scratch", dropout=params.model.dropout
    )
    probe = get_strategy(cfg)
    probe.prepare(base, data, cpu)
    batch = next(iter(probe.batches(data, torch.Generator().manual_seed(0), cpu)))
    out = {}
    for run, numerics in {"fp32": Numerics("fp32"), **OTHERS}.items():
        strategy = get_strategy(cfg)
        model = copy.deepcopy(base)
        strategy.prepare(model, data, cpu)
        fp32_where_training(model, run == "bf16-frozen")
        torch.manual_seed(2)  # the same dropout masks in every run
        out[run] = _step(model, strategy, batch, numerics, data)
    f = out["fp32"]
    same = {
        p: predict_logits(f["model"], data.val, 256, cpu, Numerics(p)) for p in ("fp32", "bf16")
    }
    flips = int((same["bf16"].argmax(1) != same["fp32"].argmax(1)).sum())
    rows = [
        ["augmentation grid", *_dtypes(out, lambda o: o["grid_dtype"]), "-", "-", "-"],
        [
            "augmented images",
            *_dtypes(out, lambda o: o["warped"].dtype),
            *(f"max abs diff {float((out[p]['warped'] - f['warped']).abs().max()):.2e}"
              for p in OTHERS),
        ],
        [
            "training logits (train mode)",
            *_dtypes(out, lambda o: o["logits"].dtype),
            *(f"rel. error {_rel(out[p]['logits'], f['logits']):.2e}" for p in OTHERS),
        ],
        [
            "loss",
            *_dtypes(out, lambda o: o["loss"].dtype),
            *(f"{float(out[p]['loss'].detach()):.5f} vs {float(f['loss'].detach()):.5f}"
              for p in OTHERS),
        ],
        [
            "gradients",
            *_dtypes(out, lambda o: "/".join(sorted(o["grad_dtypes"]))),
            *(f"cosine with fp32 {_cosine(out[p]['grads'], f['grads']):.4f}" for p in OTHERS),
        ],
        [
            "master weights / AdamW state",
            *_dtypes(out, lambda o: f"{'/'.join(sorted(o['param_dtypes']))} / {o['state_dtype']}"),
            "-",
            "-",
            "-",
        ],
    ]  # fmt: skip
    if f["running_var"] is not None:
        rows.append(
            [
                "batch-norm running var",
                *_dtypes(out, lambda o: o["running_dtype"]),
                *(f"rel. error {_rel(out[p]['running_var'], f['running_var']):.2e}"
                  for p in OTHERS),
            ]
        )  # fmt: skip
    rows.append(
        [
            "validation logits (early stopping, best epoch)",
            *_dtypes(out, lambda o: o["val_dtype"]),
            f"in bf16 instead, same weights: {flips} of {len(same['fp32'])} val predictions "
            f"differ (rel. error {_rel(same['bf16'], same['fp32']):.2e})",
            "-",
            "-",
        ]
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = load_params(REPO / "params.yaml", {"extract_features.cache_dir": str(work)})
        data, _ = _data(params, work)
        print(f"machine: {describe()}")
        for name in args.models:
            print(f"\n### {name}: one training step in each precision, against fp32\n")
            print(
                "| part | fp32 run computes in | bf16 | bf16-frozen | bf16 against fp32 "
                "| bf16-frozen against fp32 | control: fp32, contiguous layout, against fp32 |"
            )
            print("|---|---|---|---|---|---|---|")
            for row in trace(name, params, data):
                print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
