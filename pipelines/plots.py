"""Figures a person would rather look at than read: curves, grids, confusion matrices.

Each function returns a matplotlib figure (Agg backend, no display needed);
:func:`pipelines.tracking.log_figure` stores it as a PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def training_curves(history: Mapping[str, Sequence[float]], title: str) -> plt.Figure:
    """One panel per metric (loss, accuracy, ...), train and validation together."""
    names = [key for key in history if not key.startswith("val_") and key != "learning_rate"]
    figure, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.4), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        epochs = np.arange(1, len(history[name]) + 1)
        axis.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            axis.plot(epochs, history[f"val_{name}"], marker="o", label="validation")
        axis.set_xlabel("epoch")
        axis.set_title(name)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], title: str) -> plt.Figure:
    """Counts with the diagonal readable at a glance; rows are true classes."""
    size = max(4.0, 0.5 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        axis.text(col, row, int(count), ha="center", va="center", fontsize=8,
                  color="white" if count > threshold else "black")
    figure.colorbar(image, ax=axis, fraction=0.046)
    axis.set_title(title)
    figure.tight_layout()
    return figure


def image_grid(
    images: np.ndarray, titles: Sequence[str] | None = None, title: str = "", columns: int = 10, cmap: str = "gray",
    normalize_each: bool = False,
) -> plt.Figure:
    """Images ``[N, H, W]`` or ``[N, H, W, C]`` in a grid, optionally captioned."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, int(np.ceil(count / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.45 * rows + 0.4), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= count:
            continue
        image = images[index].astype(np.float32)
        if normalize_each:
            low, high = image.min(), image.max()
            image = (image - low) / (high - low) if high > low else image * 0
        axis.imshow(image, cmap=cmap)
        if titles is not None:
            axis.set_title(titles[index], fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def conv_filters(kernel: np.ndarray, title: str) -> plt.Figure:
    """First-layer conv kernels ``[kh, kw, in, out]`` as a grid of small images."""
    kernel = np.asarray(kernel)
    tiles = kernel.mean(axis=2) if kernel.shape[2] != 3 else kernel
    tiles = np.moveaxis(tiles, -1, 0)
    return image_grid(tiles, title=title, columns=8, cmap="gray", normalize_each=True)
