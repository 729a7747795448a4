"""``bf16-frozen``: bf16 autocast in the frozen stages, fp32 in the stages that train.

Why, measured (bench/numerics_trace.py, bench/numerics_accuracy.py): on a CPU, bf16 through the
stages that train is the slow part (the backward of EfficientNet-Lite0's depthwise
convolutions runs slower in bf16 than in fp32: 50 s a demo run against fp32's 35 s), while
the frozen lower stages, forward only and at the highest resolution, are where bf16 pays. So
this mode is the fastest on the demo (29 s) and held fp32's test accuracy over 5 seeds. It
does not make a training step closer to fp32's: in EfficientNet-Lite0 the top stages' train-mode
batch-norm (batch statistics over 2x2 px at 64 px input) amplifies any difference in their input
about a hundredfold, a frozen stage's bf16 rounding as much as a change of memory layout, so
the per-seed spread of test accuracy is the same size in every mode (fp32 in another layout
included).

A stage module runs in fp32 when it trains (train mode, with parameters that take gradients);
otherwise it runs under the ambient autocast. Hooks on the stage modules switch autocast off
for the module's forward and back on after it; the flag that arms them is a module attribute,
so deep copies (the calibration's) carry it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tlops.models.model import TransferModel

_ARMED = "_tlops_fp32_when_training"
_RESTORE = "_tlops_restore_autocast"


def _trains(module: nn.Module) -> bool:
    return module.training and any(p.requires_grad for p in module.parameters())


def _before(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    if not getattr(module, _ARMED, False) or not args or not isinstance(args[0], torch.Tensor):
        return None
    device = args[0].device.type
    if not torch.is_autocast_enabled(device) or not _trains(module):
        return None
    torch.set_autocast_enabled(device, False)
    setattr(module, _RESTORE, device)
    return tuple(
        a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
    )


def _after(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
    device = getattr(module, _RESTORE, None)
    if device is not None:
        torch.set_autocast_enabled(device, True)
        setattr(module, _RESTORE, None)


def fp32_where_training(model: TransferModel, armed: bool) -> None:
    """Arm (or disarm) fp32 in the stages that train, installing the hooks the first time.

    A stage prefix that names a parameter rather than a module (a ViT's ``pos_embed``) has
    nothing to hook and is left alone.
    """
    for stage in model.stages:
        for prefix in stage:
            try:
                module = model.backbone.get_submodule(prefix.rstrip("."))
            except AttributeError:
                continue
            if not hasattr(module, _ARMED):
                module.register_forward_pre_hook(_before)
                module.register_forward_hook(_after)
            setattr(module, _ARMED, armed)
