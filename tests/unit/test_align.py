"""Label-free input alignment: framing, resolution and contrast, per image."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.helpers import changed, repo_params
from tlops.config import AlignConfig
from tlops.data.align import align_image, content_box
from tlops.data.tensors import cache_key, model_input


def _digit(
    frame: int, box: tuple[int, int, int, int], ink: int = 200, ground: int = 0
) -> Image.Image:
    pixels = np.full((frame, frame), ground, dtype=np.uint8)
    left, top, right, bottom = box
    pixels[top:bottom, left:right] = ink
    return Image.fromarray(pixels, mode="L")


def _align(**parts: object) -> AlignConfig:
    """params.yaml's ``model.align`` (every part off) with ``parts`` turned on."""
    return changed(repo_params().model.align, **parts)


def test_the_content_box_is_found_on_either_polarity() -> None:
    assert content_box(_digit(28, (10, 6, 16, 20)), 0.1) == (10, 6, 16, 20)
    assert content_box(_digit(28, (10, 6, 16, 20), ink=0, ground=255), 0.1) == (10, 6, 16, 20)
    assert content_box(_digit(8, (0, 0, 8, 8)), 0.1) is None  # uniform: nothing to crop


def test_a_framed_digit_and_a_filling_one_align_to_the_same_image() -> None:
    """MNIST-like (small box in a large frame) and UCI-like (fills a coarse frame) agree."""
    rng = np.random.default_rng(0)
    shape = (rng.random((8, 8)) < 0.3).astype(np.uint8)
    shape[0, 3] = shape[7, 4] = shape[2, 0] = shape[5, 7] = 1  # it touches every edge
    framed = np.zeros((32, 32), dtype=np.uint8)
    framed[4:28, 4:28] = np.kron(shape, np.ones((3, 3), dtype=np.uint8)) * 255  # sharp, framed
    filling = shape * 160  # coarse, dim, filling its frame
    cfg = _align(content_crop=True, resolution=8, autocontrast=True)
    a = np.asarray(align_image(Image.fromarray(framed, mode="L"), cfg))
    b = np.asarray(align_image(Image.fromarray(filling, mode="L"), cfg))
    assert a.shape == b.shape == (8, 8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, shape * 255)


def test_crop_pads_to_a_square_with_the_background_and_a_margin() -> None:
    image = _digit(28, (10, 6, 16, 20), ink=0, ground=255).convert("RGB")
    out = align_image(image, _align(content_crop=True, margin=0.25))
    assert out.size == (21, 21) and out.mode == "RGB"  # 14 px tall + 2 x 3.5 px of margin
    pixels = np.asarray(out)
    assert (pixels[0] == 255).all() and (pixels[:, 0] == 255).all()  # the padding is the ground
    assert (pixels[10, 10] == 0).all()  # the ink is in the middle


def test_resolution_only_reduces_and_autocontrast_stretches() -> None:
    small = _digit(6, (1, 1, 5, 5), ink=100)
    assert align_image(small, _align(resolution=8)).size == (6, 6)  # never upscaled
    big = _digit(32, (0, 0, 16, 32), ink=100)
    reduced = align_image(big, _align(resolution=8))
    assert reduced.size == (8, 8) and np.asarray(reduced)[0, 0] == 100
    stretched = np.asarray(align_image(small, _align(autocontrast=True)))
    assert stretched.min() == 0 and stretched.max() == 255


def test_alignment_is_a_noop_by_default_and_keys_the_decoded_cache() -> None:
    image = _digit(28, (10, 6, 16, 20))
    off = repo_params().model.align
    assert not off.active  # params.yaml ships it off
    assert not AlignConfig.none().active  # what a model that records no alignment carries
    for none in (off, AlignConfig.none()):
        assert np.array_equal(np.asarray(align_image(image, none)), np.asarray(image))
    plain = model_input(image, 32)
    assert plain.shape == (1, 32, 32)
    assert np.array_equal(model_input(image, 32, off), plain)
    cfg = repo_params().image
    assert cache_key("v", "train", 32, cfg) == cache_key("v", "train", 32, cfg, off)
    assert cache_key("v", "train", 32, cfg) != cache_key(
        "v", "train", 32, cfg, _align(content_crop=True)
    )
