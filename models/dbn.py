"""Deep belief net: a stack of RBMs trained greedily, then unrolled into a classifier.

Greedy layer-wise pretraining (Hinton, Osindero & Teh 2006): the first RBM models the
pixels; each next RBM models the hidden probabilities of the one below. The stack is
then "unrolled" into a feed-forward net whose sigmoid layers start from the RBMs'
weights and hidden biases, topped by a softmax layer, and fine-tuned with
backpropagation. ``build_dbn_classifier(..., rbms=None)`` gives the same net with
random weights: the baseline pretraining is compared against.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from models.rbm import RBM
from models.registry import register_model


def propagate(rbms: Sequence[RBM], visible: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Hidden probabilities at the top of ``rbms`` for ``visible`` (what the next layer learns)."""
    values = np.asarray(visible, dtype="float32")
    for rbm in rbms:
        values = np.concatenate([keras.ops.convert_to_numpy(rbm(values[start:start + batch_size]))
                                 for start in range(0, len(values), batch_size)]) if len(values) else values
    return values


@register_model("dbn_classifier")
def build_dbn_classifier(
    input_shape: Sequence[int],
    num_classes: int,
    layers: Sequence[int] = (500, 500),
    rbms: Sequence[RBM] | None = None,
    dropout_rate: float = 0.0,
    seed: int | None = None,
    name: str = "dbn_classifier",
) -> keras.Model:
    """Flatten -> sigmoid dense layers of ``layers`` -> softmax.

    With ``rbms`` (trained, one per layer, sizes matching) the dense layers start from
    their weights and hidden biases; without, from Keras' default (Glorot) init with
    ``seed`` (each layer its own stream, distinct across neighbouring seeds).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: a classifier needs >= 2 classes")
    if not layers:
        raise ValueError("layers: at least one hidden layer")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate={dropout_rate}: must be in [0, 1)")
    n_visible = int(np.prod(input_shape))
    sizes = [n_visible, *(int(units) for units in layers)]
    if rbms is not None:
        found = [(rbm.n_visible, rbm.n_hidden) for rbm in rbms]
        wanted = list(zip(sizes[:-1], sizes[1:], strict=True))
        if found != wanted:
            raise ValueError(f"RBM stack shapes {found} do not match the classifier's layers {wanted}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    dense_layers = []
    for index, units in enumerate(layers, start=1):
        layer = keras.layers.Dense(
            int(units), activation="sigmoid", name=f"dense_{index}",
            kernel_initializer=keras.initializers.GlorotUniform(seed=None if seed is None else seed * 64 + index))
        x = layer(x)
        dense_layers.append(layer)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name=f"dropout_{index}")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities",
        kernel_initializer=keras.initializers.GlorotUniform(seed=None if seed is None else seed * 64))(x)
    model = keras.Model(inputs, outputs, name=name)
    for layer, rbm in zip(dense_layers, rbms or (), strict=False):
        layer.set_weights([keras.ops.convert_to_numpy(rbm.kernel), keras.ops.convert_to_numpy(rbm.hidden_bias)])
    return model
