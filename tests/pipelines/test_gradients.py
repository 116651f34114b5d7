"""Per-layer gradient norms: the vanishing-gradient signal, when records are taken, exact
values, no effect on training, names, and the figures."""

from __future__ import annotations

import keras
import matplotlib.pyplot as plt
import numpy as np
import pytest
import tensorflow as tf
from matplotlib.figure import Figure

from pipelines.gradients import GradientNorms, heatmap, metric_keys, ratio_plot


def _data(seed: int = 0, examples: int = 64, features: int = 16, outputs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(examples, features)).astype("float32"),
            rng.normal(size=(examples, outputs)).astype("float32"))


def _mlp(activation: str, initializer: str, depth: int = 12, width: int = 32) -> keras.Model:
    hidden = [keras.layers.Dense(width, activation, kernel_initializer=initializer, name=f"hidden_{index}")
              for index in range(depth)]
    model = keras.Sequential([keras.Input((16,)), *hidden, keras.layers.Dense(1, name="out")])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _step_zero(model: keras.Model, x: np.ndarray, y: np.ndarray, **options) -> GradientNorms:
    callback = GradientNorms(x, y, **options)
    callback.set_model(model)
    callback.on_train_begin()
    return callback


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deep_sigmoid_net_vanishes_where_relu_with_he_init_does_not(seed):
    # Measured first/last ratios: sigmoid + glorot ~1e-8, relu + he_normal 0.1-0.5 (seeds 0..2).
    x, y = _data(seed)
    keras.utils.set_random_seed(seed)
    sigmoid = _step_zero(_mlp("sigmoid", "glorot_uniform"), x, y)
    keras.utils.set_random_seed(seed)
    relu = _step_zero(_mlp("relu", "he_normal"), x, y)

    assert len(sigmoid.layer_names) == 13
    assert sigmoid.records[0][0] == 0
    assert sigmoid.first_last_ratio() < 1e-3
    assert relu.first_last_ratio() > 1e-2


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"steps": [2, 5, 8]}, [0, 2, 5, 8]),
        ({"every": 3}, [0, 3, 6]),
        ({"steps": [1], "every": 4}, [0, 1, 4, 8]),
        ({}, [0, 4, 8]),  # neither: start and the end of each epoch
    ],
)
def test_records_at_start_and_at_the_asked_steps_across_epochs(options, expected):
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = _mlp("relu", "he_normal", depth=2, width=8)
    callback = GradientNorms(x[:8], y[:8], **options)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[callback])  # 4 updates per epoch

    assert [step for step, _ in callback.records] == expected
    names, steps, norms = callback.matrix()
    assert names == callback.layer_names == ["hidden_0", "hidden_1", "out"]
    assert steps == expected
    assert norms.shape == (3, len(expected))
    assert np.isfinite(norms).all() and (norms > 0).all()
    # The weights move between records, so the gradients do too.
    assert not np.allclose(norms[:, 0], norms[:, -1])


def test_a_resumed_fit_continues_the_step_count_and_multi_step_calls_record_at_their_end():
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = _mlp("relu", "he_normal", depth=2, width=8)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    resumed = GradientNorms(x[:8], y[:8], every=2)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[resumed])
    assert [step for step, _ in resumed.records] == [4, 6, 8]
    with pytest.raises(ValueError, match=r"no record at step 0; recorded steps: \[4, 6, 8\]"):
        resumed.first_last_ratio(0)

    keras.utils.set_random_seed(0)
    model = _mlp("relu", "he_normal", depth=2, width=8)
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    chunked = GradientNorms(x[:8], y[:8], steps=[3, 4])
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[chunked])
    # Callbacks only see steps 2 and 4: step 3 is recorded at 4, once.
    assert [step for step, _ in chunked.records] == [0, 4]


