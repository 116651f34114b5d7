"""A classifier's dense head rewritten as convolutions (claim C9, Long et al. 2015).

:func:`convert_to_fcn` rebuilds a trained CNN fully convolutional: the first Dense layer
after ``Flatten`` sees an ``h x w x c`` block, so it becomes a ``Conv2D`` with an
``h x w`` kernel whose weights are the Dense weights reshaped (Flatten's row-major order
is the kernel's ``(h, w, c)`` order); every later Dense layer becomes a 1x1 convolution.
The net then runs on inputs of any size and slides the classifier over them: one class
distribution per window, a heatmap of ``(H - window) / stride + 1`` cells per axis.

Only layers whose meaning is clear are taken over; anything else is refused by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

# Layers copied as they are (same config and weights); they work on any spatial size.
_SPATIAL = (keras.layers.Conv2D, keras.layers.BatchNormalization, keras.layers.Activation, keras.layers.ReLU,
            keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, keras.layers.ZeroPadding2D,
            keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D, keras.layers.LeakyReLU,
            keras.layers.Rescaling)
# Layers that only act in training (or only augment): dropped, since the FCN is for inference.
_TRAINING_ONLY = (keras.layers.Dropout, keras.layers.SpatialDropout2D, keras.layers.GaussianNoise,
                  keras.layers.GaussianDropout, keras.layers.RandomTranslation, keras.layers.RandomRotation,
                  keras.layers.RandomZoom, keras.layers.RandomFlip, keras.layers.RandomContrast)


class FcnConversionError(ValueError):
    """The model cannot be rewritten fully convolutional; the message names the layer."""


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where each heatmap cell looks: cell ``(i, j)`` covers input rows
    ``i * stride[0] .. i * stride[0] + window[0]`` (and the same for columns)."""

    window: tuple[int, int]
    stride: tuple[int, int]

    def heatmap_shape(self, height: int, width: int) -> tuple[int, int]:
        return ((height - self.window[0]) // self.stride[0] + 1, (width - self.window[1]) // self.stride[1] + 1)

    def check(self, height: int, width: int) -> None:
        """A clear error for an input smaller than one window (Keras would fail deep inside)."""
        if height < self.window[0] or width < self.window[1]:
            raise ValueError(f"input {height}x{width} is smaller than the network's window "
                             f"{self.window[0]}x{self.window[1]} (the input size of the classifier it was "
                             f"converted from): it has no position to classify. Use an input of at least "
                             f"{self.window[0]}x{self.window[1]}.")


def _layer_chain(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of a single-input, single-output chain, in order; a branching graph is refused."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise FcnConversionError(f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} "
                                 "outputs; only a single-input, single-output chain of layers can be converted")
    chain = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        nodes = [node for node in layer._inbound_nodes]
        if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
            raise FcnConversionError(f"layer {layer.name!r} ({type(layer).__name__}) has several inputs or is "
                                     "used twice: only a plain chain of layers (no skip connections, no shared "
                                     "layers) can be converted")
        chain.append(layer)
    return chain


def convert_to_fcn(model: keras.Model, name: str | None = None) -> keras.Model:
    """The fully-convolutional twin of ``model`` (a chain: convs/pools/BN ... Flatten,
    Dense ... Dense), on inputs of any height and width.

    Batch normalisation keeps its inference semantics: its layers are copied with
    their moving statistics and frozen (a frozen Keras BatchNormalization normalises
    with the moving statistics even in training mode). Dropout and augmentation layers,
    which do nothing at inference, are left out. The output has the classifier's
    activation (softmax over the last axis): ``[batch, rows, cols, classes]``.

    Raises :class:`FcnConversionError` for a model it cannot convert: no Flatten, a Dense
    layer on a spatial tensor (not after Flatten), a layer after Flatten other than
    Dense or dropout, a branching graph, or an unknown layer type.
    """
    chain = _layer_chain(model)
    input_shape = tuple(model.inputs[0].shape[1:])
    if len(input_shape) != 3:
        raise FcnConversionError(f"model {model.name!r} takes inputs of shape {input_shape}; expected images "
                                 "(height, width, channels)")
    inputs = keras.Input(shape=(None, None, input_shape[-1]), name="image")
    x = inputs
    flattened: tuple[int, ...] | None = None
    dense_seen = 0
    for layer in chain:
        if isinstance(layer, _TRAINING_ONLY):
            continue
        if isinstance(layer, keras.layers.Flatten):
            if flattened is not None:
                raise FcnConversionError(f"layer {layer.name!r}: a second Flatten cannot be converted")
            flattened = tuple(layer.input.shape[1:])
            if len(flattened) != 3:
                raise FcnConversionError(f"layer {layer.name!r} flattens a tensor of shape {flattened}; expected "
                                         "(height, width, channels)")
            continue
        if isinstance(layer, keras.layers.Dense):
            if flattened is None:
                raise FcnConversionError(
                    f"Dense layer {layer.name!r} is not after Flatten (it acts on a tensor of shape "
                    f"{tuple(layer.input.shape[1:])}): only a dense head that follows the last spatial layer "
                    "through Flatten can be rewritten as convolutions")
            kernel, *bias = layer.get_weights()
            height, width, channels = flattened if dense_seen == 0 else (1, 1, kernel.shape[0])
            if kernel.shape[0] != height * width * channels:
                raise FcnConversionError(f"Dense layer {layer.name!r} has {kernel.shape[0]} inputs; expected "
                                         f"{height * width * channels} = {height}x{width}x{channels}")
            conv = keras.layers.Conv2D(layer.units, (height, width), padding="valid", activation=layer.activation,
                                       use_bias=layer.use_bias, dtype=layer.dtype_policy,
                                       name=f"{layer.name}_as_conv")
            x = conv(x)
            conv.set_weights([kernel.reshape(height, width, channels, layer.units), *bias])
            dense_seen += 1
            continue
        if isinstance(layer, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)):
            raise FcnConversionError(f"layer {layer.name!r} ({type(layer).__name__}) pools the spatial grid away, "
                                     "so the Dense head after it is not a window over the input: only a head of "
                                     "Flatten + Dense layers can be rewritten as convolutions")
        if flattened is not None:
            raise FcnConversionError(f"layer {layer.name!r} ({type(layer).__name__}) follows Flatten; only Dense "
                                     "and dropout layers can be in the converted head")
        if not isinstance(layer, _SPATIAL):
            raise FcnConversionError(f"layer {layer.name!r} ({type(layer).__name__}) is not one the conversion "
                                     "knows (convolutions, pooling, batch normalisation, activations)")
        copy = layer.__class__.from_config(layer.get_config())
        x = copy(x)
        copy.set_weights(layer.get_weights())
        if isinstance(copy, keras.layers.BatchNormalization):
            copy.trainable = False
    if flattened is None or not dense_seen:
        raise FcnConversionError(f"model {model.name!r} has no Flatten + Dense head to rewrite as convolutions")
    return keras.Model(inputs, x, name=name or f"{model.name}_fcn")


