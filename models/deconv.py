"""Deconvolution nets: learned upsampling (claims C11, C12).

* ``deconv_segmenter``: encoder of conv + max-pool blocks, decoder of ``Conv2DTranspose``
  layers (each doubles the resolution with learned weights, Noh et al. 2015), optional
  skip connections from the encoder (U-Net style); a softmax over the classes at every
  pixel. Fully convolutional: any input whose sides are multiples of ``2**len(filters)``.
* ``fcn_segmenter``: a classifier rewritten fully convolutional (``models.fcn``) as the
  encoder, its class scores brought back to full resolution by ``Conv2DTranspose`` layers
  initialised as bilinear interpolation and then learned, with the finer pooled features
  added at each resolution (FCN-8s/4s, Long et al. 2015; DeconvNet also starts from a
  trained classifier). It knows the classes from its first step and learns the outlines.
* ``digit_generator``: from a class one-hot and pose parameters to an image, through
  Dense -> reshape -> ``Conv2DTranspose`` layers, as the chairs generator of Dosovitskiy
  et al. 2015 (there: chair type + viewpoint; here: digit class + rotation, scale,
  stroke thickness).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from models.cnn import BN_MOMENTUM
from models.registry import register_model


def _conv_bn_relu(x: keras.KerasTensor, width: int, name: str, batch_norm: bool) -> keras.KerasTensor:
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=not batch_norm, name=name)(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


@register_model("deconv_segmenter")
def build_deconv_segmenter(
    num_classes: int,
    channels: int = 1,
    filters: Sequence[int] = (16, 32, 64),
    bottleneck: int = 128,
    skips: bool = True,
    batch_norm: bool = True,
    stem_stride: int = 1,
    name: str = "deconv_segmenter",
) -> keras.Model:
    """Per-pixel classes ``[batch, H, W, num_classes]`` of images ``[batch, H, W, channels]``.

    Each entry of ``filters`` is an encoder level (two 3x3 convs, then a 2x2 max-pool)
    and, mirrored, a decoder level (a stride-2 ``Conv2DTranspose`` with a 3x3 kernel,
    the encoder level's output concatenated when ``skips``, two 3x3 convs). Between
    them a ``bottleneck`` of two convs at the lowest resolution.

    ``stem_stride=2`` starts with a stride-2 conv, so the levels work at half
    resolution (about 4x less compute); a last ``Conv2DTranspose`` brings the features
    back to full resolution, where (with ``skips``) the input image joins them for the
    final conv: the class comes from the coarse features, the exact outline from the
    pixels. Input sides must be multiples of ``stem_stride * 2**len(filters)``.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: must be >= 2")
    if not filters or any(width < 1 for width in filters):
        raise ValueError(f"filters={tuple(filters)}: expected at least one level, each >= 1")
    if bottleneck < 1:
        raise ValueError(f"bottleneck={bottleneck}: must be >= 1")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride={stem_stride}: expected 1 or 2")
    inputs = keras.Input(shape=(None, None, channels), name="image")
    x, encoded = inputs, []
    if stem_stride == 2:
        x = keras.layers.Conv2D(filters[0], 3, strides=2, padding="same", use_bias=not batch_norm, name="stem")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
        x = keras.layers.Activation("relu", name="stem_relu")(x)
    for level, width in enumerate(filters, start=1):
        x = _conv_bn_relu(x, width, f"enc_{level}_1", batch_norm)
        x = _conv_bn_relu(x, width, f"enc_{level}_2", batch_norm)
        encoded.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool_{level}")(x)
    x = _conv_bn_relu(x, bottleneck, "bottleneck_1", batch_norm)
    x = _conv_bn_relu(x, bottleneck, "bottleneck_2", batch_norm)
    for level, width in reversed(list(enumerate(filters, start=1))):
        # Learned upsampling: the "deconvolution" of the talk.
        x = keras.layers.Conv2DTranspose(width, 3, strides=2, padding="same", name=f"up_{level}")(x)
        if skips:
            x = keras.layers.Concatenate(name=f"skip_{level}")([x, encoded[level - 1]])
        x = _conv_bn_relu(x, width, f"dec_{level}_1", batch_norm)
        x = _conv_bn_relu(x, width, f"dec_{level}_2", batch_norm)
    if stem_stride == 2:
        x = keras.layers.Conv2DTranspose(filters[0], 3, strides=2, padding="same", name="up_full")(x)
        if skips:
            x = keras.layers.Concatenate(name="skip_image")([x, inputs])
        x = _conv_bn_relu(x, filters[0], "full_res", batch_norm)
    outputs = keras.layers.Conv2D(num_classes, 1, activation="softmax", dtype="float32", name="classes")(x)
    return keras.Model(inputs, outputs, name=name)


def _bilinear(layer: keras.layers.Conv2DTranspose) -> None:
    """Set a channel-to-itself transposed-conv kernel that upsamples bilinearly."""
    size = layer.kernel.shape[0]
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 else factor - 0.5
    rows, cols = np.ogrid[:size, :size]
    weights = (1 - abs(rows - centre) / factor) * (1 - abs(cols - centre) / factor)
    kernel = np.zeros(layer.kernel.shape, np.float32)
    for channel in range(kernel.shape[2]):
        kernel[:, :, channel, channel] = weights
    layer.kernel.assign(kernel)


@register_model("fcn_segmenter")
def build_fcn_segmenter(fcn: keras.Model, num_classes: int, fine_filters: int = 16,
                        name: str = "fcn_segmenter") -> keras.Model:
    """Per-pixel classes ``[batch, H, W, num_classes]`` (class 0 background, then the
    classifier's classes in order) from ``fcn``, a classifier converted by
    :func:`models.fcn.convert_to_fcn` (window ``w``, stride ``s``, a power of two).

    The input is zero-padded by ``(w - s) / 2`` so that heatmap cell ``(i, j)`` is the
    window centred on the ``s x s`` block at ``(i*s, j*s)``: an ``H/s x W/s`` grid. There
    the classifier's logits are the digit scores and a 1x1 conv of its last hidden layer
    the background score. Each stride-2 ``Conv2DTranspose`` (bilinear at first, learned)
    doubles the resolution, and a zero-initialised 1x1 conv of the features the
    classifier had at that resolution (a ``fine_filters``-channel conv of the image at
    full resolution) is added: at step 0 the net is the upsampled heatmap. Input sides
    must be multiples of ``s``.
    """
    from models.fcn import geometry

    shape = geometry(fcn)
    stride, window = shape.stride[0], shape.window[0]
    if shape.stride[1] != stride or shape.window[1] != window or stride & (stride - 1) or (window - stride) % 2:
        raise ValueError(f"fcn {fcn.name!r}: window {shape.window}, stride {shape.stride}; expected a square "
                         "window, a square power-of-two stride and an even window - stride")
    classes = fcn.outputs[0].shape[-1]
    if num_classes != classes + 1:
        raise ValueError(f"num_classes={num_classes}: the fcn has {classes} classes, so background + {classes} "
                         f"= {classes + 1}")
    pad = (window - stride) // 2
    inputs = keras.Input(shape=(None, None, fcn.inputs[0].shape[-1]), name="image")
    x = keras.layers.ZeroPadding2D(pad, name="centre_windows")(inputs)
    chain = [layer for layer in fcn.layers if not isinstance(layer, keras.layers.InputLayer)]
    features, factor = {}, 1
    for layer in chain[:-1]:
        x = layer(x)
        factor *= getattr(layer, "strides", (1, 1))[0]
        if factor < stride:
            features[factor] = x
    head = chain[-1]
    logits = keras.layers.Conv2D(head.filters, head.kernel_size, use_bias=head.use_bias, name="digit_scores")
    scores = keras.layers.Concatenate(name="scores")(
        [keras.layers.Conv2D(1, 1, name="background_score")(x),
         keras.layers.Activation("log_softmax", name="digit_log_probabilities")(logits(x))])
    logits.set_weights(head.get_weights())
    fine = keras.layers.Conv2D(fine_filters, 3, padding="same", activation="relu", name="fine_1")(inputs)
    features[1] = keras.layers.Conv2D(fine_filters, 3, padding="same", activation="relu", name="fine_2")(fine)
    while factor > 1:
        factor //= 2
        up = keras.layers.Conv2DTranspose(num_classes, 4, strides=2, padding="same", use_bias=False,
                                          name=f"up_{factor}")
        scores = up(scores)
        _bilinear(up)
        skip = features[factor]
        if factor > 1:
            if pad % factor:
                raise ValueError(f"fcn {fcn.name!r}: padding {pad} is not a multiple of {factor}")
            skip = keras.layers.Cropping2D(pad // factor, name=f"crop_{factor}")(skip)
        refine = keras.layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=f"skip_{factor}")(skip)
        scores = keras.layers.Add(name=f"add_{factor}")([scores, refine])
    outputs = keras.layers.Activation("softmax", dtype="float32", name="classes")(scores)
    return keras.Model(inputs, outputs, name=name)


@register_model("digit_generator")
def build_digit_generator(
    num_classes: int = 10,
    pose_size: int = 3,
    dense_units: int = 128,
    filters: Sequence[int] = (32, 16),
    image_side: int = 28,
    pose_mean: Sequence[float] | None = None,
    pose_std: Sequence[float] | None = None,
    name: str = "digit_generator",
) -> keras.Model:
    """``(class one-hot [batch, num_classes], pose [batch, pose_size]) -> image
    [batch, side, side, 1]`` in 0..1: the two inputs are embedded by Dense layers,
    joined, expanded to a ``side / 2**len(filters)`` grid of ``filters[0]`` channels and
    upsampled by stride-2 ``Conv2DTranspose`` layers. ``pose_mean`` / ``pose_std``
    standardise the pose inside the model, so callers pass poses in their own units."""
    if num_classes < 1 or pose_size < 1:
        raise ValueError(f"num_classes={num_classes}, pose_size={pose_size}: both must be >= 1")
    if not filters:
        raise ValueError("filters=(): at least one upsampling layer is needed")
    base = image_side // 2 ** len(filters)
    if base < 1 or base * 2 ** len(filters) != image_side:
        raise ValueError(f"image_side={image_side} is not a multiple of 2**{len(filters)} "
                         f"(one doubling per entry of filters={tuple(filters)})")
    label = keras.Input(shape=(num_classes,), name="class_onehot")
    pose = keras.Input(shape=(pose_size,), name="pose")
    scaled = pose
    if pose_mean is not None or pose_std is not None:
        mean = list(pose_mean) if pose_mean is not None else [0.0] * pose_size
        std = list(pose_std) if pose_std is not None else [1.0] * pose_size
        if len(mean) != pose_size or len(std) != pose_size or min(std) <= 0:
            raise ValueError(f"pose_mean={pose_mean}, pose_std={pose_std}: expected {pose_size} values each, "
                             "std > 0")
        scaled = keras.layers.Normalization(mean=mean, variance=[v * v for v in std], name="pose_scaling")(pose)
    x = keras.layers.Concatenate(name="code")([
        keras.layers.Dense(max(dense_units // 2, 1), activation="relu", name="class_embedding")(label),
        keras.layers.Dense(max(dense_units // 2, 1), activation="relu", name="pose_embedding")(scaled)])
    x = keras.layers.Dense(dense_units, activation="relu", name="joint")(x)
    x = keras.layers.Dense(base * base * filters[0], activation="relu", name="expand")(x)
    x = keras.layers.Reshape((base, base, filters[0]), name="grid")(x)
    for index, width in enumerate(filters, start=1):
        x = keras.layers.Conv2DTranspose(width, 4, strides=2, padding="same", activation="relu",
                                         name=f"up_{index}")(x)
    outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", dtype="float32", name="pixels")(x)
    return keras.Model([label, pose], outputs, name=name)


def segmentation_scores(predicted: np.ndarray, truth: np.ndarray, classes: int) -> dict[str, Any]:
    """Pixel accuracy, per-class IoU and their mean over the classes present in ``truth``."""
    matrix = np.bincount(truth.ravel().astype(np.int64) * classes + predicted.ravel().astype(np.int64),
                         minlength=classes * classes).reshape(classes, classes)
    inter = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - inter
    present = matrix.sum(1) > 0
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return {"pixel_accuracy": float(inter.sum() / matrix.sum()), "mean_iou": float(np.nanmean(iou[present])),
            "iou": [None if np.isnan(v) else float(v) for v in iou], "present": present.tolist()}
