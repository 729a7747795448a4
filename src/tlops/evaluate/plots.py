"""PNG plots for reviewers: confusion matrix, reliability diagram, training curves.

Figures are drawn with matplotlib's object API on an Agg canvas: no pyplot global state and no
display needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def message_png(path: Path, title: str, message: str) -> None:
    """A plot's place holding a sentence: where there is nothing to draw, say why."""
    figure = _figure(5, 2)
    ax = figure.add_subplot()
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    figure.savefig(path)


def confusion_matrix_png(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str
) -> None:
    """Row-normalised confusion matrix with counts in the cells."""
    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = max(4.0, 0.45 * len(classes) + 2)
    figure = _figure(size + 1, size)
    ax = figure.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(classes) <= 30:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        int(counts[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black",
                    )
    figure.tight_layout()
    figure.savefig(path)


def reliability_png(table: Sequence[dict[str, float]], ece: float, path: Path, title: str) -> None:
    """Accuracy vs confidence per bin, with the diagonal of perfect calibration."""
    figure = _figure(5, 5)
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    if table:
        lows = np.array([row["bin_low"] for row in table])
        highs = np.array([row["bin_high"] for row in table])
        ax.bar(
            lows,
            [row["accuracy"] for row in table],
            width=highs - lows,
            align="edge",
            edgecolor="black",
            alpha=0.7,
            label="accuracy",
        )
        ax.plot(
            [row["confidence"] for row in table],
            [row["accuracy"] for row in table],
            "o",
            color="C3",
            label="mean confidence",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (ECE {ece:.3f})")
    ax.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path)


def training_curves_png(history: Sequence[dict[str, float]], path: Path, title: str) -> None:
    """Loss and validation accuracy per epoch (the rows' epochs, counted from 1)."""
    figure = _figure(9, 3.5)
    epochs = [row["epoch"] for row in history]
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    left.plot(epochs, [row["train_loss"] for row in history], label="train loss")
    left.plot(epochs, [row["val_loss"] for row in history], label="val loss")
    left.set_xlabel("epoch")
    left.legend()
    right.plot(epochs, [row["val_accuracy"] for row in history], label="val accuracy")
    right.plot(epochs, [row["val_macro_f1"] for row in history], label="val macro F1")
    right.set_xlabel("epoch")
    right.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
