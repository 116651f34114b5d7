"""Floating-point operations of a Keras model's forward pass, counted per example from layer shapes.

``count_flops(model)`` walks the model's symbolic graph (nested models included) and
adds up a closed-form count for every layer call. Nothing is executed, so the count is
the same on any device and under any dtype policy (mixed precision included).

Conventions (the tests' hand counts use exactly these):

* One multiply-add is 2 FLOPs; adding a bias is 1 FLOP per output element; an
  elementwise activation is 1 FLOP per element, for a layer's ``activation=`` argument
  as for an ``Activation``/``ReLU``/``ELU``/``LeakyReLU``/``PReLU`` layer. ``linear`` is
  free; softmax (and log-softmax) cost 3 per element (exponent, sum, divide).
* Counts are per example (the batch dimension is left out), forward pass only, in
  inference mode (dropout, noise and data augmentation are the identity).
* ``Dense``: ``2 * in * units`` (+ ``units`` bias) (+ activation), times the leading
  non-batch dimensions when the input has rank > 2. ``EinsumDense``: 2 per output
  element per contracted kernel entry, + bias and activation per output element.
* ``Conv1D/2D/3D``: ``2 * prod(kernel) * in_channels / groups * filters`` per output
  position, + bias per output element, + activation; padding, strides and dilation
  enter through the actual output shape. ``DepthwiseConv1D/2D``:
  ``2 * prod(kernel) * in_channels * depth_multiplier`` per output position + bias.
  ``SeparableConv1D/2D``: that depthwise part + a 1x1 pointwise conv
  (``2 * in_channels * depth_multiplier * filters`` per output position) + bias.
  ``Conv1D/2D/3DTranspose``: ``2 * prod(kernel) * in_channels * filters`` per *input*
  position (each input pixel is scattered onto a kernel-sized patch), + bias per
  output element.
* Recurrent layers (``SimpleRNN``, ``LSTM``, ``GRU`` and ``RNN`` over their cells or a
  ``StackedRNNCells``), per time step with ``d`` inputs and ``u`` units:
  SimpleRNN ``2(d+u)u + u`` bias ``+ u`` activation; LSTM 4 gates of that
  (``8(d+u)u + 4u + 4u``) + ``5u`` state update (``f*c + i*g``: 3, ``tanh(c)``: 1,
  ``o * tanh(c)``: 1); GRU 3 gates (``6(d+u)u + 3u + 3u``), + ``3u`` for the second
  (recurrent) bias when ``reset_after``, + ``5u`` state update (``r *``: 1,
  ``z * h + (1 - z) * h~``: 4). The matrix products ``x W + h U`` are one product over
  ``d + u`` inputs, so their sum is inside ``2(d+u)u``. Times the number of time steps,
  which must be known (give ``input_shape`` when the model's time axis is ``None``).
  ``Bidirectional``: both directions + the merge (sum, mul: 1 per output element;
  ave: 2; concat or none: 0). ``TimeDistributed``: time steps x the inner layer.
* Pooling: ``MaxPooling``/``AveragePooling`` 1D/2D/3D cost ``prod(pool_size)`` per
  output element; global and adaptive pooling 1 per input element.
* Normalisation: ``BatchNormalization`` at inference folds into ``x * a + b``: 2 per
  element. ``LayerNormalization``/``GroupNormalization``: 5 per element for the
  statistics and normalising (sum for the mean, subtract, square, sum for the
  variance, multiply by 1/sigma) + 1 each for ``scale`` and ``center`` (7 with the
  defaults; with ``rms_scaling`` 3 + 1). ``RMSNormalization``: 3 + 1 for the scale.
  ``UnitNormalization``: 3. The preprocessing ``Normalization`` layer: 2.
  Per-row work (a square root per normalised group) is not counted.
* Merging: ``Add``/``Subtract``/``Multiply``/``Maximum``/``Minimum``:
  ``n_inputs - 1`` per output element; ``Average``: ``n_inputs`` (the adds and one
  scale); ``Dot``: 2 per output element per contracted entry; ``Concatenate``: 0.
* ``Rescaling``: 1 per element, 2 when it has a non-zero offset.
* Free (0): ``InputLayer``, ``Dropout`` and the other regularisation/noise layers,
  ``Flatten``, ``Reshape``, ``Permute``, ``RepeatVector``, ``Concatenate``,
  ``ZeroPadding``, ``Cropping``, nearest-neighbour ``UpSampling``/``Resizing``,
  ``Embedding`` (a lookup), ``Masking``, ``Identity``, ``CenterCrop`` and the
  augmentation layers (``Random*``, ``MixUp``, ``CutMix``, ``AugMix``,
  ``RandAugment``), which are the identity at inference.
* Keras ops used directly in a functional graph (``x + y``, ``keras.ops.relu`` ...):
  elementwise ones 1 per output element, softmax 3, reductions 1 per input element,
  ``matmul`` 2 per output element per contracted entry, reshaping ones 0.
* A layer or model with a ``flops_per_example()`` method (the subclassed
  :class:`models.rbm.RBM`, say) is trusted: its value is used and it is not looked into.
* Nested models are walked; their layers appear as ``outer/inner`` in ``by_layer``. A
  layer called several times (shared weights) is counted once per call.
* Anything else (an unknown layer class, a subclassed model without
  ``flops_per_example``, an unsupported option such as bilinear upsampling) is listed in
  ``FlopCount.uncounted`` and left out of the total; the counter never fails on it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

SOFTMAX_FLOPS = 3
"""Per element: one exponent, its share of the sum, one divide."""

LSTM_STATE_FLOPS = 5
"""Per unit and step: ``c = f*c + i*g`` (3), ``tanh(c)`` (1), ``h = o * tanh(c)`` (1)."""

GRU_STATE_FLOPS = 5
"""Per unit and step: the reset product (1) and ``h = z*h + (1-z)*h~`` (4)."""

NORMALIZE_FLOPS = 5
"""Per element: mean sum, subtract, square, variance sum, multiply by 1/sigma."""

RMS_NORMALIZE_FLOPS = 3
"""Per element: square, sum, multiply by 1/rms."""


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """FLOPs of one forward pass for one example.

    Attributes:
        total: the sum of ``by_layer``.
        by_layer: ``(path, class name, flops)`` per counted layer call, in graph order;
            nested models give paths like ``encoder/conv_1``.
        uncounted: ``"path (ClassName)"`` of calls the counter does not know how to
            count; their cost is not in ``total``.
    """

    total: int
    by_layer: tuple[tuple[str, str, int], ...]
    uncounted: tuple[str, ...]


@dataclasses.dataclass
class _Tally:
    entries: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    uncounted: list[str] = dataclasses.field(default_factory=list)

    def add(self, path: str, layer: Any, flops: int) -> None:
        self.entries.append((path, type(layer).__name__, int(flops)))

    def skip(self, path: str, layer: Any) -> None:
        label = f"{path} ({type(layer).__name__})"
        if label not in self.uncounted:
            self.uncounted.append(label)

    def extend(self, other: _Tally, scale: int = 1) -> None:
        self.entries.extend((path, name, flops * scale) for path, name, flops in other.entries)
        for label in other.uncounted:
            if label not in self.uncounted:
                self.uncounted.append(label)


# --- public API --------------------------------------------------------------------


def count_flops(model: Any, input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None) -> FlopCount:
    """FLOPs of ``model``'s forward pass per example (see the module docstring).

    Args:
        model: a functional or Sequential model, a model or layer with a
            ``flops_per_example()`` method, or any layer.
        input_shape: one example's shape without the batch dimension (a list of shapes
            for several inputs). Needed for a model without a symbolic graph (an
            unbuilt Sequential, a bare layer) and to fix dimensions the graph leaves
            ``None``, such as a variable sequence length.
    """
    given = _input_specs(input_shape)
    tally = _Tally()
    if callable(getattr(model, "flops_per_example", None)):
        tally.add(model.name, model, _trusted(model))
        return _result(tally)
    graph = _graph_of(model)
    if graph is None and isinstance(model, keras.Sequential) and given is not None:
        if len(given) != 1:
            raise ValueError(f"input_shape={input_shape!r}: a Sequential model takes one input")
        model.build(given[0].shape)
        graph = _graph_of(model)
    if graph is not None:
        _check_against_graph(graph, given, input_shape)
        _walk(graph, given if given is not None else list(graph.inputs), "", tally)
    elif given is not None:
        _count_call(model, given, None, model.name, tally)
    else:
        raise ValueError(f"model {model.name!r} ({type(model).__name__}) has no symbolic graph to read shapes "
                         "from; pass input_shape= (one example's shape, without the batch dimension)")
    return _result(tally)


def describe(count: FlopCount) -> str:
    """One line for logs: ``"1.23 MFLOPs per example (forward); 12 layers"`` and what was not counted."""
    calls = len(count.by_layer)
    text = f"{_si(count.total)}FLOPs per example (forward); {calls} layer{'' if calls == 1 else 's'}"
    if count.uncounted:
        text += f"; not counted: {', '.join(count.uncounted)}"
    return text


# --- graph walking -------------------------------------------------------------------


def _result(tally: _Tally) -> FlopCount:
    return FlopCount(total=sum(flops for _, _, flops in tally.entries), by_layer=tuple(tally.entries),
                     uncounted=tuple(tally.uncounted))


def _si(value: int) -> str:
    for exponent, prefix in ((12, "T"), (9, "G"), (6, "M"), (3, "k")):
        if value >= 10**exponent:
            return f"{value / 10**exponent:.2f} {prefix}"
    return f"{value} "


def _input_specs(input_shape: Sequence[Any] | None) -> list[Any] | None:
    if input_shape is None:
        return None
    shapes = list(input_shape)
    if shapes and all(isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) for dim in shapes):
        shapes = [shapes]
    specs = []
    for shape in shapes:
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or not all(
                isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and dim >= 1 for dim in shape):
            raise ValueError(f"input_shape={input_shape!r}: expected one example's shape (integers >= 1, no batch "
                             "dimension) or a list of such shapes")
        specs.append(keras.KerasTensor((None, *(int(dim) for dim in shape))))
    if not specs:
        raise ValueError(f"input_shape={input_shape!r}: expected at least one shape")
    return specs


def _check_against_graph(graph: Any, given: list[Any] | None, input_shape: Any) -> None:
    if given is None:
        return
    stored = [tuple(tensor.shape) for tensor in graph.inputs]
    if len(given) != len(stored):
        raise ValueError(f"input_shape={input_shape!r}: the model has {len(stored)} input(s) of shapes {stored}")
    for shape, spec in zip(stored, given, strict=True):
        fits = len(shape) == len(spec.shape) and all(
            want is None or want == got for want, got in zip(shape[1:], spec.shape[1:], strict=True))
        if not fits:
            raise ValueError(f"input_shape={input_shape!r} does not fit the model's input shape(s) {stored}")


def _graph_of(layer: Any) -> Any:
    """The ``Function`` holding ``layer``'s symbolic graph, or None if it has none."""
    if isinstance(layer, keras.Sequential):
        return getattr(layer, "_functional", None)
    if isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth"):
        return layer
    return None