def test_recording_does_not_change_training():
    x, y = _data(outputs=1)

    def train(with_callback: bool) -> tuple[list[np.ndarray], GradientNorms | None]:
        keras.utils.set_random_seed(7)
        model = keras.Sequential([
            keras.Input((16,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(1),
        ])
        model.compile(optimizer="adam", loss="mse")
        callback = GradientNorms(x[:32], y[:32], every=1) if with_callback else None
        keras.utils.set_random_seed(7)
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[callback] if callback else [])
        return [np.array(weight) for weight in model.weights], callback

    plain, _ = train(False)
    recorded, callback = train(True)
    assert len(callback.records) == 9
    assert len(plain) == len(recorded)
    for before, after in zip(plain, recorded, strict=True):
        np.testing.assert_array_equal(before, after)


def test_a_record_restores_moving_statistics_and_seed_states_it_used():
    x, y = _data()
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="first"), keras.layers.BatchNormalization(),
                              keras.layers.Dropout(0.5), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    callback = GradientNorms(x, y)
    callback.set_model(model)
    before = {variable.path: np.array(variable) for variable in model.non_trainable_variables}
    first = callback.compute_norms()
    after = {variable.path: np.array(variable) for variable in model.non_trainable_variables}
    assert before.keys() == after.keys() and len(before) == 3  # moving mean, moving variance, dropout seed
    for path, value in before.items():
        np.testing.assert_array_equal(value, after[path], err_msg=path)
    # Same seed state and statistics again, so the very same dropout mask and gradients.
    assert callback.compute_norms() == first
    # Training mode really is used: inference (no dropout, moving statistics) gives other gradients.
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.mean_squared_error(y, model(x, training=False)))
    inference = float(tf.norm(tape.gradient(loss, model.layers[0].kernel.value)))
    assert not np.isclose(first["first"], inference, rtol=1e-3)


@pytest.mark.parametrize("loss", [None, "mse", keras.losses.MeanSquaredError(), keras.losses.mean_squared_error])
def test_norm_matches_the_hand_computed_gradient_of_a_dense_layer(loss):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 5)).astype("float32")
    y = rng.normal(size=(8, 3)).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="only")])
    model.compile(optimizer="sgd", loss="mae" if loss is not None else "mse")  # an override must win
    kernel, bias = (np.array(weight, dtype=np.float64) for weight in model.layers[0].weights)

    # L = mean over examples and outputs of (xW + b - y)^2  =>  dL/dW = 2 x^T (xW + b - y) / (N * outputs)
    residual = x.astype(np.float64) @ kernel + bias - y
    expected = np.linalg.norm(2.0 * x.T.astype(np.float64) @ residual / residual.size)

    callback = _step_zero(model, x, y, loss=loss)
    assert callback.layer_names == ["only"]
    np.testing.assert_allclose(callback.records[0][1]["only"], expected, rtol=1e-5)


def test_recurrent_layers_record_kernel_and_recurrent_kernel():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    model = keras.Sequential([
        keras.Input((5, 3)),
        keras.layers.LSTM(4, return_sequences=True, name="lstm"),
        keras.layers.Bidirectional(keras.layers.GRU(2, name="gru"), name="bi"),
        keras.layers.Dense(1, name="out"),
    ])
    model.compile(optimizer="sgd", loss="mse")
    callback = _step_zero(model, x, y)
    assert callback.layer_names == [
        "lstm/kernel", "lstm/recurrent_kernel",
        "bi/forward_gru/gru_cell/kernel", "bi/forward_gru/gru_cell/recurrent_kernel",
        "bi/backward_gru/gru_cell/kernel", "bi/backward_gru/gru_cell/recurrent_kernel",
        "out",
    ]
    assert all(value > 0 for value in callback.records[0][1].values())


def test_conv_family_and_nested_models_are_named_in_forward_order():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="head")], name="inner")
    inputs = keras.Input((8, 8, 2))
    hidden = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    hidden = keras.layers.SeparableConv2D(4, 3, name="sep")(hidden)
    hidden = keras.layers.DepthwiseConv2D(3, name="depthwise")(hidden)
    hidden = keras.layers.Conv2DTranspose(2, 3, name="up")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    hidden = keras.layers.Dense(4, name="dense")(hidden)
    model = keras.Model(inputs, inner(hidden))
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 2)).astype("float32")
    callback = _step_zero(model, x, np.zeros((4, 3), "float32"), max_layers=None)
    assert callback.layer_names == ["conv", "sep/depthwise_kernel", "sep/pointwise_kernel", "depthwise", "up",
                                    "dense", "inner/head"]

    thinned = _step_zero(model, x, np.zeros((4, 3), "float32"), max_layers=3)
    assert thinned.layer_names == ["conv", "depthwise", "inner/head"]


