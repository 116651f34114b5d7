"""Dense and convolutional autoencoders: shapes, the encoder/decoder sub-models,
argument checks, a save/load round trip and a short fit that lowers the error."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models import build_model

TINY = {
    "dense": {"hidden_units": (16, 8)},
    "conv": {"filters": (4, 8)},
}


def ramp_images(n: int = 64, side: int = 8, seed: int = 0) -> np.ndarray:
    """Linear brightness ramps (random slope in x and y, random mean level), in [0, 1]:
    a three-parameter family that a code of a few numbers can hold."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(-0.5, 0.5, side, dtype="float32")
    x, y = np.meshgrid(grid, grid)
    slope_x, slope_y = rng.uniform(-0.5, 0.5, (2, n, 1, 1))
    level = rng.uniform(0.25, 0.75, (n, 1, 1))
    return np.clip(slope_x * x + slope_y * y + level, 0.0, 1.0)[..., None].astype("float32")


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_output_has_the_input_shape_and_pixels_in_unit_interval(kind):
    model = build_model("autoencoder", input_shape=(8, 8, 1), kind=kind, **TINY[kind])
    assert isinstance(model, keras.Model)
    assert model.output_shape == (None, 8, 8, 1)
    images = np.random.default_rng(1).random((5, 8, 8, 1), dtype=np.float32)
    output = model.predict(images, verbose=0)
    assert output.shape == images.shape
    assert np.all((output >= 0.0) & (output <= 1.0))
    assert np.all(np.isfinite(output))


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_encoder_gives_bottleneck_codes_and_decoder_rebuilds_the_image(kind):
    images = np.random.default_rng(2).random((4, 8, 8, 1), dtype=np.float32)
    default = build_model("autoencoder", input_shape=(8, 8, 1), kind=kind, **TINY[kind])
    assert default.get_layer("encoder").output.shape == (None, 10)  # the default bottleneck
    model = build_model("autoencoder", input_shape=(8, 8, 1), kind=kind, bottleneck=3, **TINY[kind])
    encoder, decoder = model.get_layer("encoder"), model.get_layer("decoder")
    assert encoder.output.shape == (None, 3)
    assert decoder.input.shape == (None, 3)
    assert decoder.output.shape == (None, 8, 8, 1)
    codes = keras.ops.convert_to_numpy(encoder(images))
    assert codes.shape == (4, 3)
    assert not np.allclose(codes[0], codes[1])  # different images, different codes
    np.testing.assert_allclose(keras.ops.convert_to_numpy(decoder(codes)), model.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_dense_layers_follow_hidden_units_mirrored_in_the_decoder():
    model = build_model("autoencoder", input_shape=(6, 6, 2), kind="dense", hidden_units=(12, 5), bottleneck=4)
    encoder, decoder = model.get_layer("encoder"), model.get_layer("decoder")
    assert [encoder.get_layer(f"encode_{i}").units for i in (1, 2)] == [12, 5]
    assert [decoder.get_layer(f"decode_{i}").units for i in (1, 2)] == [5, 12]
    assert decoder.get_layer("pixels").units == 6 * 6 * 2
    assert model.count_params() == ((72 * 12 + 12) + (12 * 5 + 5) + (5 * 4 + 4)
                                    + (4 * 5 + 5) + (5 * 12 + 12) + (12 * 72 + 72))


def test_conv_encoder_halves_the_image_per_filter_layer():
    model = build_model("autoencoder", input_shape=(16, 8, 3), kind="conv", filters=(2, 3, 4), bottleneck=5)
    encoder, decoder = model.get_layer("encoder"), model.get_layer("decoder")
    assert [encoder.get_layer(f"conv_{i}").output.shape[1:] for i in (1, 2, 3)] == [(8, 4, 2), (4, 2, 3), (2, 1, 4)]
    assert decoder.get_layer("unflatten").output.shape[1:] == (2, 1, 4)
    assert [decoder.get_layer(f"deconv_{i}").output.shape[1:] for i in (1, 2)] == [(4, 2, 3), (8, 4, 2)]
    assert model.output_shape == (None, 16, 8, 3)


@pytest.mark.parametrize("input_shape, filters", [((10, 10, 1), (4, 8)), ((8, 12, 1), (2, 2, 2)), ((6, 8, 1), (2, 2))])
def test_conv_rejects_sides_not_divisible_by_two_to_the_number_of_layers(input_shape, filters):
    with pytest.raises(ValueError, match=f"divisible by {2 ** len(filters)}"):
        build_model("autoencoder", input_shape=input_shape, kind="conv", filters=filters)


def test_conv_accepts_sides_divisible_by_two_to_the_number_of_layers():
    model = build_model("autoencoder", input_shape=(12, 4, 1), kind="conv", filters=(2, 2))
    assert model.output_shape == (None, 12, 4, 1)
    # The dense kind has no such restriction.
    assert build_model("autoencoder", input_shape=(10, 7, 1), hidden_units=(4,)).output_shape == (None, 10, 7, 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "rnn"}, "kind='rnn'"),
    ({"bottleneck": 0}, "bottleneck=0"),
    ({"bottleneck": -3}, "bottleneck=-3"),
    ({"hidden_units": (4, 0)}, r"hidden_units\[1\]=0"),
    ({"kind": "conv", "filters": (0, 4)}, r"filters\[0\]=0"),
    ({"input_shape": (8, 8)}, r"input_shape=\(8, 8\)"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model("autoencoder", **{"input_shape": (8, 8, 1), **kwargs})


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_save_and_load_round_trip_keeps_outputs_and_submodels(kind, tmp_path):
    model = build_model("autoencoder", input_shape=(8, 8, 1), kind=kind, bottleneck=4, **TINY[kind])
    images = ramp_images(6)
    path = tmp_path / f"{kind}.keras"
    keras.saving.save_model(model, path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), model.predict(images, verbose=0))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded.get_layer("encoder")(images)),
                                  keras.ops.convert_to_numpy(model.get_layer("encoder")(images)))


@pytest.mark.parametrize("kind, learning_rate", [("dense", 1e-2), ("conv", 3e-2)])
def test_a_few_epochs_of_fitting_reduce_the_reconstruction_error(kind, learning_rate):
    keras.utils.set_random_seed(0)
    images = ramp_images(64)
    # The best output that ignores the code is the mean image; beating it clearly shows
    # the code carries what differs between the images.
    mean_image_error = float(np.mean((images - images.mean(axis=0)) ** 2))
    model = build_model("autoencoder", input_shape=(8, 8, 1), kind=kind, bottleneck=6, **TINY[kind])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    before = float(np.mean((model.predict(images, verbose=0) - images) ** 2))
    history = model.fit(images, images, batch_size=32, epochs=20, verbose=0)
    after = float(np.mean((model.predict(images, verbose=0) - images) ** 2))
    assert after < 0.5 * before, (before, after)
    assert after < 0.75 * mean_image_error, (mean_image_error, after)
    assert history.history["loss"][-1] < history.history["loss"][0]
