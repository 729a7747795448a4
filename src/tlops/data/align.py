"""Label-free input alignment: the same framing, resolution and contrast for every domain.

Two domains of the same classes can differ in how an image frames its object before they
differ in anything a network learns: MNIST digits sit in a 20x20 box inside a 28x28 frame, the
UCI digits fill their 8x8 frame; MNIST is 28 px sharp, UCI is an 8x8 average of a 32x32 scan.
A model trained on one and tested on the other pays for that difference, and a domain
adaptation method that "closes the gap" may only be fixing it in disguise. This module removes
it deterministically, per image, with no label and no statistic of a dataset:

1. ``content_crop``: crop to the bounding box of the pixels that differ from the background
   (the median of the image's border) by more than ``threshold`` of the largest difference,
   then pad to a square with the background (plus ``margin`` of the side on every side);
2. ``resolution``: area-average down to at most ``resolution`` px (the coarsest domain's
   sensor: an 8 px scan cannot be made sharp, a sharp image can be made coarse);
3. ``autocontrast``: stretch each channel's range to 0..255.

The model records the alignment it was trained with (:class:`tlops.models.model.TransferModel`),
so evaluation and serving prepare an image as training did.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from tlops.config import AlignConfig


def _background(gray: np.ndarray) -> float:
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    return float(np.median(border))


def content_box(image: Image.Image, threshold: float) -> tuple[int, int, int, int] | None:
    """The (left, top, right, bottom) box of the content, or None for a uniform image."""
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    deviation = np.abs(gray - _background(gray))
    top = float(deviation.max())
    if top <= 0.0:
        return None
    ys, xs = np.nonzero(deviation > threshold * top)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _crop_square(image: Image.Image, threshold: float, margin: float) -> Image.Image:
    box = content_box(image, threshold)
    if box is None:
        return image
    # the padding is the background: the per-channel median of the border
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    channels = [int(v) for v in np.median(border, axis=0).round()]
    fill: int | tuple[int, ...] = channels[0] if len(channels) == 1 else tuple(channels)
    content = image.crop(box)
    width, height = content.size
    side = max(width, height)
    side_with_margin = max(1, round(side * (1.0 + 2.0 * margin)))
    canvas = Image.new(image.mode, (side_with_margin, side_with_margin), fill)
    canvas.paste(content, ((side_with_margin - width) // 2, (side_with_margin - height) // 2))
    return canvas


def align_image(image: Image.Image, cfg: AlignConfig) -> Image.Image:
    """Apply the alignment ``cfg`` describes (see the module docstring); a no-op by default."""
    if cfg.content_crop:
        image = _crop_square(image, cfg.threshold, cfg.margin)
    if cfg.resolution is not None:
        width, height = image.size
        scale = cfg.resolution / min(width, height)
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = image.resize(size, Image.Resampling.BOX)
    if cfg.autocontrast:
        image = _stretch(image)
    return image


def _stretch(image: Image.Image) -> Image.Image:
    """Each channel's range to exactly 0..255 (Pillow's autocontrast tops out at 254)."""
    pixels = np.asarray(image, dtype=np.float32)
    axes = (0, 1)
    low, high = pixels.min(axis=axes), pixels.max(axis=axes)
    span = np.where(high > low, high - low, 1.0)
    stretched = np.where(high > low, (pixels - low) * (255.0 / span), pixels)
    return Image.fromarray(np.clip(np.rint(stretched), 0, 255).astype(np.uint8), mode=image.mode)
