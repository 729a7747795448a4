"""Images as tensors for feature extraction and training.

Each image of a split is decoded once (through :func:`tlops.data.images.load_image`, so modes
are converted as params say), resized to the training resolution and stored as uint8 in a
memory-mapped array on disk. Batches are then slices of that array: no PIL decode per step, no
worker processes, and memory stays bounded by the batch (the OS pages the file in), however
large the split. Augmentation runs on whole batches as per-sample random affine warps, with
a seeded generator, so an epoch is reproducible from (seed, epoch) alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from PIL import Image

from tlops.config import UNLABELED_SPLIT, AlignConfig, ImageConfig
from tlops.data.align import align_image
from tlops.data.budget import UNLABELED
from tlops.data.images import load_image


@dataclass
class SplitTensors:
    """One split: uint8 images (N, C, S, S) (a memmap), label indices, and relative paths."""

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and center-crop to ``size`` x ``size``."""
    width, height = image.size
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    resample = Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.BILINEAR
    image = image.resize(new, resample)
    left = (new[0] - size) // 2
    top = (new[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def model_input(
    image: Image.Image, size: int, align: AlignConfig | None = None
) -> NDArray[np.uint8]:
    """An image as a model takes it: aligned, resized to ``size``, uint8 (C, S, S)."""
    if align is not None:
        image = align_image(image, align)
    pixels = np.asarray(resize_square(image, size), dtype=np.uint8)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return pixels.reshape(size, size, channels).transpose(2, 0, 1)


def cache_key(
    data_version: str,
    split: str,
    size: int,
    image_cfg: ImageConfig,
    align: AlignConfig | None = None,
) -> str:
    """Key of a decoded split: changes with the data, resolution, image params or alignment."""
    parts: list[object] = [data_version, split, size, image_cfg.model_dump(mode="json")]
    if align is not None and align.active:  # keys of unaligned splits stay what they were
        parts.append(align.model_dump(mode="json"))
    payload = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def load_split(
    images_root: Path,
    manifest: pd.DataFrame,
    split: str,
    classes: Sequence[str],
    size: int,
    image_cfg: ImageConfig,
    cache_dir: Path,
    data_version: str,
    progress: Callable[[int], None] | None = None,
    align: AlignConfig | None = None,
) -> SplitTensors:
    """Decode a split once into a uint8 memmap (reused while its key is unchanged).

    Args:
        images_root: The ``images/`` snapshot of an ``ingest_data`` output.
        manifest: The manifest; rows with ``decode_status == "ok"`` are used.
        split: ``train``, ``val``, ``test`` or ``unlabeled`` (labels :data:`UNLABELED`).
        classes: Class names; a label's index in this list is its target.
        size: Square resolution.
        image_cfg: How images are converted.
        cache_dir: Where decoded arrays are kept.
        data_version: Part of the cache key.
        progress: Called with 1 per decoded image.
        align: Label-free input alignment (see :mod:`tlops.data.align`); None: none.

    Returns:
        The split's tensors.
    """
    rows = manifest[(manifest["split"] == split) & (manifest["decode_status"] == "ok")]
    rows = rows.sort_values("path")
    index = {name: i for i, name in enumerate(classes)}
    if split == UNLABELED_SPLIT:  # data.target_unlabeled: images without a label
        labels = np.full(len(rows), UNLABELED, dtype=np.int64)
    else:
        unknown = sorted(set(rows["label"]) - set(index))
        if unknown:
            raise ValueError(
                f"{images_root}: labels {unknown} are not in the class list {list(classes)}"
            )
        labels = rows["label"].map(index).to_numpy(dtype=np.int64)
    paths = rows["path"].tolist()
    channels = 3 if image_cfg.mode == "RGB" else 1
    key = cache_key(data_version, split, size, image_cfg, align)
    cache_dir.mkdir(parents=True, exist_ok=True)
    array_path = cache_dir / f"{split}-{key}.u8"
    meta_path = cache_dir / f"{split}-{key}.json"
    shape = (len(paths), channels, size, size)
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("paths") == paths:
        images = np.memmap(array_path, dtype=np.uint8, mode="r", shape=shape)
        return SplitTensors(np.asarray(images), labels, paths)
    # per process: two steps decoding the same split at once (two pods on one volume, two
    # test workers) each write their own file; the last rename wins with identical content
    partial = array_path.with_name(f".{array_path.name}.{os.getpid()}.partial")
    writer = np.memmap(partial, dtype=np.uint8, mode="w+", shape=shape) if paths else None
    for i, rel in enumerate(paths):
        image, _ = load_image(images_root / rel, image_cfg)
        assert writer is not None
        writer[i] = model_input(image, size, align)
        if progress is not None:
            progress(1)
    if writer is not None:
        writer.flush()
        del writer
        partial.replace(array_path)
    else:
        array_path.write_bytes(b"")
    meta_tmp = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
    meta_tmp.write_text(json.dumps({"paths": paths, "shape": shape}))
    meta_tmp.replace(meta_path)  # a reader never sees half a file
    if not paths:
        return SplitTensors(np.zeros(shape, dtype=np.uint8), labels, paths)
    images = np.memmap(array_path, dtype=np.uint8, mode="r", shape=shape)
    return SplitTensors(np.asarray(images), labels, paths)


def concat(first: SplitTensors, second: SplitTensors) -> SplitTensors:
    """``first`` followed by ``second`` (in memory: the two memmaps are copied)."""
    if not len(second):
        return first
    return SplitTensors(
        np.concatenate([first.images, second.images]),
        np.concatenate([first.labels, second.labels]),
        [*first.paths, *second.paths],
    )


def subset(split: SplitTensors, index: NDArray[np.int64]) -> SplitTensors:
    """The images of ``split`` at ``index``, in that order (in memory: a copy)."""
    return SplitTensors(
        np.ascontiguousarray(split.images[index]),
        split.labels[index],
        [split.paths[i] for i in index],
    )


def content_order(split: SplitTensors) -> tuple[SplitTensors, NDArray[np.int64]]:
    """``split`` reordered by the hash of each image's pixels, without its labels or paths.

    Paths name class folders; an order that depends on the pixels alone means that, without
    labels, nothing in training can tell how the images were labeled.

    Returns:
        The reordered split and the order (indices into ``split``).
    """
    keys = [
        hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() for image in split.images
    ]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    reordered = SplitTensors(
        np.ascontiguousarray(split.images[order]),
        np.full(len(order), UNLABELED, dtype=np.int64),
        [f"#{keys[i][:16]}" for i in order],
    )
    return reordered, np.array(order, dtype=np.int64)


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, C, S, S) -> float normalised, grayscale repeated to 3 channels."""
    x = batch.float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


@dataclass(frozen=True)
class Augment:
    """Per-sample random affine augmentation parameters."""

    rotation_deg: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    translate: float = 0.0  # fraction of the image size
    hflip: bool = False

    @property
    def active(self) -> bool:
        """True if any augmentation is switched on."""
        return bool(self.rotation_deg or self.translate or self.hflip or self.scale != (1.0, 1.0))


def augment_batch(
    x: torch.Tensor, aug: Augment, generator: torch.Generator, shard: Shard | None = None
) -> torch.Tensor:
    """Apply an independent random affine warp to each image of a float batch.

    With a ``shard``, ``x`` holds this process's rows of the global batch: the warps are drawn
    for the whole global batch (the same draws in every process, and as one process would
    make them) and this process applies its rows' warps.

    The warp computes in fp32 whatever autocast is active: under bf16 autocast
    ``affine_grid``'s matrix product would round the sampling grid to bf16, about 1/8 px at
    64 px (bench/numerics_trace.py), so bf16 training would see other augmentations.
    """
    if not aug.active:
        return x
    n = shard.total if shard is not None else x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(aug.rotation_deg)
    low, high = aug.scale
    scale = low + torch.rand(n, generator=generator) * (high - low)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * aug.translate * 2
    flip = (
        torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
        if aug.hflip
        else torch.ones(n)
    )
    if shard is not None:
        rows = shard.rows
        angle, scale, shift, flip = angle[rows], scale[rows], shift[rows], flip[rows]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[:, 0]], 1),
            torch.stack([sin * flip, cos, shift[:, 1]], 1),
        ],
        1,
    ).to(device=x.device, dtype=x.dtype)
    with torch.autocast(x.device.type, enabled=False):
        grid = F.affine_grid(theta.float(), list(x.shape), align_corners=False)
        # border padding: digits and photos alike look more natural than black corners
        return F.grid_sample(
            x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
        )


@dataclass
class Shard:
    """This process's part of every global batch, in data-parallel training.

    Every process draws the same shuffle of the whole split and cuts each global batch of
    ``train.batch_size`` images the same way (``numpy.array_split``: contiguous parts whose
    sizes differ by at most one); process ``rank`` reads only its part from the decoded image
    cache. :meth:`take` records the current batch, for what must see the global batch: the
    augmentation draws (:func:`augment_batch`) and the loss scale (:meth:`loss_scale`).
    """

    rank: int
    world: int
    rows: slice = field(
        default_factory=lambda: slice(0, 0)
    )  # this process's rows of the current global batch
    total: int = 0  # the current global batch's size
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def take(self, labels: np.ndarray) -> slice:
        """Record a global batch (its labels, in batch order) and return this process's rows."""
        n = len(labels)
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        self.rows = slice(start, start + base + (1 if self.rank < extra else 0))
        self.total, self.labels = n, labels
        return self.rows

    def loss_scale(self, class_weights: torch.Tensor | None = None) -> float:
        """The factor that makes DDP's mean of the processes' mean losses the global mean.

        DDP averages gradients over the processes; a process's loss is the (weighted) mean over
        its rows. Scaled by (its share of the batch's weight) x world, the average is the
        gradient of the global batch's mean loss, as one process computes it.
        """
        if self.total == 0:
            return 0.0
        share: float
        if class_weights is None:
            share = (self.rows.stop - self.rows.start) / self.total
        else:
            weights = class_weights.detach().cpu().numpy()
            total = float(weights[self.labels].sum())
            share = float(weights[self.labels[self.rows]].sum()) / total if total else 0.0
        return float(share * self.world)


def batches(
    split: SplitTensors,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    device: torch.device,
    shard: Shard | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images on ``device``, labels on ``device``) batches of a split.

    With a ``shard``, each batch holds this process's rows of the global batch (see
    :class:`Shard`); the shuffle is the global one, drawn the same in every process.
    """
    n = len(split)
    order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
    pin = device.type == "cuda"
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if shard is not None:
            idx = idx[shard.take(split.labels[idx])]
        images = torch.from_numpy(np.ascontiguousarray(split.images[idx]))
        labels = torch.from_numpy(split.labels[idx])
        if pin:
            images, labels = images.pin_memory(), labels.pin_memory()
        yield images.to(device, non_blocking=pin), labels.to(device, non_blocking=pin)
