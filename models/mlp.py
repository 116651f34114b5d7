"""Multilayer perceptron: flatten, dense hidden layers with dropout, softmax output."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from models.registry import register_model


@register_model("mlp")
def build_mlp(
    input_shape: Sequence[int],
    num_classes: int,
    hidden_units: Sequence[int] = (512, 256),
    activation: str = "relu",
    dropout_rate: float = 0.3,
    name: str = "mlp",
) -> keras.Model:
    """A fully connected classifier; ``num_classes`` softmax outputs.

    With ``hidden_units=()`` and ``num_classes=1`` it is a single sigmoid neuron,
    i.e. logistic regression (claim C1).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes}: must be >= 1")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate={dropout_rate}: must be in [0, 1)")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for index, units in enumerate(hidden_units, start=1):
        if units < 1:
            raise ValueError(f"hidden_units[{index - 1}]={units}: must be >= 1")
        x = keras.layers.Dense(units, activation=activation, name=f"dense_{index}")(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name=f"dropout_{index}")(x)
    output_activation = "sigmoid" if num_classes == 1 else "softmax"
    # float32 output keeps softmax numerically safe under a mixed-precision policy.
    outputs = keras.layers.Dense(num_classes, activation=output_activation, dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)
