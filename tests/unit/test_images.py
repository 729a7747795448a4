"""Decoding and converting single images: every bad input gets a status and a clear message."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import changed, png_with_size, repo_params, save_image, truncate
from tlops.config import ImageConfig
from tlops.data.images import DecodeStatus, ImageDecodeError, load_image, sniff_format

CFG = repo_params().image


def _status(path: Path, cfg: ImageConfig = CFG) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as info:
        load_image(path, cfg)
    assert str(path) in str(info.value)
    return info.value


def test_good_png_is_converted_to_rgb(tmp_path: Path) -> None:
    image, info = load_image(save_image(tmp_path / "a.png", 1, size=9), CFG)
    assert image.mode == "RGB" and image.size == (9, 9)
    assert (info.width, info.height, info.mode, info.format) == (9, 9, "L", "PNG")


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    error = _status(path)
    assert error.status is DecodeStatus.EMPTY_FILE
    assert "0 bytes" in str(error)


@pytest.mark.parametrize("fmt,suffix", [("PNG", "png"), ("JPEG", "jpg")])
@pytest.mark.parametrize("keep", [0.05, 0.6])
def test_truncated_files(tmp_path: Path, fmt: str, suffix: str, keep: float) -> None:
    path = save_image(tmp_path / f"t.{suffix}", 3, size=64, mode="RGB", fmt=fmt)
    truncate(path, keep)
    error = _status(path)
    assert error.status is DecodeStatus.TRUNCATED, error


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    error = _status(path)
    assert error.status is DecodeStatus.NOT_AN_IMAGE
    assert "no image format" in str(error)


def test_decompression_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    path = png_with_size(tmp_path / "bomb.png", 40000, 40000)
    started = time.perf_counter()
    error = _status(path)
    assert error.status is DecodeStatus.DECOMPRESSION_BOMB
    assert "40000x40000" in str(error) or "pixels" in str(error)
    # refused before any decoding: a 1.6 gigapixel decode would take far longer than this
    assert time.perf_counter() - started < 2.0


def test_bomb_limit_comes_from_params(tmp_path: Path) -> None:
    path = save_image(tmp_path / "big.png", 4, size=100)
    error = _status(path, changed(CFG, max_pixels=99 * 99))
    assert error.status is DecodeStatus.DECOMPRESSION_BOMB
    assert "image.max_pixels" in str(error)


def test_cmyk_jpeg_is_converted(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (12, 10), (0, 255, 255, 0)).save(path, format="JPEG", quality=95)
    image, info = load_image(path, CFG)
    assert info.mode == "CMYK" and image.mode == "RGB"
    red, green, blue = np.asarray(image).reshape(-1, 3).mean(axis=0)
    assert red > 200 and green < 60 and blue < 60  # C=0, M=Y=255 is red


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    ramp = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    image, info = load_image(path, changed(CFG, mode="L"))
    assert info.mode.startswith("I")
    pixels = np.asarray(image)
    assert pixels.min() == 0 and pixels.max() == 255
    assert 100 < pixels.mean() < 155  # a ramp stays a ramp, not a white image


def test_rgba_is_composited_on_the_background(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    pixels = np.zeros((8, 8, 4), dtype=np.uint8)
    pixels[:4, :, :] = (0, 0, 255, 255)  # opaque blue top half, transparent bottom half
    Image.fromarray(pixels, mode="RGBA").save(path)
    image, info = load_image(path, changed(CFG, background=(10, 20, 30)))
    array = np.asarray(image)
    assert info.mode == "RGBA"
    assert tuple(array[0, 0]) == (0, 0, 255)
    assert tuple(array[7, 7]) == (10, 20, 30)


def test_palette_with_transparency_is_converted(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    image = Image.new("P", (8, 8), 1)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    image.info["transparency"] = 0
    image.paste(0, (0, 0, 4, 8))
    image.save(path, transparency=0)
    converted, info = load_image(path, CFG)
    array = np.asarray(converted)
    assert info.mode == "P"
    assert tuple(array[0, 0]) == (255, 255, 255)  # transparent -> white background
    assert tuple(array[0, 7]) == (0, 255, 0)


def test_sniff_format() -> None:
    assert sniff_format(b"\x89PNG\r\n\x1a\n....") == "PNG"
    assert sniff_format(b"\xff\xd8\xff\xe0") == "JPEG"
    assert sniff_format(b"hello") is None