def _walk(graph: Any, inputs: list[Any], prefix: str, tally: _Tally) -> None:
    """Count every node of ``graph`` fed with ``inputs``. Shapes are re-derived only
    where ``inputs`` differ from the graph's own (a sequence length given by the caller)."""
    specs = {id(stored): given for stored, given in zip(graph.inputs, inputs, strict=True)}
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            operation = node.operation
            if operation is None or node.is_input:
                continue
            if any(id(tensor) not in specs for tensor in node.input_tensors):
                continue  # not reachable from the inputs (Keras skips these too)
            inputs_here = [specs[id(tensor)] for tensor in node.input_tensors]
            if all(tuple(new.shape) == tuple(old.shape) for new, old in zip(inputs_here, node.input_tensors,
                                                                            strict=True)):
                outputs = list(node.output_tensors)
            else:
                args, kwargs = node.arguments.fill_in(specs)
                outputs = keras.tree.flatten(operation.compute_output_spec(*args, **kwargs))
            for stored, new in zip(node.output_tensors, outputs, strict=True):
                specs[id(stored)] = new
            _count_call(operation, inputs_here, outputs, prefix + operation.name, tally)


def _count_call(layer: Any, inputs: list[Any], outputs: list[Any] | None, path: str, tally: _Tally) -> None:
    if callable(getattr(layer, "flops_per_example", None)):
        tally.add(path, layer, _trusted(layer))
        return
    graph = _graph_of(layer)
    if graph is not None:
        _walk(graph, inputs, path + "/", tally)
        return
    if isinstance(layer, keras.layers.TimeDistributed):
        steps = _time_steps(layer, inputs[0])
        sample = inputs[0]
        inner = _Tally()
        _count_call(layer.layer, [keras.KerasTensor((sample.shape[0], *sample.shape[2:]), dtype=sample.dtype)],
                    None, f"{path}/{layer.layer.name}", inner)
        tally.extend(inner, scale=steps)
        return
    if isinstance(layer, keras.layers.Bidirectional):
        _count_call(layer.forward_layer, inputs[:1], None, f"{path}/{layer.forward_layer.name}", tally)
        _count_call(layer.backward_layer, inputs[:1], None, f"{path}/{layer.backward_layer.name}", tally)
        merge = {"sum": 1, "mul": 1, "ave": 2}.get(layer.merge_mode, 0)
        outputs = outputs if outputs is not None else _output_specs(layer, inputs)
        if merge and outputs is None:
            tally.skip(path, layer)
        else:
            tally.add(path, layer, merge * _elements(outputs[0], layer) if merge else 0)
        return
    handler = _handler(layer)
    if handler is None:
        tally.skip(path, layer)
        return
    if outputs is None:
        outputs = _output_specs(layer, inputs)
        if outputs is None:
            tally.skip(path, layer)
            return
    flops = handler(layer, inputs, outputs)
    if flops is None:
        tally.skip(path, layer)
    else:
        tally.add(path, layer, flops)


