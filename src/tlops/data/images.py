"""Opening images safely: decode checks, decompression-bomb guard and mode conversion.

Every step reads images through :func:`load_image`, so an image that passed ingestion is read
the same way by feature extraction and training, and the conversion of odd modes (CMYK, 16-bit,
alpha, palette) is decided once, by ``params.yaml``'s ``image`` section.
"""

from __future__ import annotations

import enum
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tlops.config import ImageConfig


class DecodeStatus(enum.StrEnum):
    """Why an image can or cannot be used; one value per manifest row."""

    OK = "ok"
    EMPTY_FILE = "empty_file"
    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED = "truncated"
    DECOMPRESSION_BOMB = "decompression_bomb"
    CONVERSION_FAILED = "conversion_failed"
    UNREADABLE = "unreadable"
    SYMLINK_OUTSIDE_ROOT = "symlink_outside_root"


class ImageDecodeError(ValueError):
    """An image that cannot be used, with the rule it broke."""

    def __init__(self, path: Path, status: DecodeStatus, detail: str) -> None:
        super().__init__(f"{path}: {status.value}: {detail}")
        self.path = path
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class ImageInfo:
    """What ingestion records about a decodable image."""

    width: int
    height: int
    mode: str
    format: str
    frames: int = 1  # an animated GIF/WebP or a multi-page TIFF has more; the first is read


# File signatures of the formats image.extensions allows: a file that starts like an image but
# cannot be opened is a damaged image (truncated), not some other kind of file.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def sniff_format(data: bytes) -> str | None:
    """Return the image format a file's first bytes announce, or None."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def convert_mode(image: Image.Image, cfg: ImageConfig) -> Image.Image:
    """Convert any Pillow mode to ``cfg.mode`` (``RGB`` or ``L``)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High bit depth: scale the full range of the type to 8 bits rather than clipping,
        # which would turn most 16-bit images white.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(array.max()), 1.0)
        scaled = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(scaled, mode="L")
    elif mode == "P" or mode == "PA":
        image = image.convert("RGBA")
    elif mode == "CMYK" or mode == "YCbCr" or mode == "LAB" or mode == "HSV":
        image = image.convert("RGB")
    elif mode == "1":
        image = image.convert("L")

    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*cfg.background, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")

    if image.mode != cfg.mode:
        image = image.convert(cfg.mode)
    return image


def load_image(path: Path, cfg: ImageConfig) -> tuple[Image.Image, ImageInfo]:
    """Decode an image fully and convert it to ``cfg.mode``.

    Args:
        path: The image file.
        cfg: The ``image`` section of the params.

    Returns:
        The converted image and what was read from the file (size, original mode, format).

    Raises:
        ImageDecodeError: The file is empty, not an image, truncated, declares more than
            ``cfg.max_pixels`` pixels, or cannot be converted.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageDecodeError(path, DecodeStatus.UNREADABLE, str(exc)) from exc
    if size == 0:
        raise ImageDecodeError(path, DecodeStatus.EMPTY_FILE, "the file has 0 bytes")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(path, DecodeStatus.UNREADABLE, str(exc)) from exc
    return decode_bytes(data, path, cfg)


def decode_bytes(data: bytes, path: Path, cfg: ImageConfig) -> tuple[Image.Image, ImageInfo]:
    """Decode image bytes already read from ``path`` (see :func:`load_image`)."""
    with warnings.catch_warnings():
        # Pillow's own bomb guard is a process-wide setting; ours is per call and comes from
        # params, so Pillow's warning is silenced and the declared size is checked here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(path, DecodeStatus.DECOMPRESSION_BOMB, str(exc)) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            announced = sniff_format(data)
            if announced is not None:
                raise ImageDecodeError(
                    path,
                    DecodeStatus.TRUNCATED,
                    f"starts as a {announced} file ({len(data)} bytes) but its header is "
                    f"damaged or cut short: {exc}",
                ) from exc
            detail = (
                "no image format recognises this file"
                if isinstance(exc, UnidentifiedImageError)
                else str(exc)
            )
            raise ImageDecodeError(path, DecodeStatus.NOT_AN_IMAGE, detail) from exc
        width, height = image.size
        if width * height > cfg.max_pixels:
            raise ImageDecodeError(
                path,
                DecodeStatus.DECOMPRESSION_BOMB,
                f"header declares {width}x{height} = {width * height:,} pixels, "
                f"more than image.max_pixels = {cfg.max_pixels:,}",
            )
        info = ImageInfo(
            width=width,
            height=height,
            mode=image.mode,
            format=image.format or "",
            frames=int(getattr(image, "n_frames", 1) or 1),
        )
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageDecodeError(path, DecodeStatus.TRUNCATED, str(exc)) from exc
    try:
        converted = convert_mode(image, cfg)
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(
            path, DecodeStatus.CONVERSION_FAILED, f"mode {info.mode} -> {cfg.mode}: {exc}"
        ) from exc
    return converted, info