def test_on_record_gets_sanitised_metric_names_and_the_step():
    x, y = _data()
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(4, name="enc>hidden"),
                              keras.layers.Dense(1, name="out")])
    model.compile(optimizer="sgd", loss="mse")
    calls: list[tuple[int, dict[str, float]]] = []
    callback = GradientNorms(x[:8], y[:8], steps=[2], on_record=lambda step, metrics: calls.append((step, metrics)))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback])
    assert [step for step, _ in calls] == [0, 2]
    assert list(calls[0][1]) == ["grad_norm.enc_hidden", "grad_norm.out"]
    assert list(calls[1][1].values()) == list(callback.records[1][1].values())


def test_metric_keys_are_accepted_by_mlflow_and_unique():
    from mlflow.utils.validation import _validate_metric_name

    keys = metric_keys(["a:b", "a_b", "inner//x/", "..", "lstm/recurrent_kernel", "élan"])
    assert keys == ["grad_norm.a_b", "grad_norm.a_b_2", "grad_norm.inner/x", "grad_norm._",
                    "grad_norm.lstm/recurrent_kernel", "grad_norm._lan"]
    for key in keys:
        _validate_metric_name(key)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((4, 2)), np.zeros((3, 1)), r"len\(x\)=4, len\(y\)=3"),
        (np.zeros((0, 2)), np.zeros((0, 1)), r"len\(x\)=0, len\(y\)=0"),
        (np.float32(1.0), np.zeros((1, 1)), r"len\(x\)=0, len\(y\)=1"),
    ],
)
def test_bad_batches_are_refused_with_their_sizes(x, y, message):
    with pytest.raises(ValueError, match=message):
        GradientNorms(x, y)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"every": 0}, "every must be a positive integer or None, got 0"),
        ({"steps": [1, -2]}, r"steps must be integers >= 0, got -2"),
        ({"max_layers": 0}, "max_layers must be a positive integer or None, got 0"),
        ({"loss": "no_such_loss"}, "loss 'no_such_loss' is not a Keras loss name"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        GradientNorms(np.zeros((2, 1)), np.zeros((2, 1)), **options)


def test_non_finite_gradients_are_kept_not_raised():
    x, y = _data()
    # tanh, not relu: the CPU relu maps NaN to 0 and would hide it.
    model = _mlp("tanh", "glorot_uniform", depth=2, width=8)
    first = model.layers[0]
    first.kernel.assign(np.full(first.kernel.shape, np.nan, "float32"))
    callback = _step_zero(model, x, y)
    norms = callback.records[0][1]
    assert all(np.isnan(value) for value in norms.values())
    assert np.isnan(callback.first_last_ratio())


def test_runs_under_mixed_precision_with_a_loss_scale_optimizer():
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, "relu", dtype="mixed_float16"),
                              keras.layers.Dense(1, dtype="mixed_float16")])
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()), loss="mse")
    callback = GradientNorms(x[:16], y[:16], every=2)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback])
    assert [step for step, _ in callback.records] == [0, 2]
    assert all(np.isfinite(value) and value > 0 for _, record in callback.records for value in record.values())


def test_runs_inside_a_one_device_mirrored_strategy():
    x, y = _data()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, "relu"),
                                  keras.layers.BatchNormalization(), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
    plain = _step_zero(model, x[:16], y[:16]).records[0][1]
    callback = GradientNorms(x[:16], y[:16], every=1)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback])
    assert [step for step, _ in callback.records] == [0, 1, 2]
    # Same weights at step 0 in and out of the strategy's bookkeeping: same norms.
    assert callback.records[0][1] == pytest.approx(plain, rel=1e-5)