def _trusted(layer: Any) -> int:
    value = layer.flops_per_example()
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{layer.name}.flops_per_example() returned {value!r}: expected an integer >= 0")
    return int(value)


def _output_specs(layer: Any, inputs: list[Any]) -> list[Any] | None:
    # Wrapped layers and bare layers have no recorded call; derive the output from the input.
    try:
        spec = layer.compute_output_spec(inputs[0] if len(inputs) == 1 else inputs)
    except Exception:  # any failure just means "cannot be counted", never an error
        return None
    return keras.tree.flatten(spec)


# --- shape helpers -------------------------------------------------------------------


def _unknown(layer: Any, tensor: Any) -> ValueError:
    return ValueError(f"layer {layer.name!r} ({type(layer).__name__}): shape {tuple(tensor.shape)} has an unknown "
                      "dimension besides the batch; pass input_shape= with every dimension")


def _elements(tensor: Any, layer: Any) -> int:
    dims = tuple(tensor.shape)[1:]
    if any(dim is None for dim in dims):
        raise _unknown(layer, tensor)
    return math.prod(dims)


def _dim(tensor: Any, axis: int, layer: Any) -> int:
    value = tuple(tensor.shape)[axis]
    if value is None:
        raise _unknown(layer, tensor)
    return int(value)


