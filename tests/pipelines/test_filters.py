"""The edge score of conv filters (claim C7) on synthetic filters: oriented edges score
about 1 whatever their angle, polarity, scale or channel; noise, blobs, bars and
constants score low; random filters come from the layer's own initializer, reproducibly."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.filters import edge_bank, edge_score, filter_scores, random_filters


def _kernel(*filters: np.ndarray) -> np.ndarray:
    """2-D filters as a one-channel Keras kernel ``[k, k, 1, n]``."""
    return np.stack(filters, axis=-1)[:, :, None, :]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    centre = np.arange(size) - (size - 1) / 2
    return np.meshgrid(centre, centre, indexing="ij")


@pytest.mark.parametrize("size", [3, 5, 7])
def test_the_bank_holds_unit_norm_zero_mean_oriented_kernels(size):
    bank = edge_bank(size)
    assert bank.shape[1:] == (size, size) and len(bank) == 32  # 16 orientations x 2 scales
    np.testing.assert_allclose(np.linalg.norm(bank.reshape(len(bank), -1), axis=1), 1.0)
    np.testing.assert_allclose(bank.sum(axis=(1, 2)), 0.0, atol=1e-12)
    assert edge_score(np.moveaxis(bank, 0, -1)[:, :, None, :]) == pytest.approx(1.0)


def test_edges_at_any_angle_polarity_and_scale_score_near_one():
    y, x = _grid(5)
    rng = np.random.default_rng(1)
    filters = []
    for angle, sigma, sign in zip(rng.uniform(0, 2 * np.pi, 40), rng.uniform(0.9, 1.7, 40),
                                  rng.choice([-1, 1], 40), strict=True):
        along = x * np.cos(angle) + y * np.sin(angle)
        filters.append(sign * 3.0 * along * np.exp(-(x**2 + y**2) / (2 * sigma**2)))
    scores = filter_scores(_kernel(*filters))
    assert scores.min() > 0.95
    # a hard step edge (sign of the distance to a line through the centre) is an edge too
    steps = [np.sign(x * np.cos(a) + y * np.sin(a) + 1e-3) for a in rng.uniform(0, np.pi, 40)]
    assert edge_score(_kernel(*steps)) > 0.8


@pytest.mark.parametrize("size, at_most", [(3, 0.55), (5, 0.35), (7, 0.25)])
def test_noise_scores_low(size, at_most):
    rng = np.random.default_rng(0)
    for noise in (rng.normal(size=(size, size, 1, 500)), rng.uniform(-1, 1, (size, size, 1, 500))):
        assert 0.1 < edge_score(noise) < at_most


def test_blobs_bars_constants_and_zeros_are_not_edges():
    y, x = _grid(5)
    blob = np.exp(-(x**2 + y**2) / 2)
    bar = np.where(x == 0, 1.0, -0.25)  # a centred vertical stroke: symmetric, no edge
    checker = (-1.0) ** (x + y)
    kernel = _kernel(blob, bar, checker, np.ones((5, 5)), np.zeros((5, 5)))
    np.testing.assert_allclose(filter_scores(kernel), 0.0, atol=1e-9)


def test_channels_are_weighted_by_their_energy():
    y, x = _grid(5)
    edge = x * np.exp(-(x**2 + y**2) / 2)
    blob = np.exp(-(x**2 + y**2) / 2)
    strong_edge = np.stack([edge / np.linalg.norm(edge) * 3, blob / np.linalg.norm(blob)], axis=-1)[..., None]
    # energies 9 and 1: (9 * 1 + 1 * 0) / 10
    assert edge_score(strong_edge) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="expected"):
        edge_score(np.zeros((5, 3, 1, 2)))


def test_random_filters_come_from_the_layers_initializer_with_a_fixed_seed():
    import keras

    layer = keras.layers.Conv2D(16, 5)
    layer.build((None, 28, 28, 1))
    drawn = random_filters(layer, seed=3)
    assert drawn.shape == (5, 5, 1, 16)
    np.testing.assert_array_equal(drawn, random_filters(layer, seed=3))
    assert not np.array_equal(drawn, random_filters(layer, seed=4))
    limit = np.sqrt(6 / (25 * 1 + 25 * 16))  # Glorot uniform
    assert np.abs(drawn).max() <= limit and np.abs(drawn).max() > 0.8 * limit
    assert 0.15 < edge_score(drawn) < 0.45
    several = random_filters(layer, seed=3, draws=4)
    assert several.shape == (5, 5, 1, 64)
    np.testing.assert_array_equal(several[..., :16], drawn)
    # many draws: about the expected score of white noise of this size
    assert edge_score(random_filters(layer, seed=0, draws=32)) == pytest.approx(0.29, abs=0.02)
