"""Convolutional classifiers: the talk's conv + max-pool + dense net, and the blocks that
made networks deeper and smarter (claims C2, C3, C8, C17).

* ``cnn``: conv blocks, each followed by a 2x2 max-pool (or, for the pooling
  comparison, a stride-2 conv instead), then a dense head.
* ``deep_cnn``: a ResNet-style stack of basic blocks (two 3x3 convs), plain or with
  identity / projection shortcuts, at any depth; the plain net is the same stack without
  the shortcuts, so the two differ only in the skip connections.
* ``inception_cnn``: inception modules (parallel 1x1, 3x3, 5x5 and pooling branches,
  concatenated).
* ``talk_cnn``: the talk's parameter-count example, two conv layers of 100 filters and
  one dense output layer.

The deep sigmoid MLP of the vanishing-gradient demonstration is ``mlp`` with many
hidden layers (:mod:`models.mlp`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from models.registry import register_model

DOWNSAMPLING = ("max_pool", "stride")
BLOCKS = ("plain", "residual")
BN_MOMENTUM = 0.9


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
    downsample: str = "max_pool",
    name: str = "cnn",
) -> keras.Model:
    """Each entry of ``filters`` adds a block: ``convs_per_block`` same-padded convs
    (each optionally batch-normalised), then a 2x2 max-pool. The first conv layer is
    named ``conv_1_1`` so its filters can be drawn.

    ``downsample="stride"`` removes the max-pools and gives each block's last conv a
    stride of 2 instead: the same output sizes and head, without pooling (claim C8).
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
    if downsample not in DOWNSAMPLING:
        raise ValueError(f"downsample={downsample!r}: expected one of {', '.join(DOWNSAMPLING)}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    if augment_shift:
        x = keras.layers.RandomTranslation(augment_shift, augment_shift, fill_mode="constant", name="shift")(x)
    for block, width in enumerate(filters, start=1):
        if width < 1:
            raise ValueError(f"filters[{block - 1}]={width}: must be >= 1")
        for conv in range(1, convs_per_block + 1):
            strides = 2 if downsample == "stride" and conv == convs_per_block else 1
            x = keras.layers.Conv2D(
                width, kernel_size, strides=strides, padding="same", use_bias=not batch_norm,
                name=f"conv_{block}_{conv}"
            )(x)
            if batch_norm:
                x = keras.layers.BatchNormalization(name=f"bn_{block}_{conv}")(x)
            x = keras.layers.Activation(activation, name=f"act_{block}_{conv}")(x)
        if downsample == "max_pool":
            x = keras.layers.MaxPooling2D(2, name=f"pool_{block}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if dense_units:
        x = keras.layers.Dense(dense_units, activation=activation, name="dense")(x)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def _stage_blocks(blocks: int, stages: int) -> list[int]:
    """``blocks`` spread over ``stages`` as evenly as possible, earlier stages first."""
    return [blocks // stages + (1 if stage < blocks % stages else 0) for stage in range(stages)]


def _conv(x: keras.KerasTensor, width: int, name: str, *, strides: int = 1, kernel_size: int = 3,
          use_bias: bool = True, initializer: str = "glorot_uniform") -> keras.KerasTensor:
    return keras.layers.Conv2D(width, kernel_size, strides=strides, padding="same", use_bias=use_bias,
                               kernel_initializer=initializer, name=name)(x)


def _normalize_activate(x: keras.KerasTensor, name: str, batch_norm: bool, activation: str | None
                        ) -> keras.KerasTensor:
    if batch_norm:
        # Keras' default momentum (0.99) lags the statistics of a net that trains for a
        # few hundred steps: its inference-mode accuracy then trails far behind.
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if activation:
        x = keras.layers.Activation(activation, name=f"{name}_act")(x)
    return x


def basic_block(
    x: keras.KerasTensor, width: int, name: str, *, residual: bool = True, strides: int = 1,
    batch_norm: bool = True, activation: str = "relu", preactivation: bool = False,
    initializer: str = "glorot_uniform",
) -> keras.KerasTensor:
    """ResNet's basic block: two 3x3 convs, plus the input when ``residual``.

    The shortcut is the identity, or a 1x1 conv (projection) when the block changes the
    width or the resolution. ``preactivation`` uses the ordering of He et al. 2016
    (norm, activation, conv; nothing after the addition), which leaves the shortcut path
    a pure identity whatever the activation; otherwise the 2015 ordering (conv, norm,
    activation; the activation after the addition). With ``residual=False`` the same
    layers form a plain block.
    """
    conv = functools.partial(_conv, use_bias=not batch_norm, initializer=initializer)
    shortcut = x
    if preactivation:
        h = _normalize_activate(x, f"{name}_pre", batch_norm, activation)
        if residual and (strides != 1 or x.shape[-1] != width):
            shortcut = conv(h, width, f"{name}_projection", strides=strides, kernel_size=1)
        h = conv(h, width, f"{name}_conv_1", strides=strides)
        h = _normalize_activate(h, f"{name}_mid", batch_norm, activation)
        h = conv(h, width, f"{name}_conv_2")
        return keras.layers.Add(name=f"{name}_add")([shortcut, h]) if residual else h
    h = conv(x, width, f"{name}_conv_1", strides=strides)
    h = _normalize_activate(h, f"{name}_conv_1", batch_norm, activation)
    h = conv(h, width, f"{name}_conv_2")
    h = _normalize_activate(h, f"{name}_conv_2", batch_norm, None)
    if residual:
        if strides != 1 or x.shape[-1] != width:
            shortcut = conv(x, width, f"{name}_projection", strides=strides, kernel_size=1)
            shortcut = _normalize_activate(shortcut, f"{name}_projection", batch_norm, None)
        h = keras.layers.Add(name=f"{name}_add")([shortcut, h])
    return keras.layers.Activation(activation, name=f"{name}_out")(h)


@register_model("deep_cnn")
def build_deep_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    depth: int = 20,
    block: str = "residual",
    widths: Sequence[int] = (16, 32, 64),
    batch_norm: bool = True,
    activation: str = "relu",
    preactivation: bool = False,
    initializer: str = "glorot_uniform",
    name: str = "deep_cnn",
) -> keras.Model:
    """A ResNet-style net of ``depth`` weight layers (He et al.'s CIFAR nets: 6n+2).

    A 3x3 stem conv, ``(depth - 2) / 2`` basic blocks spread over ``len(widths)`` stages
    (each stage after the first halves the resolution in its first block), global
    average pooling and a softmax layer. ``depth=20`` with 3 stages is ResNet-20;
    ``block="plain"`` is the same net without shortcuts.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: must be >= 2")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 4 or depth % 2:
        raise ValueError(f"depth={depth!r}: must be an even integer >= 4 (stem + 2 convs per block + output)")
    if block not in BLOCKS:
        raise ValueError(f"block={block!r}: expected one of {', '.join(BLOCKS)}")
    if not widths or any(width < 1 for width in widths):
        raise ValueError(f"widths={tuple(widths)}: need at least one stage, each width >= 1")
    blocks = (depth - 2) // 2
    if blocks < len(widths):
        raise ValueError(f"depth={depth} gives {blocks} block(s), fewer than the {len(widths)} stages of "
                         f"widths={tuple(widths)}: use depth >= {2 * len(widths) + 2} or fewer stages")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _conv(inputs, widths[0], "stem", use_bias=not batch_norm, initializer=initializer)
    if not preactivation:
        x = _normalize_activate(x, "stem", batch_norm, activation)
    for stage, (width, count) in enumerate(zip(widths, _stage_blocks(blocks, len(widths)), strict=True), start=1):
        for index in range(1, count + 1):
            x = basic_block(x, width, f"stage_{stage}_block_{index}", residual=block == "residual",
                            strides=2 if stage > 1 and index == 1 else 1, batch_norm=batch_norm,
                            activation=activation, preactivation=preactivation, initializer=initializer)
    if preactivation:
        x = _normalize_activate(x, "final", batch_norm, activation)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def inception_module(
    x: keras.KerasTensor, name: str, *, branch_1x1: int, reduce_3x3: int, branch_3x3: int, reduce_5x5: int,
    branch_5x5: int, pool_projection: int, batch_norm: bool = True, activation: str = "relu",
) -> keras.KerasTensor:
    """GoogLeNet's module: 1x1, 1x1 -> 3x3, 1x1 -> 5x5 and 3x3 max-pool -> 1x1
    branches side by side, concatenated along the channels."""
    def unit(h: keras.KerasTensor, width: int, kernel_size: int, label: str) -> keras.KerasTensor:
        h = _conv(h, width, f"{name}_{label}", kernel_size=kernel_size, use_bias=not batch_norm)
        return _normalize_activate(h, f"{name}_{label}", batch_norm, activation)

    branches = [
        unit(x, branch_1x1, 1, "1x1"),
        unit(unit(x, reduce_3x3, 1, "3x3_reduce"), branch_3x3, 3, "3x3"),
        unit(unit(x, reduce_5x5, 1, "5x5_reduce"), branch_5x5, 5, "5x5"),
        unit(keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x),
             pool_projection, 1, "pool_projection"),
    ]
    return keras.layers.Concatenate(name=f"{name}_concat")(branches)


@register_model("inception_cnn")
def build_inception_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    stem_filters: int = 16,
    modules: Sequence[int] = (32, 64),
    batch_norm: bool = True,
    activation: str = "relu",
    name: str = "inception_cnn",
) -> keras.Model:
    """A small GoogLeNet: a 3x3 stem conv, then for each entry of ``modules`` (the
    module's output width) an inception module and a 2x2 max-pool, global average
    pooling and a softmax layer. A module of width w splits it 1/4 1x1, 1/2 3x3 (behind a
    1x1 reduction to 1/4), 1/8 5x5 (behind 1/16) and 1/8 pool projection."""
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: must be >= 2")
    if stem_filters < 1:
        raise ValueError(f"stem_filters={stem_filters}: must be >= 1")
    if not modules or any(width < 16 or width % 8 for width in modules):
        raise ValueError(f"modules={tuple(modules)}: need at least one module, each width a multiple of 8 >= 16")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _normalize_activate(_conv(inputs, stem_filters, "stem", use_bias=not batch_norm), "stem", batch_norm,
                            activation)
    for index, width in enumerate(modules, start=1):
        x = inception_module(x, f"inception_{index}", branch_1x1=width // 4, reduce_3x3=width // 4,
                             branch_3x3=width // 2, reduce_5x5=max(width // 16, 1), branch_5x5=width // 8,
                             pool_projection=width // 8, batch_norm=batch_norm, activation=activation)
        x = keras.layers.MaxPooling2D(2, name=f"pool_{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model("talk_cnn")
def build_talk_cnn(
    input_shape: Sequence[int] = (100, 100, 1),
    num_classes: int = 10,
    filters: int = 100,
    kernel_size: int = 3,
    name: str = "talk_cnn",
) -> keras.Model:
    """The talk's counter-example to a 3x100 fully connected net on 100x100 images: two
    conv layers of 100 filters and one dense output layer. Global average pooling sits
    between the last conv and the dense layer (a flattened 100x100x100 map would give
    the dense layer alone 10^6 weights per class)."""
    if filters < 1 or kernel_size < 1:
        raise ValueError(f"filters={filters}, kernel_size={kernel_size}: both must be >= 1")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Conv2D(filters, kernel_size, padding="same", activation="relu", name="conv_1")(inputs)
    x = keras.layers.Conv2D(filters, kernel_size, padding="same", activation="relu", name="conv_2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


# --- probes of a trained image classifier ------------------------------------------------


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Images moved by ``(dy, dx)`` pixels; what leaves the frame is lost, zeros come in."""
    out = np.zeros_like(images)
    height, width = images.shape[1:3]
    out[:, max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        images[:, max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return out


def shift_agreement(model: Any, images: np.ndarray, max_shift: int, labels: np.ndarray | None = None
                    ) -> dict[str, dict[int, float]]:
    """For each shift 1..``max_shift`` pixels, in the four directions: the share of
    predictions unchanged by the shift (``agreement``) and, with labels, the accuracy
    on the shifted images."""
    def predict(batch: np.ndarray) -> np.ndarray:
        return model.predict(batch.astype(np.float32) / np.float32(255.0), batch_size=512, verbose=0).argmax(axis=1)

    original = predict(images)
    agreement: dict[int, float] = {}
    accuracy: dict[int, float] = {}
    for shift in range(1, max_shift + 1):
        moved = [predict(shifted(images, dy, dx)) for dy, dx in ((shift, 0), (-shift, 0), (0, shift), (0, -shift))]
        agreement[shift] = float(np.mean([m == original for m in moved]))
        if labels is not None:
            accuracy[shift] = float(np.mean([m == labels for m in moved]))
    return {"agreement": agreement, "accuracy": accuracy}


def layer_outputs(model: Any, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The activations of one image after every conv, activation and pooling layer."""
    kinds = ("Conv2D", "Activation", "MaxPooling2D")
    layers = [layer for layer in model.layers if type(layer).__name__ in kinds]
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    return [(layer.name, np.asarray(output)[0]) for layer, output in zip(layers, probe([image]), strict=True)]