def _channels_last(layer: Any) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _channels(tensor: Any, layer: Any) -> int:
    return _dim(tensor, -1 if _channels_last(layer) else 1, layer)


def _positions(tensor: Any, layer: Any) -> int:
    """Number of spatial positions (all non-batch, non-channel dimensions)."""
    return _elements(tensor, layer) // _channels(tensor, layer)


def _time_steps(layer: Any, tensor: Any) -> int:
    steps = tuple(tensor.shape)[1] if len(tensor.shape) > 1 else None
    if steps is None:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}): the number of time steps is unknown "
                         f"(input shape {tuple(tensor.shape)}); pass input_shape= with a fixed sequence length")
    return int(steps)


def _activation(activation: Any, elements: int) -> int:
    if activation is None:
        return 0
    name = getattr(activation, "__name__", type(activation).__name__)
    if name == "linear":
        return 0
    if name in ("softmax", "log_softmax"):
        return SOFTMAX_FLOPS * elements
    return elements


# --- per-layer counts ----------------------------------------------------------------

Handler = Callable[[Any, list[Any], list[Any]], "int | None"]


def _dense(layer: Any, inputs: list[Any], outputs: list[Any]) -> int:
    out = _elements(outputs[0], layer)
    return 2 * _dim(inputs[0], -1, layer) * out + (out if layer.use_bias else 0) + _activation(layer.activation, out)


