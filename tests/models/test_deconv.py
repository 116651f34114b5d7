"""Learned-upsampling nets: the segmenter maps images to per-pixel classes at any
allowed size; the segmenter on a converted classifier starts as its heatmap upsampled;
the generator maps class + pose to a 28x28 image."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models import build_model


@pytest.mark.parametrize("stem", [1, 2])
@pytest.mark.parametrize("size", [(32, 32), (48, 80)])
def test_the_segmenter_returns_a_class_distribution_per_pixel_at_the_input_size(stem, size):
    model = build_model("deconv_segmenter", num_classes=11, filters=(4, 8), bottleneck=8, stem_stride=stem)
    x = np.random.default_rng(0).random((2, *size, 1), dtype=np.float32)
    out = model.predict(x, verbose=0)
    assert out.shape == (2, *size, 11)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)
    upsampling = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    assert len(upsampling) == 2 + (stem == 2)  # one learned doubling per level (and one for the stem)


def test_skips_concatenate_the_encoder_into_the_decoder():
    with_skips = build_model("deconv_segmenter", num_classes=3, filters=(4, 8), bottleneck=8, skips=True)
    without = build_model("deconv_segmenter", num_classes=3, filters=(4, 8), bottleneck=8, skips=False)
    assert {layer.name for layer in with_skips.layers if isinstance(layer, keras.layers.Concatenate)} == \
        {"skip_1", "skip_2"}
    assert not [layer for layer in without.layers if isinstance(layer, keras.layers.Concatenate)]


def test_the_segmenter_learns_a_mask_on_a_tiny_problem():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = np.zeros((64, 16, 16, 1), np.float32)
    y = np.zeros((64, 16, 16), np.int32)
    for n in range(64):
        top, left = rng.integers(0, 10, 2)
        x[n, top:top + 6, left:left + 6] = 1.0
        y[n, top:top + 6, left:left + 6] = 1
    model = build_model("deconv_segmenter", num_classes=2, filters=(4,), bottleneck=4)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert (model.predict(x, verbose=0).argmax(-1) == y).mean() > 0.97


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 1}, "num_classes=1"),
    ({"num_classes": 3, "filters": ()}, "at least one level"),
    ({"num_classes": 3, "stem_stride": 4}, "stem_stride=4"),
])
def test_bad_segmenter_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model("deconv_segmenter", **kwargs)


def _fcn():
    from models.fcn import convert_to_fcn

    keras.utils.set_random_seed(0)
    return convert_to_fcn(build_model("cnn", input_shape=(28, 28, 1), num_classes=10, filters=(4, 8),
                                      dense_units=16, batch_norm=False))


def test_the_segmenter_on_a_converted_classifier_starts_as_its_heatmap_upsampled(tmp_path):
    fcn = _fcn()
    segmenter = build_model("fcn_segmenter", fcn=fcn, num_classes=11)
    x = np.random.default_rng(0).random((2, 56, 40, 1), dtype=np.float32)
    out = segmenter.predict(x, verbose=0)
    assert out.shape == (2, 56, 40, 11)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)
    # Cell (i, j) of the padded input's heatmap is the window centred on block (4i, 4j):
    # at step 0 the digit channels there rank the classes as the classifier does.
    heat = fcn.predict(np.pad(x, ((0, 0), (12, 12), (12, 12), (0, 0))), verbose=0)
    assert heat.shape[1:3] == (14, 10)
    centres = out[:, 1::4, 1::4, 1:]
    assert (centres.argmax(-1) == heat.argmax(-1)).mean() > 0.9
    assert [layer.name for layer in segmenter.layers if isinstance(layer, keras.layers.Conv2DTranspose)] == \
        ["up_2", "up_1"]
    segmenter.save(tmp_path / "segmenter.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "segmenter.keras").predict(x, verbose=0), out,
                               atol=1e-6)


def test_the_segmenter_on_a_converted_classifier_needs_background_plus_its_classes():
    with pytest.raises(ValueError, match="num_classes=10: the fcn has 10 classes, so background"):
        build_model("fcn_segmenter", fcn=_fcn(), num_classes=10)


def test_the_generator_maps_class_and_pose_to_an_image_and_standardises_the_pose(tmp_path):
    model = build_model("digit_generator", dense_units=16, filters=(8, 4), pose_mean=(0.0, 1.0, 0.0),
                        pose_std=(20.0, 0.1, 0.8))
    onehot = np.eye(10, dtype=np.float32)[[3, 7]]
    pose = np.array([[30.0, 1.1, 1.0], [-30.0, 0.9, -1.0]], np.float32)
    images = model.predict([onehot, pose], verbose=0)
    assert images.shape == (2, 28, 28, 1) and images.min() >= 0.0 and images.max() <= 1.0
    assert [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    scaling = model.get_layer("pose_scaling")(pose)
    np.testing.assert_allclose(np.asarray(scaling)[0], [1.5, 1.0, 1.25], rtol=1e-4)
    path = tmp_path / "generator.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict([onehot, pose], verbose=0), images, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"image_side": 30}, "not a multiple of 2\\*\\*2"),
    ({"pose_mean": (0.0, 1.0)}, "expected 3 values each"),
    ({"filters": ()}, "at least one upsampling layer"),
])
def test_bad_generator_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model("digit_generator", **kwargs)
