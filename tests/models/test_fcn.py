"""Dense head rewritten as convolutions: same outputs at the training size, heatmaps on
other sizes, inference-mode batch normalisation, clear refusals."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models import build_model
from models.fcn import FcnConversionError, convert_to_fcn, geometry, heatmaps


def _cnn(**kwargs):
    keras.utils.set_random_seed(0)
    model = build_model("cnn", input_shape=(28, 28, 1), num_classes=10, filters=(8, 16), convs_per_block=2,
                        dense_units=32, augment_shift=0.06, **kwargs)
    # Moving statistics far from (0, 1), so a conversion that forgot them would show.
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.normal(1, 0.3, gamma.shape), rng.normal(0, 0.3, beta.shape),
                               rng.normal(0, 0.5, mean.shape), rng.uniform(0.3, 3.0, variance.shape)])
    return model


def _images(count: int, height: int = 28, width: int = 28) -> np.ndarray:
    return np.random.default_rng(2).random((count, height, width, 1), dtype=np.float32)


def test_the_converted_net_equals_the_cnn_on_training_size_inputs():
    cnn = _cnn()
    fcn = convert_to_fcn(cnn)
    x = _images(16)
    expected = cnn.predict(x, verbose=0)
    got = fcn.predict(x, verbose=0)
    assert got.shape == (16, 1, 1, 10)
    assert np.abs(expected - got[:, 0, 0]).max() < 1e-5
    # The dense weights were moved, not re-initialised: the kernel is the reshaped Dense kernel.
    dense = cnn.get_layer("dense").get_weights()[0]
    conv = fcn.get_layer("dense_as_conv").get_weights()[0]
    assert conv.shape == (7, 7, 16, 32)
    np.testing.assert_array_equal(conv.reshape(-1, 32), dense)
    assert not any(isinstance(layer, keras.layers.Dense | keras.layers.Flatten | keras.layers.Dropout |
                              keras.layers.RandomTranslation) for layer in fcn.layers)


def test_batch_normalisation_keeps_inference_semantics_even_in_training_mode():
    cnn = _cnn()
    fcn = convert_to_fcn(cnn)
    x = _images(8)
    inference = np.asarray(cnn(x, training=False))
    assert np.abs(np.asarray(fcn(x, training=True))[:, 0, 0] - inference).max() < 1e-5
    # ... while the CNN itself in training mode (batch statistics) gives something else.
    cnn_without_shift = build_model("cnn", input_shape=(28, 28, 1), num_classes=10, filters=(8, 16),
                                    convs_per_block=2, dense_units=32, dropout_rate=0.0)
    cnn_without_shift.set_weights(cnn.get_weights())
    assert np.abs(np.asarray(cnn_without_shift(x, training=True)) - inference).max() > 1e-3


@pytest.mark.parametrize("size", [(28, 28), (112, 112), (64, 100), (29, 40), (200, 60)])
def test_the_heatmap_follows_the_input_size(size):
    fcn = convert_to_fcn(_cnn())
    shape = geometry(fcn)
    assert shape.window == (28, 28) and shape.stride == (4, 4)
    out = heatmaps(fcn, _images(2, *size), shape)
    assert out.shape == (2, *shape.heatmap_shape(*size), 10)
    assert out.shape[1:3] == ((size[0] - 28) // 4 + 1, (size[1] - 28) // 4 + 1)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)


def test_each_heatmap_cell_is_the_cnn_on_its_window():
    cnn = _cnn(batch_norm=False)  # without padding effects inside the window: zero canvas around it
    fcn = convert_to_fcn(cnn)
    canvas = np.zeros((1, 60, 60, 1), np.float32)
    canvas[0, 16:44, 20:48] = _images(1)[0]
    cell = fcn.predict(canvas, verbose=0)[0, 4, 5]  # window rows 16..44, columns 20..48
    np.testing.assert_allclose(cell, cnn.predict(canvas[:, 16:44, 20:48], verbose=0)[0], atol=1e-3)


def test_an_input_smaller_than_the_window_is_a_clear_error():
    fcn = convert_to_fcn(_cnn())
    with pytest.raises(ValueError, match=r"input 20x40 is smaller than the network's window 28x28"):
        heatmaps(fcn, _images(1, 20, 40))


def _functional(build):
    inputs = keras.Input((28, 28, 1))
    return keras.Model(inputs, build(inputs))


@pytest.mark.parametrize("build, message", [
    (lambda x: keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))),
     "pools the spatial grid away"),
    (lambda x: keras.layers.Dense(10)(keras.layers.Flatten()(keras.layers.Dense(4)(x))),
     "Dense layer .* is not after Flatten"),
    (lambda x: keras.layers.Dense(10)(keras.layers.Flatten()(keras.layers.Add()([x, keras.layers.Conv2D(1, 3, padding="same")(x)]))),
     "several inputs"),
    (lambda x: keras.layers.Conv2D(10, 28)(x), "no Flatten \\+ Dense head"),
    (lambda x: keras.layers.Dense(10)(keras.layers.LayerNormalization()(keras.layers.Flatten()(x))),
     "follows Flatten"),
])
def test_a_model_it_cannot_convert_is_refused_naming_the_layer(build, message):
    with pytest.raises(FcnConversionError, match=message):
        convert_to_fcn(_functional(build))


def test_the_converted_net_survives_a_safe_mode_round_trip(tmp_path):
    fcn = convert_to_fcn(_cnn())
    path = tmp_path / "fcn.keras"
    fcn.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = _images(2, 40, 52)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), fcn.predict(x, verbose=0), atol=1e-6)
