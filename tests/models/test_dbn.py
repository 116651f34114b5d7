"""Deep belief net: propagation through the RBM stack and the
unrolled classifier that starts from the RBMs' weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models import build_model
from models.dbn import build_dbn_classifier, propagate
from models.rbm import RBM

INPUT_SHAPE = (4, 5, 1)  # 20 pixels
N_PIXELS = 20


def pixels(n: int = 12, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, N_PIXELS)) > 0.5).astype("float32")


def randomise(rbms: list[RBM], seed: int = 0) -> list[RBM]:
    """Large random parameters, so that a wrong wiring cannot go unnoticed."""
    rng = np.random.default_rng(seed)
    for rbm in rbms:
        rbm.kernel.assign(rng.normal(0, 1, (rbm.n_visible, rbm.n_hidden)).astype("float32"))
        rbm.visible_bias.assign(rng.normal(0, 1, rbm.n_visible).astype("float32"))
        rbm.hidden_bias.assign(rng.normal(0, 1, rbm.n_hidden).astype("float32"))
    return rbms


def rbm_stack(*sizes: int, seed: int = 0, pixels: int = N_PIXELS) -> list[RBM]:
    """Untrained RBMs ``pixels -> sizes[0] -> sizes[1] ...``."""
    widths = [pixels, *sizes]
    return [RBM(widths[i], widths[i + 1], seed=seed + i, name=f"rbm_layer_{i + 1}") for i in range(len(sizes))]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def test_propagate_chains_the_hidden_probabilities():
    stack = randomise(rbm_stack(8, 5, seed=0), seed=1)
    x = pixels(23)
    manual = x
    for rbm in stack:
        manual = keras.ops.convert_to_numpy(rbm(manual))
    # Batches smaller than the data, with a ragged last one, give the same result.
    for batch_size in (1024, 7):
        top = propagate(stack, x, batch_size=batch_size)
        assert top.shape == (23, 5)
        np.testing.assert_allclose(top, manual, rtol=1e-6, atol=1e-7)
    # Against numpy formulas too.
    expected = x
    for rbm in stack:
        expected = sigmoid(expected @ rbm.kernel.numpy() + rbm.hidden_bias.numpy())
    np.testing.assert_allclose(propagate(stack, x), expected, rtol=1e-5, atol=1e-6)
    # Empty stack: the input itself; empty input: nothing.
    np.testing.assert_array_equal(propagate([], x), x)
    assert propagate(stack, np.zeros((0, N_PIXELS), dtype="float32")).shape[0] == 0


def test_classifier_from_rbms_carries_their_weights_and_hidden_activations():
    stack = randomise(rbm_stack(8, 5, seed=0), seed=3)
    model = build_dbn_classifier(INPUT_SHAPE, num_classes=3, layers=(8, 5), rbms=stack, seed=0)
    for index, rbm in enumerate(stack, start=1):
        kernel, bias = model.get_layer(f"dense_{index}").get_weights()
        np.testing.assert_array_equal(kernel, rbm.kernel.numpy())
        np.testing.assert_array_equal(bias, rbm.hidden_bias.numpy())
        assert model.get_layer(f"dense_{index}").get_config()["activation"] == "sigmoid"
    x = pixels(9)
    top = keras.Model(model.inputs, model.get_layer("dense_2").output)
    np.testing.assert_allclose(top.predict(x.reshape(9, *INPUT_SHAPE), verbose=0), propagate(stack, x),
                               rtol=1e-5, atol=1e-6)
    probabilities = model.predict(x.reshape(9, *INPUT_SHAPE), verbose=0)
    assert probabilities.shape == (9, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("probabilities").units == 3


def test_classifier_without_rbms_is_seeded_glorot():
    def weights(seed):
        return build_dbn_classifier(INPUT_SHAPE, num_classes=4, layers=(6, 3), seed=seed).get_weights()

    first, again, other = weights(7), weights(7), weights(8)
    assert [w.shape for w in first] == [(20, 6), (6,), (6, 3), (3,), (3, 4), (4,)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], other[0])
    # Glorot uniform kernels, zero biases.
    limit = np.sqrt(6 / (20 + 6))
    assert np.abs(first[0]).max() <= limit and np.abs(first[0]).max() > 0.5 * limit
    np.testing.assert_array_equal(first[1], 0.0)
    # Layers of a seeded net do not share one initial kernel pattern.
    assert not np.allclose(first[2][:3, :3], first[4][:3, :3])


def test_classifier_through_the_registry_with_dropout():
    model = build_model("dbn_classifier", input_shape=INPUT_SHAPE, num_classes=2, layers=(4,), dropout_rate=0.3,
                        seed=0)
    assert [layer.name for layer in model.layers if "dropout" in layer.name] == ["dropout_1"]
    assert model.output_shape == (None, 2)
    no_dropout = build_model("dbn_classifier", input_shape=INPUT_SHAPE, num_classes=2, layers=(4,))
    assert not [layer for layer in no_dropout.layers if "dropout" in layer.name]


@pytest.mark.parametrize("layers, stack_layers", [((8, 5), (8, 6)), ((8, 5), (8,)), ((8,), (8, 5)), ((6,), (8,))])
def test_classifier_rejects_rbms_that_do_not_match_its_layers(layers, stack_layers):
    stack = rbm_stack(*stack_layers)
    with pytest.raises(ValueError, match="do not match"):
        build_dbn_classifier(INPUT_SHAPE, num_classes=3, layers=layers, rbms=stack)


def test_classifier_rejects_rbms_for_another_input_size():
    stack = rbm_stack(8, pixels=N_PIXELS + 1)
    with pytest.raises(ValueError, match="do not match"):
        build_dbn_classifier(INPUT_SHAPE, num_classes=3, layers=(8,), rbms=stack)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 1}, "num_classes=1"),
    ({"num_classes": 0}, "num_classes=0"),
    ({"layers": ()}, "layers"),
    ({"dropout_rate": 1.0}, "dropout_rate=1.0"),
    ({"dropout_rate": -0.1}, "dropout_rate=-0.1"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_dbn_classifier(**{"input_shape": INPUT_SHAPE, "num_classes": 3, "layers": (4,), **kwargs})
