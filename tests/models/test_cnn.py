from __future__ import annotations

import pytest

from models import build_model


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 1}, "num_classes=1"),
    ({"kernel_size": 0}, "kernel_size=0"),
    ({"convs_per_block": 0}, "convs_per_block=0"),
    ({"filters": ()}, "filters=()"),
    ({"filters": (4, 0)}, r"filters\[1\]=0"),
    ({"augment_shift": 0.6}, "augment_shift=0.6"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model("cnn", **{"input_shape": (8, 8, 1), "num_classes": 3, **kwargs})


@pytest.mark.parametrize("convs_per_block, batch_norm", [(1, False), (2, True)])
def test_first_conv_layer_is_named_conv_1_1(convs_per_block, batch_norm):
    model = build_model("cnn", input_shape=(8, 8, 1), num_classes=3, filters=(5, 6), kernel_size=3,
                        convs_per_block=convs_per_block, batch_norm=batch_norm, dense_units=4)
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert convs[0].name == "conv_1_1"
    assert len(convs) == 2 * convs_per_block
    kernel = model.get_layer("conv_1_1").get_weights()[0]
    assert kernel.shape == (3, 3, 1, 5)
    assert any(layer.__class__.__name__ == "BatchNormalization" for layer in model.layers) is batch_norm


def test_each_block_halves_the_image_with_a_max_pool():
    model = build_model("cnn", input_shape=(16, 16, 1), num_classes=3, filters=(2, 3, 4), dense_units=0,
                        dropout_rate=0.0)
    assert [model.get_layer(f"pool_{i}").output.shape[1:3] for i in (1, 2, 3)] == [(8, 8), (4, 4), (2, 2)]
    assert model.get_layer("flatten").output.shape[-1] == 2 * 2 * 4


def test_augmentation_layer_only_when_shift_is_set():
    def names(shift):
        model = build_model("cnn", input_shape=(8, 8, 1), num_classes=3, filters=(2,), augment_shift=shift)
        return [layer.name for layer in model.layers]

    assert "shift" in names(0.1)
    assert "shift" not in names(0.0)


# --- the depth family's blocks -----------------------------------------------------------


def _count(model, kind: str) -> int:
    return sum(type(layer).__name__ == kind for layer in model.layers)


@pytest.mark.parametrize("preactivation", [False, True])
def test_plain_and_residual_nets_differ_only_in_their_shortcuts(preactivation):
    kwargs = {"input_shape": (16, 16, 1), "num_classes": 3, "depth": 14, "widths": (4, 8, 16),
              "preactivation": preactivation}
    plain = build_model("deep_cnn", block="plain", **kwargs)
    residual = build_model("deep_cnn", block="residual", **kwargs)
    blocks = (14 - 2) // 2
    assert _count(plain, "Add") == 0
    assert _count(residual, "Add") == blocks
    # two stage transitions change width and resolution: a 1x1 projection each, identity elsewhere
    projections = [layer for layer in residual.layers if "projection" in layer.name and
                   type(layer).__name__ == "Conv2D"]
    assert [layer.kernel_size for layer in projections] == [(1, 1), (1, 1)]
    assert _count(residual, "Conv2D") == _count(plain, "Conv2D") + 2
    assert plain.get_layer("global_pool").output.shape[1:] == (16,)


def test_deep_cnn_has_depth_weight_layers_and_halves_the_image_per_stage():
    model = build_model("deep_cnn", input_shape=(32, 32, 3), num_classes=10, depth=20, block="residual",
                        widths=(4, 8, 16))
    weight_layers = [layer for layer in model.layers if type(layer).__name__ in ("Conv2D", "Dense")
                     and "projection" not in layer.name]
    assert len(weight_layers) == 20  # ResNet-20: 6n + 2 with n = 3
    assert model.get_layer("stage_2_block_1_conv_1").output.shape[1:3] == (16, 16)
    assert model.get_layer("stage_3_block_3_conv_2").output.shape[1:3] == (8, 8)


def test_residual_block_without_normalisation_passes_the_input_through():
    import keras
    import numpy as np

    from models.cnn import basic_block

    inputs = keras.Input((6, 6, 4))
    out = basic_block(inputs, 4, "b", batch_norm=False, preactivation=True)
    model = keras.Model(inputs, out)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), x)  # zero branch: identity


@pytest.mark.parametrize("kwargs, message", [
    ({"depth": 7}, "depth=7"), ({"depth": 2}, "depth=2"), ({"block": "dense"}, "block='dense'"),
    ({"depth": 6, "widths": (4, 8, 16)}, "fewer than the 3 stages"), ({"widths": ()}, "widths=()"),
])
def test_deep_cnn_refuses_bad_arguments_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model("deep_cnn", **{"input_shape": (8, 8, 1), "num_classes": 3, **kwargs})


def test_inception_module_concatenates_four_branches_to_the_module_width():
    model = build_model("inception_cnn", input_shape=(16, 16, 1), num_classes=3, stem_filters=4, modules=(32, 64))
    concat = model.get_layer("inception_1_concat")
    assert len(concat.input) == 4
    assert concat.output.shape[-1] == 32
    assert model.get_layer("inception_2_concat").output.shape[1:] == (8, 8, 64)
    kernels = {model.get_layer(f"inception_1_{name}").kernel_size for name in ("1x1", "3x3", "5x5")}
    assert kernels == {(1, 1), (3, 3), (5, 5)}
    with pytest.raises(ValueError, match="modules=.*multiple of 8"):
        build_model("inception_cnn", input_shape=(16, 16, 1), num_classes=3, modules=(20,))


def test_strided_cnn_has_no_pooling_and_the_same_head():
    kwargs = {"input_shape": (16, 16, 1), "num_classes": 3, "filters": (4, 6), "dense_units": 5}
    pooled = build_model("cnn", **kwargs)
    strided = build_model("cnn", downsample="stride", **kwargs)
    assert _count(strided, "MaxPooling2D") == 0 and _count(pooled, "MaxPooling2D") == 2
    assert strided.get_layer("flatten").output.shape == pooled.get_layer("flatten").output.shape
    assert strided.count_params() == pooled.count_params()
    with pytest.raises(ValueError, match="downsample='avg'"):
        build_model("cnn", downsample="avg", **kwargs)
