"""One dense softmax layer: logistic regression as a Keras model."""

import keras

from models.registry import register_model


@register_model("toy_logistic")
def build_toy_logistic(input_dim: int, num_classes: int) -> keras.Model:
    inputs = keras.Input((input_dim,), name="features")
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax", name="dense")(inputs))
