"""Convolutional classifier as the talk describes it: conv blocks with max-pooling,
then a dense head."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from models.registry import register_model


@register_model("cnn")
def build_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    filters: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    convs_per_block: int = 1,
    batch_norm: bool = True,
    dense_units: int = 128,
    activation: str = "relu",
    dropout_rate: float = 0.4,
    augment_shift: float = 0.0,
    name: str = "cnn",
) -> keras.Model:
    """Each entry of ``filters`` adds a block: ``convs_per_block`` same-padded convs
    (each optionally batch-normalised), then a 2x2 max-pool. The first conv layer is named ``conv_1_1`` so its filters can be drawn.

    ``augment_shift`` > 0 inserts a random translation that only acts in training.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: must be >= 2")
    if kernel_size < 1:
        raise ValueError(f"kernel_size={kernel_size}: must be >= 1")
    if convs_per_block < 1:
        raise ValueError(f"convs_per_block={convs_per_block}: must be >= 1")
    if not filters:
        raise ValueError("filters=(): at least one conv block is needed")
    if not 0.0 <= augment_shift <= 0.5:
        raise ValueError(f"augment_shift={augment_shift}: must be in [0, 0.5]")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    if augment_shift:
        x = keras.layers.RandomTranslation(augment_shift, augment_shift, fill_mode="constant", name="shift")(x)
    for block, width in enumerate(filters, start=1):
        if width < 1:
            raise ValueError(f"filters[{block - 1}]={width}: must be >= 1")
        for conv in range(1, convs_per_block + 1):
            x = keras.layers.Conv2D(
                width, kernel_size, padding="same", use_bias=not batch_norm, name=f"conv_{block}_{conv}"
            )(x)
            if batch_norm:
                x = keras.layers.BatchNormalization(name=f"bn_{block}_{conv}")(x)
            x = keras.layers.Activation(activation, name=f"act_{block}_{conv}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool_{block}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if dense_units:
        x = keras.layers.Dense(dense_units, activation=activation, name="dense")(x)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)
