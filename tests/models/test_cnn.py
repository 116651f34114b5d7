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
