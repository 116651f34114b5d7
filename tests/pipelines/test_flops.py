"""FLOPs counter: hand counts per layer kind (the conventions in ``pipelines.flops``),
nested and shared layers, trusted and unknown layers, the project's own builders and
mixed precision."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import pytest

from models import build_model
from models.rbm import RBM
from pipelines.flops import FlopCount, count_flops, describe

layers = keras.layers


def single_layer(layer: Any, shape: Sequence[int]) -> FlopCount:
    """Count a model made of one ``layer`` applied to an input of ``shape``."""
    inputs = keras.Input(shape=tuple(shape))
    return count_flops(keras.Model(inputs, layer(inputs)))


def check(count: FlopCount, hand: int) -> None:
    assert count.uncounted == ()
    assert count.total == sum(flops for _, _, flops in count.by_layer)
    assert count.total == hand
    assert abs(count.total - hand) / hand < 0.01


# --- acceptance: Dense and Conv2D against a hand count -------------------------------------


def test_dense_stack_matches_hand_count():
    inputs = keras.Input(shape=(100,))
    hidden = layers.Dense(50, activation="relu", name="hidden")(inputs)
    outputs = layers.Dense(10, name="logits")(hidden)
    count = count_flops(keras.Model(inputs, outputs))

    # multiply-adds (2 each) + bias per unit + relu per unit; the linear output is free
    hidden_flops = 2 * 100 * 50 + 50 + 50
    logits_flops = 2 * 50 * 10 + 10
    check(count, hidden_flops + logits_flops)
    assert count.by_layer == (("hidden", "Dense", hidden_flops), ("logits", "Dense", logits_flops))


def test_dense_on_a_sequence_counts_every_position():
    check(single_layer(layers.Dense(4, use_bias=False), (7, 3)), 7 * 2 * 3 * 4)


@pytest.mark.parametrize(
    ("make_layer", "shape", "hand"),
    [
        # same padding, stride 1: 8x8x4 outputs, each 3*3*3 multiply-adds + bias + relu
        (lambda: layers.Conv2D(4, 3, padding="same", activation="relu"), (8, 8, 3), 2 * 9 * 3 * 256 + 256 + 256),
        # valid padding, stride 2 on 9x9: 4x4x4 outputs
        (lambda: layers.Conv2D(4, 3, strides=2, padding="valid"), (9, 9, 3), 2 * 9 * 3 * 64 + 64),
        # same padding, stride 2 on 9x9: 5x5x4 outputs
        (lambda: layers.Conv2D(4, 3, strides=2, padding="same"), (9, 9, 3), 2 * 9 * 3 * 100 + 100),
        # two groups: each filter sees 4 / 2 input channels
        (lambda: layers.Conv2D(6, 3, padding="same", groups=2, use_bias=False), (8, 8, 4), 2 * 9 * 2 * 384),
        # dilation 2 makes the 3x3 kernel span 5x5: 6x6x3 outputs
        (lambda: layers.Conv2D(3, 3, dilation_rate=2), (10, 10, 2), 2 * 9 * 2 * 108 + 108),
        # channels_first: 4 filters on 8x8 positions
        (lambda: layers.Conv2D(4, 3, padding="same", data_format="channels_first"), (3, 8, 8),
         2 * 9 * 3 * 256 + 256),
        (lambda: layers.Conv1D(3, 3), (10, 4), 2 * 3 * 4 * 24 + 24),
        (lambda: layers.Conv3D(2, 2, use_bias=False), (3, 3, 3, 1), 2 * 8 * 1 * 16),
    ],
    ids=["same", "valid-stride2", "same-stride2", "groups", "dilation", "channels-first", "conv1d", "conv3d"],
)
def test_convolution_matches_hand_count(make_layer: Callable[[], Any], shape: tuple[int, ...], hand: int):
    check(single_layer(make_layer(), shape), hand)


# --- the other layer kinds ------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_layer", "shape", "hand"),
    [
        # depthwise: 8x8 positions x 3 channels x 2 multipliers, 3x3 each, + bias
        (lambda: layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (8, 8, 3), 2 * 9 * 384 + 384),
        (lambda: layers.DepthwiseConv1D(3, use_bias=False), (10, 4), 2 * 3 * 32),
        # separable: that depthwise part, then a 1x1 conv from 6 to 5 channels, + bias
        (lambda: layers.SeparableConv2D(5, 3, padding="same", depth_multiplier=2), (8, 8, 3),
         2 * 9 * 6 * 64 + 2 * 6 * 5 * 64 + 5 * 64),
        # transposed: every one of the 4x4x3 inputs is scattered over 3x3x2 outputs
        (lambda: layers.Conv2DTranspose(2, 3, strides=2, padding="same"), (4, 4, 3), 2 * 9 * 48 * 2 + 8 * 8 * 2),
        (lambda: layers.Conv1DTranspose(2, 3, use_bias=False), (5, 3), 2 * 3 * 15 * 2),
        (lambda: layers.MaxPooling2D(2), (8, 8, 3), 4 * 48),
        (lambda: layers.AveragePooling2D(2, strides=1), (8, 8, 3), 4 * 147),
        (lambda: layers.MaxPooling1D(3), (9, 2), 3 * 6),
        (lambda: layers.GlobalAveragePooling2D(), (8, 8, 3), 192),
        (lambda: layers.GlobalMaxPooling1D(), (5, 4), 20),
        (lambda: layers.BatchNormalization(), (8, 8, 3), 2 * 192),
        (lambda: layers.LayerNormalization(), (5, 6), 7 * 30),
        (lambda: layers.LayerNormalization(center=False, scale=False), (5, 6), 5 * 30),
        (lambda: layers.GroupNormalization(groups=2), (4, 4), 7 * 16),
        (lambda: layers.Activation("relu"), (10,), 10),
        (lambda: layers.Activation("linear"), (10,), 0),
        (lambda: layers.Activation("softmax"), (10,), 30),
        (lambda: layers.Softmax(), (10,), 30),
        (lambda: layers.ReLU(), (10,), 10),
        (lambda: layers.Dense(10, activation="softmax"), (4,), 2 * 4 * 10 + 10 + 30),
        (lambda: layers.Rescaling(1 / 255), (4, 4, 1), 16),
        (lambda: layers.Rescaling(1 / 127.5, offset=-1), (4, 4, 1), 32),
    ],
    ids=lambda value: type(value()).__name__ if callable(value) else str(value),
)
def test_layer_matches_hand_count(make_layer: Callable[[], Any], shape: tuple[int, ...], hand: int):
    count = single_layer(make_layer(), shape)
    assert count.uncounted == ()
    assert count.total == hand


# Recurrent layers, 6 time steps of 3 features, 4 units: d + u = 7.
SIMPLE_RNN_STEP = 2 * 7 * 4 + 4 + 4
LSTM_STEP = 4 * (2 * 7 * 4 + 4 + 4) + 5 * 4
GRU_STEP = 3 * (2 * 7 * 4 + 4 + 4) + 5 * 4


@pytest.mark.parametrize(
    ("make_layer", "hand"),
    [
        (lambda: layers.SimpleRNN(4), 6 * SIMPLE_RNN_STEP),
        (lambda: layers.LSTM(4, return_sequences=True), 6 * LSTM_STEP),
        (lambda: layers.GRU(4), 6 * (GRU_STEP + 3 * 4)),  # reset_after: a second bias
        (lambda: layers.GRU(4, reset_after=False), 6 * GRU_STEP),
        (lambda: layers.RNN(layers.LSTMCell(4)), 6 * LSTM_STEP),
        # the second cell reads the first one's 4 outputs: d + u = 8
        (lambda: layers.RNN(layers.StackedRNNCells([layers.SimpleRNNCell(4), layers.SimpleRNNCell(2)])),
         6 * (SIMPLE_RNN_STEP + 2 * 6 * 2 + 2 + 2)),
        (lambda: layers.Bidirectional(layers.SimpleRNN(4)), 2 * 6 * SIMPLE_RNN_STEP),
        (lambda: layers.Bidirectional(layers.SimpleRNN(4), merge_mode="ave"), 2 * 6 * SIMPLE_RNN_STEP + 2 * 4),
        (lambda: layers.TimeDistributed(layers.Dense(5)), 6 * (2 * 3 * 5 + 5)),
    ],
    ids=["simple_rnn", "lstm", "gru", "gru-reset-before", "rnn-lstm-cell", "stacked-cells", "bidirectional",
         "bidirectional-ave", "time-distributed"],
)
def test_recurrent_layer_matches_hand_count(make_layer: Callable[[], Any], hand: int):
    check(single_layer(make_layer(), (6, 3)), hand)


def test_unknown_sequence_length_needs_input_shape():
    inputs = keras.Input(shape=(None, 3))
    model = keras.Model(inputs, layers.Dense(2)(layers.LSTM(4, name="encoder_lstm")(inputs)))
    with pytest.raises(ValueError, match="encoder_lstm.*time steps"):
        count_flops(model)
    check(count_flops(model, input_shape=(6, 3)), 6 * LSTM_STEP + 2 * 4 * 2 + 2)


def test_merge_layers_count_one_per_extra_input():
    first, second, third = (keras.Input(shape=(4,)) for _ in range(3))
    added = layers.Add()([first, second, third])  # 2 adds per element
    joined = layers.Concatenate()([added, first])  # free
    averaged = layers.Average()([first, second])  # an add and a scale per element
    product = layers.Multiply()([first, third])  # one per element
    count = count_flops(keras.Model([first, second, third], [joined, averaged, product]))
    check(count, 2 * 4 + 0 + 2 * 4 + 4)


def test_layers_that_only_move_data_are_free():
    inputs = keras.Input(shape=(4, 4, 1))
    x = layers.RandomFlip()(inputs)
    x = layers.RandomTranslation(0.1, 0.1)(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Cropping2D(1)(x)
    x = layers.UpSampling2D(2)(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Reshape((8, 8))(x)
    x = layers.Permute((2, 1))(x)
    x = layers.Flatten()(x)
    count = count_flops(keras.Model(inputs, x))
    assert count.uncounted == ()
    assert count.total == 0
    assert len(count.by_layer) == 9

    tokens = keras.Input(shape=(5,), dtype="int32")
    embedded = count_flops(keras.Model(tokens, layers.Embedding(100, 8)(tokens)))
    assert (embedded.total, embedded.uncounted) == (0, ())


def test_keras_ops_in_a_functional_graph():
    first, second = keras.Input(shape=(3, 4)), keras.Input(shape=(3, 4))
    summed = first + second  # 12 adds
    product = keras.ops.matmul(summed, np.ones((4, 5), dtype="float32"))  # 3x5 outputs of 4 multiply-adds
    count = count_flops(keras.Model([first, second], keras.ops.relu(product)))  # 15 relus
    check(count, 12 + 2 * 4 * 15 + 15)


# --- graph structure: nesting, sharing, trusted and unknown layers --------------------------


def test_nested_model_is_the_sum_of_its_parts():
    code = keras.Input(shape=(6,))
    inner = keras.Model(code, layers.Dense(2, name="out")(layers.Dense(4, activation="tanh", name="hidden")(code)),
                        name="inner")
    inputs = keras.Input(shape=(6,))
    outer = keras.Model(inputs, layers.Dense(3, name="head")(inner(inputs)))
    count = count_flops(outer)

    inner_count = count_flops(inner)
    head = 2 * 2 * 3 + 3
    check(count, inner_count.total + head)
    assert inner_count.total == (2 * 6 * 4 + 4 + 4) + (2 * 4 * 2 + 2)
    assert [path for path, _, _ in count.by_layer] == ["inner/hidden", "inner/out", "head"]

    sequential = keras.Sequential([keras.Input(shape=(6,)), layers.Dense(4, name="first")], name="block")
    wrapped = keras.Input(shape=(6,))
    check(count_flops(keras.Model(wrapped, sequential(wrapped))), 2 * 6 * 4 + 4)


def test_shared_layer_counts_once_per_call():
    shared = layers.Dense(4, name="shared")
    left, right = keras.Input(shape=(6,)), keras.Input(shape=(6,))
    outputs = layers.Add()([shared(left), shared(right)])
    count = count_flops(keras.Model([left, right], outputs))
    per_call = 2 * 6 * 4 + 4
    check(count, 2 * per_call + 4)
    assert [path for path, _, _ in count.by_layer].count("shared") == 2


def test_model_with_flops_per_example_is_trusted():
    rbm = RBM(n_visible=6, n_hidden=4)
    check(count_flops(rbm), 2 * 6 * 4 + 4 + 4)
    assert count_flops(rbm).by_layer == (("rbm", "RBM", 56),)


class Costly(keras.layers.Layer):
    """Identity that claims a known cost; the counter must take its word."""

    def flops_per_example(self) -> int:
        return 123

    def call(self, inputs: Any) -> Any:
        return inputs


class Scale(keras.layers.Layer):
    """A learned per-feature scale the counter has no rule for."""

    def build(self, input_shape: Any) -> None:
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs: Any) -> Any:
        return inputs * self.scale


def test_custom_layer_with_flops_per_example_is_trusted():
    inputs = keras.Input(shape=(4,))
    check(count_flops(keras.Model(inputs, layers.Dense(2)(Costly(name="costly")(inputs)))), 123 + 2 * 4 * 2 + 2)


def test_unknown_layer_is_reported_and_left_out():
    inputs = keras.Input(shape=(4,))
    x = Scale(name="scale")(inputs)
    x = layers.Lambda(lambda tensor: tensor * 2, name="double")(x)
    count = count_flops(keras.Model(inputs, layers.Dense(2, name="head")(x)))
    assert count.uncounted == ("scale (Scale)", "double (Lambda)")
    assert count.total == 2 * 4 * 2 + 2
    assert count.by_layer == (("head", "Dense", 18),)
    assert "not counted: scale (Scale), double (Lambda)" in describe(count)


class Tiny(keras.Model):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dense = layers.Dense(3)

    def call(self, inputs: Any) -> Any:
        return self.dense(inputs)


def test_subclassed_model_without_a_count_is_reported_or_needs_a_shape():
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(Tiny(name="tiny"))
    count = count_flops(Tiny(name="tiny"), input_shape=(4,))
    assert (count.total, count.uncounted) == (0, ("tiny (Tiny)",))


def test_unbuilt_sequential_and_bare_layer_use_input_shape():
    model = keras.Sequential([layers.Conv2D(3, 3), layers.Flatten(), layers.Dense(2)])
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(model)
    check(count_flops(model, input_shape=(8, 8, 1)), (2 * 9 * 1 * 108 + 108) + (2 * 108 * 2 + 2))
    check(count_flops(layers.Dense(3), input_shape=(4,)), 2 * 4 * 3 + 3)


@pytest.mark.parametrize("bad", [(0, 3), (-1,), ("a", 2), (2.5,), ()])
def test_bad_input_shape_is_refused(bad: tuple[Any, ...]):
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(layers.Dense(3), input_shape=bad)


def test_input_shape_must_fit_the_graph():
    inputs = keras.Input(shape=(4,))
    with pytest.raises(ValueError, match=r"input_shape=\(5,\)"):
        count_flops(keras.Model(inputs, layers.Dense(2)(inputs)), input_shape=(5,))


def test_describe_summarises():
    inputs = keras.Input(shape=(1000,))
    count = count_flops(keras.Model(inputs, layers.Dense(600, use_bias=False)(inputs)))
    assert describe(count) == "1.20 MFLOPs per example (forward); 1 layer"


# --- the project's models ------------------------------------------------------------------

IMAGE = {"input_shape": (28, 28, 1)}
BUILDERS = {
    "mlp": {**IMAGE, "num_classes": 10, "hidden_units": (16,)},
    "cnn": {**IMAGE, "num_classes": 10, "filters": (4, 8), "dense_units": 16, "augment_shift": 0.1},
    "autoencoder": {**IMAGE, "hidden_units": (16, 8)},
    "conv_autoencoder": {**IMAGE, "kind": "conv", "filters": (4, 8)},
    "dbn_classifier": {**IMAGE, "num_classes": 10, "layers": (16, 8)},
    "rbm": {"n_visible": 6, "n_hidden": 4},
}


def build(key: str) -> Any:
    return build_model(key.removeprefix("conv_"), **BUILDERS[key])


@pytest.mark.parametrize("key", sorted(BUILDERS))
def test_project_models_are_fully_counted(key: str):
    count = count_flops(build(key))
    assert count.uncounted == ()
    assert count.total > 0
    assert count.total == sum(flops for _, _, flops in count.by_layer)


def test_dbn_classifier_matches_hand_count():
    # 784 -> 16 -> 8 sigmoid layers, then a 10-way softmax (3 per output)
    hand = (2 * 784 * 16 + 16 + 16) + (2 * 16 * 8 + 8 + 8) + (2 * 8 * 10 + 10 + 3 * 10)
    check(count_flops(build("dbn_classifier")), hand)


def test_cnn_matches_hand_count():
    # conv_1_1: 28x28x4 without bias (batch norm follows); pool to 14x14; conv_2_1: 14x14x8; pool to 7x7
    block_1 = 2 * 9 * 1 * 3136 + 2 * 3136 + 3136 + 4 * 784
    block_2 = 2 * 9 * 4 * 1568 + 2 * 1568 + 1568 + 4 * 392
    head = (2 * 392 * 16 + 16 + 16) + (2 * 16 * 10 + 10 + 3 * 10)
    check(count_flops(build("cnn")), block_1 + block_2 + head)


@pytest.mark.parametrize("key", ["cnn", "conv_autoencoder"])
def test_mixed_precision_gives_the_same_count(key: str):
    plain = count_flops(build(key))
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = count_flops(build(key))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed == plain
