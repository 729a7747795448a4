"""The label budget: which target training images keep their label (``train.target_labels``).

``all`` keeps every label; an integer k keeps k per class and marks the others
:data:`UNLABELED` (a strategy may still use their pixels); 0 keeps none. Which k is a function of
each image's path and the seed alone (the smallest ``sha256(seed:path)`` of each class), so the
same images are drawn in every run and every step, and an image that arrives later does not
reshuffle the draw except where it ranks among the k smallest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray

UNLABELED = -1  # the label index of an image whose label the budget does not use


def _rank(path: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{path}".encode()).hexdigest()


def budget_labels(
    paths: Sequence[str],
    labels: NDArray[np.int64],
    budget: int | Literal["all"],
    seed: int,
) -> NDArray[np.int64]:
    """The labels with those outside the budget replaced by :data:`UNLABELED`.

    Args:
        paths: Each image's path (what the draw hashes).
        labels: Each image's label index.
        budget: ``"all"``, or the number of labeled images kept per class.
        seed: The draw's seed (``train.seed``).

    Returns:
        A new label array.
    """
    if budget == "all":
        return labels.copy()
    kept = np.full(len(labels), UNLABELED, dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen = sorted(members, key=lambda i: _rank(paths[int(i)], seed))[:budget]
        kept[chosen] = label
    return kept