def geometry(fcn: keras.Model, largest: int = 4096) -> Geometry:
    """The window and stride of a converted net's heatmap cells, from its layers: the
    stride is the product of the pooling and convolution strides, the window the
    smallest input size that yields one cell."""
    stride = [1, 1]
    for layer in fcn.layers:
        step = getattr(layer, "strides", None)
        if step is not None:
            stride = [stride[0] * step[0], stride[1] * step[1]]
    channels = fcn.inputs[0].shape[-1]

    def cells(axis: int, size: int) -> int:
        shape = [None, 4096, 4096, channels]
        shape[1 + axis] = size
        try:
            out = fcn.compute_output_shape(tuple(shape))
        except Exception:  # Keras refuses a negative size: no window fits
            return 0
        return int(out[1 + axis] or 0)

    window = []
    for axis in (0, 1):
        low, high = 1, largest
        if cells(axis, high) < 1:
            raise FcnConversionError(f"the net yields no heatmap cell even on {largest}-pixel inputs")
        while low < high:  # smallest size with at least one cell
            middle = (low + high) // 2
            low, high = (middle + 1, high) if cells(axis, middle) < 1 else (low, middle)
        window.append(low)
    return Geometry((window[0], window[1]), (stride[0], stride[1]))


def heatmaps(fcn: keras.Model, images: np.ndarray, window: Geometry | None = None, batch_size: int = 16) -> np.ndarray:
    """Class heatmaps ``[N, rows, cols, classes]`` of float images ``[N, H, W, C]``, with a
    clear error for an input smaller than one window."""
    shape = window or geometry(fcn)
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images of shape {images.shape}: expected [batch, height, width, channels]")
    shape.check(images.shape[1], images.shape[2])
    return np.asarray(fcn.predict(images, batch_size=batch_size, verbose=0))


# --- boxes from heatmaps ----------------------------------------------------------------


def pyramid(fcn: keras.Model, shape: Geometry, images: np.ndarray, scales: Sequence[float]
            ) -> list[tuple[np.ndarray, float, float]]:
    """``(heatmaps [N, rows, cols, classes], row factor, column factor)`` per scale: at
    scale s the images are shrunk by 1/s, so digits s times the window size fill it. A
    scale that would shrink them below the window is left out."""
    height, width = images.shape[1:3]
    out = []
    for scale in scales:
        rows, columns = int(round(height / scale)), int(round(width / scale))
        if rows >= shape.window[0] and columns >= shape.window[1]:
            resized = images if (rows, columns) == (height, width) else np.asarray(
                keras.ops.image.resize(images, (rows, columns)))
            out.append((heatmaps(fcn, resized, shape), height / rows, width / columns))
    return out


