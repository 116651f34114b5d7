"""Autoencoders: an encoder squeezes the image into a small code (default 10 numbers,
as in the talk), a decoder rebuilds the image from it; trained to reproduce the input.

The model's sub-models are layers named ``encoder`` and ``decoder``:
``model.get_layer("encoder")(images)`` gives the codes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras

from models.registry import register_model

KINDS = ("dense", "conv")


def _check_units(name: str, values: Sequence[int]) -> None:
    for index, units in enumerate(values):
        if units < 1:
            raise ValueError(f"{name}[{index}]={units}: must be >= 1")


@register_model("autoencoder")
def build_autoencoder(
    input_shape: Sequence[int],
    bottleneck: int = 10,
    kind: str = "dense",
    hidden_units: Sequence[int] = (512, 128),
    filters: Sequence[int] = (32, 64),
    activation: str = "relu",
    name: str = "autoencoder",
) -> keras.Model:
    """Image -> ``bottleneck`` linear code -> image with pixels in [0, 1] (sigmoid).

    ``kind="dense"``: fully connected layers of ``hidden_units`` (mirrored in the
    decoder). ``kind="conv"``: stride-2 convolutions of ``filters`` down, a dense code,
    and stride-2 transposed convolutions ("deconvolutions") back up; the image side must
    be divisible by ``2 ** len(filters)``.
    """
    shape = tuple(int(side) for side in input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape={shape}: expected (height, width, channels)")
    if bottleneck < 1:
        raise ValueError(f"bottleneck={bottleneck}: must be >= 1")
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
    pixels = math.prod(shape)
    inputs = keras.Input(shape=shape, name="image")
    code_inputs = keras.Input(shape=(bottleneck,), name="code")
    if kind == "dense":
        _check_units("hidden_units", hidden_units)
        x = keras.layers.Flatten(name="flatten")(inputs)
        for index, units in enumerate(hidden_units, start=1):
            x = keras.layers.Dense(units, activation=activation, name=f"encode_{index}")(x)
        code = keras.layers.Dense(bottleneck, name="code")(x)
        y = code_inputs
        for index, units in enumerate(reversed(tuple(hidden_units)), start=1):
            y = keras.layers.Dense(units, activation=activation, name=f"decode_{index}")(y)
        y = keras.layers.Dense(pixels, activation="sigmoid", dtype="float32", name="pixels")(y)
        outputs = keras.layers.Reshape(shape, name="image_out")(y)
    else:
        _check_units("filters", filters)
        factor = 2 ** len(filters)
        if shape[0] % factor or shape[1] % factor:
            raise ValueError(f"input_shape={shape}: with {len(filters)} stride-2 conv layers the sides "
                             f"must be divisible by {factor}")
        x = inputs
        for index, count in enumerate(filters, start=1):
            x = keras.layers.Conv2D(count, 3, strides=2, padding="same", activation=activation,
                                    name=f"conv_{index}")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        code = keras.layers.Dense(bottleneck, name="code")(x)
        small = (shape[0] // factor, shape[1] // factor, int(filters[-1]))
        y = keras.layers.Dense(math.prod(small), activation=activation, name="expand")(code_inputs)
        y = keras.layers.Reshape(small, name="unflatten")(y)
        for index, count in enumerate(reversed(tuple(filters[:-1])), start=1):
            y = keras.layers.Conv2DTranspose(count, 3, strides=2, padding="same", activation=activation,
                                             name=f"deconv_{index}")(y)
        outputs = keras.layers.Conv2DTranspose(shape[2], 3, strides=2, padding="same", activation="sigmoid",
                                               dtype="float32", name="image_out")(y)
    encoder = keras.Model(inputs, code, name="encoder")
    decoder = keras.Model(code_inputs, outputs, name="decoder")
    images = keras.Input(shape=shape, name="image")
    return keras.Model(images, decoder(encoder(images)), name=name)
