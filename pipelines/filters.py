"""What a conv layer's filters look like, as numbers (claim C7).

:func:`edge_score` measures how much first-layer filters look like oriented edge
detectors: for each filter, the best absolute cosine similarity with a bank of oriented
first-derivative-of-Gaussian kernels of the filter's size (:func:`edge_bank`), averaged
over the filters. A clean edge detector scores about 1 whatever its orientation or
polarity; white noise of a 5x5 kernel scores about 0.3. The bank is steerable (each
kernel is a combination of the x and y derivatives at its scale), so a filter's best
cosine is about the square root of the share of its energy in the edge subspace of one
scale: a constant offset, a blob or a checkerboard count against it.

:func:`random_filters` draws untrained filters of the same shape the way the layer's
own Keras initializer does, with a fixed seed: the score the claim's filters must beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ORIENTATIONS = 16
"""Orientations of the bank, spread over 180 degrees (the sign is ignored)."""
SCALES = (0.5, 0.8)
"""Gaussian widths of the bank, as fractions of the kernel's radius ``(size - 1) / 2``."""


def edge_bank(size: int, orientations: int = ORIENTATIONS, scales: Sequence[float] = SCALES) -> np.ndarray:
    """Oriented first-derivative-of-Gaussian kernels ``[n, size, size]``, each of unit
    L2 norm: ``orientations`` directions in [0, 180) degrees at every scale (a fraction
    of the kernel's radius; for size 1 there is no edge and the bank is empty)."""
    if size < 1 or orientations < 1:
        raise ValueError(f"size={size}, orientations={orientations}: both must be >= 1")
    if size == 1:
        return np.zeros((0, 1, 1))
    radius = (size - 1) / 2
    grid = np.arange(size) - radius
    y, x = np.meshgrid(grid, grid, indexing="ij")
    kernels = []
    for scale in scales:
        sigma = scale * radius
        envelope = np.exp(-(x**2 + y**2) / (2 * sigma**2))
        for angle in np.arange(orientations) * np.pi / orientations:
            kernel = -(x * np.cos(angle) + y * np.sin(angle)) * envelope
            kernels.append(kernel / np.linalg.norm(kernel))
    return np.stack(kernels)


def filter_scores(kernel: np.ndarray, bank: np.ndarray | None = None) -> np.ndarray:
    """Per filter of a conv kernel ``[kh, kw, in, out]`` (Keras' layout): the best
    absolute cosine similarity of each input channel's 2-D slice with the bank, averaged
    over the input channels weighted by their energy. A filter of zeros scores 0."""
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"kernel of shape {kernel.shape}: expected [k, k, in, out]")
    size, _, channels, filters = kernel.shape
    bank = edge_bank(size) if bank is None else np.asarray(bank, dtype=np.float64)
    slices = np.moveaxis(kernel, (2, 3), (0, 1)).reshape(channels * filters, size * size)
    norms = np.linalg.norm(slices, axis=1)
    if not len(bank):
        return np.zeros(filters)
    cosines = np.abs(slices @ bank.reshape(len(bank), -1).T) / np.maximum(norms, 1e-12)[:, None]
    best = cosines.max(axis=1).reshape(channels, filters)
    energy = (norms**2).reshape(channels, filters)
    total = energy.sum(axis=0)
    return np.where(total > 0, (best * energy).sum(axis=0) / np.maximum(total, 1e-300), 0.0)


def edge_score(kernel: np.ndarray, bank: np.ndarray | None = None) -> float:
    """Likeness of a conv kernel's filters ``[kh, kw, in, out]`` to oriented edge
    detectors, in [0, 1]: the mean over filters of :func:`filter_scores`."""
    return float(filter_scores(kernel, bank).mean())


def random_filters(layer: Any, seed: int = 0, draws: int = 1) -> np.ndarray:
    """Untrained filters of ``layer``'s kernel shape ``[kh, kw, in, out]``, drawn by fresh
    copies of the layer's own kernel initializer (Glorot uniform for Keras' Conv2D) seeded
    ``seed``, ``seed + 1``, ...: ``draws`` such kernels side by side, ``[kh, kw, in,
    out * draws]`` (more draws, a steadier score for a layer of few filters)."""
    initializer = layer.kernel_initializer
    config = initializer.get_config()
    shape = tuple(int(size) for size in layer.kernel.shape)
    kernels = [np.asarray(type(initializer).from_config({**config, "seed": seed + draw})(shape))
               for draw in range(draws)]
    return np.concatenate(kernels, axis=-1)


RANDOM_DRAWS = 16
"""Untrained kernels drawn for the reference edge score of a first layer (C7)."""


def first_layer_edge_scores(layer: Any, seed: int) -> dict[str, float]:
    """C7: how much a conv layer's filters look like oriented edge detectors
    (:func:`edge_score`), and the same for untrained filters of the same shape drawn by
    the layer's initializer from ``seed`` on (:data:`RANDOM_DRAWS` draws, so that a layer
    of few filters gets a steady reference)."""
    return {"first_layer_edge_score": edge_score(layer.get_weights()[0]),
            "first_layer_edge_score_random": edge_score(random_filters(layer, seed, RANDOM_DRAWS))}