def _einsum_dense(layer: Any, inputs: list[Any], outputs: list[Any]) -> int | None:
    try:
        operands, result = layer.equation.split("->")
        _, kernel_spec = operands.split(",")
        kernel_shape = tuple(layer.kernel.shape)
    except (AttributeError, ValueError):
        return None
    if len(kernel_spec) != len(kernel_shape):
        return None
    contracted = math.prod(size for letter, size in zip(kernel_spec, kernel_shape, strict=True) if letter not in result)
    out = _elements(outputs[0], layer)
    return 2 * contracted * out + (out if layer.bias_axes else 0) + _activation(layer.activation, out)


def _conv(layer: Any, inputs: list[Any], outputs: list[Any]) -> int:
    out = _elements(outputs[0], layer)
    per_output = 2 * math.prod(layer.kernel_size) * (_channels(inputs[0], layer) // int(layer.groups))
    return per_output * out + (out if layer.use_bias else 0) + _activation(layer.activation, out)


def _depthwise_conv(layer: Any, inputs: list[Any], outputs: list[Any]) -> int:
    out = _elements(outputs[0], layer)
    return 2 * math.prod(layer.kernel_size) * out + (out if layer.use_bias else 0) + _activation(layer.activation, out)


def _separable_conv(layer: Any, inputs: list[Any], outputs: list[Any]) -> int:
    positions = _positions(outputs[0], layer)
    middle = _channels(inputs[0], layer) * int(layer.depth_multiplier)
    out = _elements(outputs[0], layer)
    depthwise = 2 * math.prod(layer.kernel_size) * middle * positions
    pointwise = 2 * middle * int(layer.filters) * positions
    return depthwise + pointwise + (out if layer.use_bias else 0) + _activation(layer.activation, out)


def _conv_transpose(layer: Any, inputs: list[Any], outputs: list[Any]) -> int:
    out = _elements(outputs[0], layer)
    scatter = 2 * math.prod(layer.kernel_size) * _elements(inputs[0], layer) * int(layer.filters)
    return scatter + (out if layer.use_bias else 0) + _activation(layer.activation, out)


def _cell(cell: Any, input_dim: int) -> tuple[int, int] | None:
    """(FLOPs per time step, output size) of one recurrent cell, or None if unknown."""
    if isinstance(cell, keras.layers.StackedRNNCells):
        total = 0
        for inner in cell.cells:
            counted = _cell(inner, input_dim)
            if counted is None:
                return None
            flops, input_dim = counted
            total += flops
        return total, input_dim
    if not isinstance(cell, (keras.layers.SimpleRNNCell, keras.layers.LSTMCell, keras.layers.GRUCell)):
        return None
    units = int(cell.units)
    gate = 2 * (input_dim + units) * units + (units if cell.use_bias else 0)
    if isinstance(cell, keras.layers.SimpleRNNCell):
        return gate + _activation(cell.activation, units), units
    if isinstance(cell, keras.layers.LSTMCell):
        activations = 3 * _activation(cell.recurrent_activation, units) + _activation(cell.activation, units)
        # tanh(c) is the cell's activation, so it is free when that is linear.
        state = (LSTM_STATE_FLOPS - 1) * units + _activation(cell.activation, units)
        return 4 * gate + activations + state, units
    activations = 2 * _activation(cell.recurrent_activation, units) + _activation(cell.activation, units)
    second_bias = 3 * units if cell.use_bias and cell.reset_after else 0
    return 3 * gate + activations + second_bias + GRU_STATE_FLOPS * units, units


def _rnn(layer: Any, inputs: list[Any], outputs: list[Any]) -> int | None:
    steps = _time_steps(layer, inputs[0])
    counted = _cell(layer.cell, _dim(inputs[0], -1, layer))
    return None if counted is None else steps * counted[0]


def _pooling(layer: Any, inputs: list[Any], outputs: list[Any]) -> int:
    return math.prod(layer.pool_size) * _elements(outputs[0], layer)


def _per_input(cost: int) -> Handler:
    return lambda layer, inputs, outputs: cost * _elements(inputs[0], layer)


def _per_output(cost: int) -> Handler:
    return lambda layer, inputs, outputs: cost * _elements(outputs[0], layer)


def _layer_normalization(layer: Any, inputs: list[Any], outputs: list[Any]) -> int:
    if getattr(layer, "rms_scaling", False):
        per_element = RMS_NORMALIZE_FLOPS + 1
    else:
        per_element = NORMALIZE_FLOPS + int(bool(layer.scale)) + int(bool(layer.center))
    return per_element * _elements(inputs[0], layer)


def _activation_layer(layer: Any, inputs: list[Any], outputs: list[Any]) -> int:
    return _activation(layer.activation, _elements(outputs[0], layer))


def _merge(extra: int) -> Handler:
    """``n_inputs - 1 + extra`` per output element."""
    return lambda layer, inputs, outputs: (len(inputs) - 1 + extra) * _elements(outputs[0], layer)


def _dot(layer: Any, inputs: list[Any], outputs: list[Any]) -> int | None:
    axes = layer.axes if isinstance(layer.axes, (list, tuple)) else (layer.axes, layer.axes)
    first = inputs[0]
    axis = int(axes[0]) % len(first.shape)
    contracted = _dim(first, axis, layer)
    normalize = 3 * sum(_elements(tensor, layer) for tensor in inputs) if layer.normalize else 0
    return 2 * contracted * _elements(outputs[0], layer) + normalize


def _rescaling(layer: Any, inputs: list[Any], outputs: list[Any]) -> int:
    offset = np.asarray(layer.offset)
    return (1 + int(bool(np.any(offset != 0)))) * _elements(outputs[0], layer)


def _nearest_only(layer: Any, inputs: list[Any], outputs: list[Any]) -> int | None:
    return 0 if getattr(layer, "interpolation", "nearest") == "nearest" else None


def _free(layer: Any, inputs: list[Any], outputs: list[Any]) -> int:
    return 0


def _layer_classes(*names: str) -> tuple[type, ...]:
    # getattr: a layer missing from this Keras version simply is not handled.
    return tuple(cls for name in names if (cls := getattr(keras.layers, name, None)) is not None)


@functools.cache
def _layer_handlers() -> tuple[tuple[tuple[type, ...], Handler], ...]:
    augmentation = tuple(getattr(keras.layers, name) for name in dir(keras.layers)
                         if name.startswith("Random") and isinstance(getattr(keras.layers, name), type))
    return (
        (_layer_classes("Dense"), _dense),
        (_layer_classes("EinsumDense"), _einsum_dense),
        (_layer_classes("SeparableConv1D", "SeparableConv2D"), _separable_conv),
        (_layer_classes("DepthwiseConv1D", "DepthwiseConv2D"), _depthwise_conv),
        (_layer_classes("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"), _conv_transpose),
        (_layer_classes("Conv1D", "Conv2D", "Conv3D"), _conv),
        (_layer_classes("RNN"), _rnn),
        (_layer_classes("MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
                        "AveragePooling3D"), _pooling),
        (_layer_classes("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
                        "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "AdaptiveAveragePooling1D",
                        "AdaptiveAveragePooling2D", "AdaptiveAveragePooling3D", "AdaptiveMaxPooling1D",
                        "AdaptiveMaxPooling2D", "AdaptiveMaxPooling3D"), _per_input(1)),
        (_layer_classes("BatchNormalization", "Normalization"), _per_input(2)),
        (_layer_classes("LayerNormalization", "GroupNormalization"), _layer_normalization),
        (_layer_classes("RMSNormalization"), _per_input(RMS_NORMALIZE_FLOPS + 1)),
        (_layer_classes("UnitNormalization"), _per_input(RMS_NORMALIZE_FLOPS)),
        (_layer_classes("Add", "Subtract", "Multiply", "Maximum", "Minimum"), _merge(0)),
        (_layer_classes("Average"), _merge(1)),
        (_layer_classes("Dot"), _dot),
        (_layer_classes("Activation"), _activation_layer),
        (_layer_classes("Softmax"), _per_output(SOFTMAX_FLOPS)),
        (_layer_classes("ReLU", "LeakyReLU", "ELU", "PReLU"), _per_output(1)),
        (_layer_classes("Rescaling"), _rescaling),
        (_layer_classes("UpSampling1D", "UpSampling2D", "UpSampling3D", "Resizing"), _nearest_only),
        (_layer_classes(
            "InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
            "GaussianNoise", "AlphaDropout", "ActivityRegularization", "Flatten", "Reshape", "Permute",
            "RepeatVector", "Concatenate", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
            "Cropping2D", "Cropping3D", "Embedding", "Masking", "Identity", "CenterCrop", "MixUp", "CutMix",
            "AugMix", "RandAugment") + augmentation, _free),
    )


# Keras ops called on symbolic tensors in a functional graph (not layers), by class name.
_ELEMENTWISE_OPS = frozenset({
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Power", "Negative", "Abs",
    "Absolute", "Exp", "Log", "Sqrt", "Square", "Reciprocal", "Clip", "Tanh", "Relu", "Relu6", "Sigmoid",
    "Softplus", "Silu", "Gelu", "Elu", "Selu", "LeakyRelu", "HardSigmoid", "HardSilu",
})
_REDUCTION_OPS = frozenset({"Sum", "Mean", "Max", "Min", "Prod"})
_FREE_OPS = frozenset({
    "Reshape", "Transpose", "ExpandDims", "Squeeze", "Concatenate", "Stack", "GetItem", "Cast", "Ravel", "Split",
    "Tile", "Repeat", "BroadcastTo", "Copy", "Moveaxis", "Swapaxes", "Pad", "Take", "Slice", "ConvertToTensor",
})


def _matmul(layer: Any, inputs: list[Any], outputs: list[Any]) -> int:
    return 2 * _dim(inputs[0], -1, layer) * _elements(outputs[0], layer)


def _op_handler(operation: Any) -> Handler | None:
    name = type(operation).__name__
    if name in _ELEMENTWISE_OPS:
        return _per_output(1)
    if name in ("Softmax", "LogSoftmax"):
        return _per_output(SOFTMAX_FLOPS)
    if name in _REDUCTION_OPS:
        return _per_input(1)
    if name == "Matmul":
        return _matmul
    if name in _FREE_OPS:
        return _free
    return None


def _handler(layer: Any) -> Handler | None:
    if not isinstance(layer, keras.layers.Layer):
        return _op_handler(layer)
    for classes, handler in _layer_handlers():
        if isinstance(layer, classes):
            return handler
    return None
