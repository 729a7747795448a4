"""Features cached per image content hash: a check with nothing new loads no model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tests.helpers import repo_params, save_image
from tlops.models.embed import embed_images
from tlops.models.init import create_model
from tlops.models.model import TransferModel


def test_only_unseen_images_are_embedded(tmp_path: Path) -> None:
    files = [save_image(tmp_path / f"{i}.png", seed=i) for i in range(5)]
    pairs = [(f"sha{i}", path) for i, path in enumerate(files)]
    calls: list[int] = []

    def load() -> TransferModel:
        calls.append(1)
        torch.manual_seed(0)
        model = create_model("torchvision:resnet18", ["a", "b"], pretrained=False)
        model.image_size = 32
        return model

    cache = tmp_path / "cache" / "m.npz"
    cpu = torch.device("cpu")
    first, embedded = embed_images(load, pairs[:3], repo_params().image, cache, 4, cpu)
    assert embedded == 3 and first.shape == (3, 512) and len(calls) == 1
    again, embedded = embed_images(load, pairs[:3], repo_params().image, cache, 4, cpu)
    assert embedded == 0 and len(calls) == 1  # all cached: the model is not even loaded
    assert np.array_equal(first, again)
    more, embedded = embed_images(load, list(reversed(pairs)), repo_params().image, cache, 4, cpu)
    assert embedded == 2 and len(calls) == 2  # the two new ones
    assert np.array_equal(more[::-1][:3], first)  # same features, in the order asked
    cache.write_bytes(b"torn")  # a damaged cache is a miss, not a failure
    _, embedded = embed_images(load, pairs, repo_params().image, cache, 4, cpu)
    assert embedded == 5