def test_heatmap_has_one_row_per_layer_and_masks_nan_and_zero():
    names = [f"dense_{index}" for index in range(5)]
    steps = [0, 10, 20]
    norms = np.array([[1e-6, 1e-5, np.nan], [1e-4, 0.0, 1e-3], [1e-2] * 3, [np.inf, 1.0, 1.0], [0.1, 0.2, 0.3]])
    figure = heatmap(names, steps, norms, "deep sigmoid MLP")
    try:
        assert isinstance(figure, Figure)
        axis = figure.axes[0]
        (image,) = axis.get_images()
        data = image.get_array()
        assert data.shape == (5, 3)
        assert data.mask.tolist() == [[False, False, True], [False, True, False], [False] * 3, [True, False, False],
                                      [False] * 3]
        assert data[0, 0] == pytest.approx(-6.0)
        assert [label.get_text() for label in axis.get_yticklabels()] == names
        assert [label.get_text() for label in axis.get_xticklabels()] == ["0", "10", "20"]
        assert figure.axes[1].get_ylabel() == "log10 |dL/dW|"
        assert any(text.get_text() == "first/last at step 0: 1.0e-05" for text in axis.texts)
        assert axis.get_title() == "deep sigmoid MLP"
    finally:
        plt.close(figure)


def test_heatmap_thins_layer_labels_and_refuses_a_mismatched_matrix():
    names = [f"layer_{index}" for index in range(100)]
    figure = heatmap(names, [0], np.ones((100, 1)), "very deep")
    try:
        assert figure.axes[0].get_images()[0].get_array().shape == (100, 1)
        assert 20 <= len(figure.axes[0].get_yticklabels()) <= 40
    finally:
        plt.close(figure)
    with pytest.raises(ValueError, match=r"shape \(2, 1\), got shape \(3, 1\)"):
        heatmap(["a", "b"], [0], np.ones((3, 1)), "bad")


def test_ratio_plot_draws_one_line_per_model():
    figure = ratio_plot({"plain": [1e-8, 1e-5, 1e-2, np.nan, 0.0], "residual": [0.1, 0.2, 0.3]}, "step 0")
    try:
        assert isinstance(figure, Figure)
        axis = figure.axes[0]
        assert [line.get_label() for line in axis.get_lines()] == ["plain", "residual"]
        assert axis.get_yscale() == "log"
    finally:
        plt.close(figure)
    with pytest.raises(ValueError, match="at least one model"):
        ratio_plot({}, "empty")


def test_input_gradients_measure_each_time_step_at_initialisation_and_after_training():
    from pipelines.gradients import InputGradients

    rng = np.random.default_rng(0)
    x = rng.random((32, 30, 2)).astype("float32")
    y = x[:, 0, 0] + x[:, -1, 0]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((30, 2)), keras.layers.SimpleRNN(8), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    callback = InputGradients(x, y)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    assert set(callback.records) == {"initialisation", "trained"}
    at_start = callback.records["initialisation"]
    assert len(at_start) == 30
    # a simple RNN: the loss's gradient fades with the distance from the end of the sequence
    assert at_start[0] < at_start[-1] / 10
    with pytest.raises(ValueError, match="time steps"):
        InputGradients(x[:, :, 0], y)


def test_records_inside_a_fit_under_mirrored_strategy():
    """The full profiles fit under MirroredStrategy: the recorder's gradients run in the
    replica context there (outside it TensorFlow refuses distributed variables)."""
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 6)).astype("float32"), rng.integers(0, 3, 32)
    with tf.distribute.MirroredStrategy().scope():
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu"),
                                  keras.layers.Dense(3, activation="softmax")])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        recorder = GradientNorms(x[:8], y[:8], every=2)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[recorder])
    names, steps, norms = recorder.matrix()
    assert steps[0] == 0 and len(steps) >= 2 and len(names) == 2
    assert np.all(np.isfinite(norms)) and np.all(norms > 0)