def box_overlap(box: Sequence[float], others: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and intersection over the smaller area, of ``box`` with each of ``others`` [K,4]."""
    if not len(others):
        return np.zeros(0), np.zeros(0)
    top, left = np.maximum(box[0], others[:, 0]), np.maximum(box[1], others[:, 1])
    bottom, right = np.minimum(box[2], others[:, 2]), np.minimum(box[3], others[:, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9), inter / np.maximum(np.minimum(area, areas), 1e-9)


def _recentre(ink: np.ndarray, box: list[float], rounds: int = 2) -> list[float]:
    """Move ``box`` so the ink's centre of mass inside it sits at its centre (MNIST
    frames each digit by its centre of mass); an inkless box stays."""
    height, width = box[2] - box[0], box[3] - box[1]
    for _ in range(rounds):
        top, left = max(int(round(box[0])), 0), max(int(round(box[1])), 0)
        patch = ink[top:max(int(round(box[2])), 0), left:max(int(round(box[3])), 0)]
        total = patch.sum()
        if total <= 0:
            return box
        rows, columns = np.indices(patch.shape)
        centre = (top + (rows * patch).sum() / total + 0.5, left + (columns * patch).sum() / total + 0.5)
        box = [centre[0] - height / 2, centre[1] - width / 2, centre[0] + height / 2, centre[1] + width / 2]
    return box


def find_boxes(maps: list[tuple[np.ndarray, float, float]], index: int, image: np.ndarray, shape: Any, *,
               threshold: float, overlap: float, recentre: bool = True) -> list[tuple[int, float, list[float]]]:
    """Boxes ``(class, score, box)`` in image ``index``: the local maxima (3x3) of each
    scale's best-class score that reach ``threshold``, each the window of its cell in
    image coordinates; ``recentre`` moves a box onto the ink's centre of mass and reads
    class and score from the heatmap cell there; then non-maximum suppression (a box
    goes when more than ``overlap`` of the smaller of two boxes is shared)."""
    from scipy import ndimage

    ink = image.astype(np.float32).mean(axis=-1)
    found = []
    for heat, row_factor, column_factor in maps:
        cells = heat[index]
        score = cells.max(axis=-1)
        peaks = (score == ndimage.maximum_filter(score, size=3, mode="constant")) & (score >= threshold)
        for i, j in zip(*np.nonzero(peaks), strict=True):
            top, left = i * shape.stride[0], j * shape.stride[1]
            box = [top * row_factor, left * column_factor, (top + shape.window[0]) * row_factor,
                   (left + shape.window[1]) * column_factor]
            probabilities = cells[i, j]
            if recentre:
                box = _recentre(ink, box)
                i2 = int(np.clip(round(box[0] / row_factor / shape.stride[0]), 0, cells.shape[0] - 1))
                j2 = int(np.clip(round(box[1] / column_factor / shape.stride[1]), 0, cells.shape[1] - 1))
                probabilities = cells[i2, j2]
            if probabilities.max() >= threshold:
                found.append((int(probabilities.argmax()), float(probabilities.max()), box))
    found.sort(key=lambda item: -item[1])
    kept: list[tuple[int, float, list[float]]] = []
    for item in found:
        if kept and box_overlap(item[2], np.array([k[2] for k in kept]))[1].max() > overlap:
            continue
        kept.append(item)
    return kept


def score_detections(found: Sequence[Sequence[tuple[int, float, Sequence[float]]]], boxes: np.ndarray,
                     digits: np.ndarray, match_iou: float) -> dict[str, float]:
    """Precision and recall at ``match_iou``: a found box counts when it overlaps an
    unmatched true box of its class that much (best score first)."""
    hits = false = missed = 0
    for index, items in enumerate(found):
        real = digits[index] >= 0
        truth, classes = boxes[index][real], digits[index][real]
        used: set[int] = set()
        for label, _, box in items:
            iou = box_overlap(box, truth)[0]
            candidates = [k for k in np.argsort(-iou) if iou[k] >= match_iou and k not in used and classes[k] == label]
            if candidates:
                used.add(int(candidates[0]))
                hits += 1
            else:
                false += 1
        missed += len(truth) - len(used)
    precision = hits / (hits + false) if hits + false else 0.0
    recall = hits / (hits + missed) if hits + missed else 0.0
    return {"detection_precision": precision, "detection_recall": recall,
            "detection_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "true_boxes": float(hits + missed), "found_boxes": float(hits + false)}
