"""Per-layer gradient norms during training: the vanishing/exploding-gradient picture.

:class:`GradientNorms` is a Keras callback that measures ``||dL/dW||`` for every kernel
of the model on one fixed batch at chosen training steps; :func:`heatmap` draws the
layers x steps matrix and :func:`ratio_plot` puts several nets' step-0 profiles on one
chart. The callback knows nothing about MLflow: give it ``on_record`` (for instance a
function calling ``tracking.log_metrics(run_id, metrics, step)``) to log each record.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import keras
import matplotlib
import numpy as np
import tensorflow as tf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

METRIC_PREFIX = "grad_norm."
# More tick labels than this on the layer axis overlap at any sensible figure height.
MAX_LAYER_TICKS = 40
MAX_STEP_TICKS = 30

_UNSAFE_METRIC_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")


class GradientNorms(keras.callbacks.Callback):
    """Records the L2 norm of ``dL/dkernel`` for every kernel of the model on a fixed batch.

    A record is taken at the start of training (step 0, or the optimizer's step count when
    a fit resumes), then after every global step ``s`` (optimizer updates so far, across
    epochs) with ``s in steps`` or ``s % every == 0``; with neither given, at the end of
    each epoch. ``records`` holds ``(step, {layer name: norm})`` in order.

    The gradients are those training sees (``training=True``: dropout active, batch norm
    on batch statistics), but every non-trainable variable (moving statistics, dropout
    seed states, loss trackers) is restored afterwards, so recording never changes the
    course of training. Non-finite norms are kept as ``nan``/``inf``; nothing raises.

    Args:
        x, y: a small fixed batch (e.g. 64 examples) as arrays of equal length.
        steps: global steps to record after.
        every: record after every ``every``-th global step.
        loss: overrides the compiled loss: a Keras loss name, a ``Loss`` or a function
            ``(y_true, y_pred)``; per-example values are averaged. It replaces the whole
            compiled objective, regularisation terms included.
        on_record: called as ``on_record(step, {"grad_norm.<layer>": norm, ...})`` with
            names that MLflow accepts as metric keys.
        max_layers: keep at most this many kernels, evenly spaced and always including
            the first and the last (very deep nets).
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        *,
        steps: Sequence[int] | None = None,
        every: int | None = None,
        loss: Callable[..., Any] | str | None = None,
        on_record: Callable[[int, dict[str, float]], None] | None = None,
        max_layers: int | None = None,
    ) -> None:
        super().__init__()
        self._x, self._y = _check_batch(x, y)
        self._steps = _check_steps(steps)
        if every is not None and (isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1):
            raise ValueError(f"every must be a positive integer or None, got {every!r}")
        if max_layers is not None and (
            isinstance(max_layers, bool) or not isinstance(max_layers, int | np.integer) or max_layers < 1
        ):
            raise ValueError(f"max_layers must be a positive integer or None, got {max_layers!r}")
        if on_record is not None and not callable(on_record):
            raise ValueError(f"on_record must be callable or None, got {on_record!r}")
        self._every = None if every is None else int(every)
        self._max_layers = None if max_layers is None else int(max_layers)
        self._loss = _resolve_loss(loss)
        self._on_record = on_record
        self.records: list[tuple[int, dict[str, float]]] = []
        self.layer_names: list[str] = []
        self._kernels: list[Any] = []
        self._metric_keys: list[str] = []
        self._norms_function: Callable[..., Any] | None = None
        self._x_tensor: tf.Tensor | None = None
        self._y_tensor: tf.Tensor | None = None
        self._prepared_for: Any = None
        self._step = 0
        self._epoch_start = 0

    # --- Keras hooks -------------------------------------------------------------------

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        # A resumed fit continues the step count of the run it resumes.
        self._step = int(keras.ops.convert_to_numpy(iterations)) if iterations is not None else 0
        self._epoch_start = self._step
        self._record(self._step)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epoch_start = self._step

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        # ``batch`` is the last step index of the call; with steps_per_execution > 1 one
        # call covers several updates, so a wanted step inside it is recorded at its end.
        previous, self._step = self._step, self._epoch_start + int(batch) + 1
        if self._wanted(previous, self._step):
            self._record(self._step)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._steps is None and self._every is None:
            self._record(self._step)

    # --- results -----------------------------------------------------------------------

    def compute_norms(self) -> dict[str, float]:
        """``{layer name: ||dL/dkernel||}`` for the model's current weights, without recording."""
        if self.model is None:
            raise ValueError("GradientNorms has no model: pass it to fit(callbacks=...) or call set_model first")
        self._prepare()
        state = _state_variables(self.model)
        saved = [keras.ops.convert_to_numpy(variable) for variable in state]
        try:
            if tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context():
                # Inside a fit under MirroredStrategy: each replica takes the whole fixed batch,
                # so every replica computes the same norms; the first one's are kept.
                strategy = tf.distribute.get_strategy()
                values = strategy.experimental_local_results(
                    strategy.run(self._norms_function, args=(self._x_tensor, self._y_tensor)))[0].numpy()
            else:
                values = self._norms_function(self._x_tensor, self._y_tensor).numpy()
        finally:
            for variable, value in zip(state, saved, strict=True):
                variable.assign(value)
        return {name: float(value) for name, value in zip(self.layer_names, values, strict=True)}

    def matrix(self) -> tuple[list[str], list[int], np.ndarray]:
        """Layer names, recorded steps and the ``layers x steps`` array of norms."""
        steps = [step for step, _ in self.records]
        norms = np.full((len(self.layer_names), len(steps)), np.nan)
        for column, (_, record) in enumerate(self.records):
            for row, name in enumerate(self.layer_names):
                norms[row, column] = record.get(name, np.nan)
        return list(self.layer_names), steps, norms

    def first_last_ratio(self, step: int = 0) -> float:
        """Norm of the first kernel over the norm of the last one at ``step``: tiny when gradients vanish."""
        if len(self.layer_names) < 2:
            raise ValueError(f"a first/last ratio needs at least 2 kernels, the model has {len(self.layer_names)}")
        recorded = [record_step for record_step, _ in self.records]
        for record_step, record in self.records:
            if record_step == step:
                return _ratio(record[self.layer_names[0]], record[self.layer_names[-1]])
        raise ValueError(f"no record at step {step}; recorded steps: {recorded}")

    # --- internals ---------------------------------------------------------------------

    def _wanted(self, previous: int, current: int) -> bool:
        """Whether a wanted step lies in ``(previous, current]`` (one step unless steps_per_execution > 1)."""
        if self._every is not None and current // self._every > previous // self._every:
            return True
        return self._steps is not None and any(previous < step <= current for step in self._steps)

    def _record(self, step: int) -> None:
        if self.records and self.records[-1][0] == step:
            return
        norms = self.compute_norms()
        self.records.append((step, norms))
        if self._on_record is not None:
            metrics = {key: norms[name] for key, name in zip(self._metric_keys, self.layer_names, strict=True)}
            self._on_record(step, metrics)

    def _prepare(self) -> None:
        """Find the kernels and trace the gradient function once per model."""
        model = self.model
        if self._prepared_for is model:
            return
        if not model.built:
            # A Sequential without an Input builds on its first call; inference mode
            # leaves moving statistics and seed states alone.
            model(self._x[:1], training=False)
        if self._loss is None and not getattr(model, "compiled", False):
            raise ValueError("the model is not compiled; compile it or pass loss= to GradientNorms")
        named = _kernel_variables(model)
        if not named:
            raise ValueError(f"model {model.name!r} has no kernel variables to measure")
        if self._max_layers is not None and len(named) > self._max_layers:
            keep = np.unique(np.linspace(0, len(named) - 1, self._max_layers).round().astype(int))
            named = [named[index] for index in keep]
        self.layer_names = [name for name, _ in named]
        self._kernels = [variable for _, variable in named]
        self._metric_keys = metric_keys(self.layer_names)
        self._x_tensor = tf.convert_to_tensor(self._x)
        self._y_tensor = tf.convert_to_tensor(self._y)
        # One trace per model; TensorFlow's "frequent retracing" warning counts traces of
        # every instance's function together and would fire for a run of many models.
        tf.get_logger().addFilter(_quiet_retracing)
        self._norms_function = tf.function(self._gradient_norms, reduce_retracing=True, autograph=False)
        self._prepared_for = model

    def _gradient_norms(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        model = self.model
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            # The backend variables: the tape knows them, not Keras' wrappers.
            watched = [kernel.value for kernel in self._kernels]
            tape.watch(watched)
            y_pred = model(x, training=True)
            if self._loss is None:
                loss = _compiled_loss(model, x, y, y_pred)
                scaled_by_keras = True
            else:
                loss = keras.ops.mean(self._loss(y, y_pred))
                scaled_by_keras = isinstance(self._loss, keras.losses.Loss)
            # Keras divides its losses by the replica count under a multi-replica strategy;
            # this batch is the whole batch, so undo that to get the true gradient.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            loss = tf.cast(loss, tf.float32)
            if scaled_by_keras and replicas > 1:
                loss = loss * float(replicas)
        # The raw float32 loss: a LossScaleOptimizer's scaling is not wanted for a measurement.
        gradients = tape.gradient(loss, watched)
        return tf.stack([_l2_norm(gradient) for gradient in gradients])


class InputGradients(keras.callbacks.Callback):
    """``|dL/dx_t|`` at every time step t of a fixed batch of sequences, at
    initialisation (a fresh fit) and after training: how much of the loss's gradient
    reaches each step back in time through the unrolled net. ``records`` maps
    ``"initialisation"`` and ``"trained"`` to one mean norm per time step. ``loss``
    (default: mean squared error against ``y``) takes ``(y, predictions)``."""

    def __init__(self, x: Any, y: Any, loss: Callable[..., Any] | None = None) -> None:
        super().__init__()
        self._x, self._y = _check_batch(x, y)
        if self._x.ndim < 3:
            raise ValueError(f"x has shape {self._x.shape}: expected [examples, time steps, features]")
        self._loss = loss
        self.records: dict[str, list[float]] = {}

    def measure(self) -> list[float]:
        x = tf.constant(self._x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            predictions = tf.cast(self.model(x, training=False), tf.float32)
            y = tf.cast(tf.reshape(self._y, tf.shape(predictions)), tf.float32)
            loss = self._loss(y, predictions) if self._loss else tf.square(predictions - y)
            loss = tf.reduce_mean(loss)
        gradient = tf.cast(tape.gradient(loss, x), tf.float32)
        return [float(value) for value in tf.reduce_mean(tf.norm(gradient, axis=-1), axis=0).numpy()]

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if int(self.model.optimizer.iterations.numpy()) == 0:  # not on a resumed fit
            self.records["initialisation"] = self.measure()

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self.records["trained"] = self.measure()


def _quiet_retracing(record: Any) -> bool:
    return "triggered tf.function retracing" not in record.getMessage()


def metric_keys(layer_names: Iterable[str]) -> list[str]:
    """MLflow metric keys ``grad_norm.<layer>``: only alphanumerics, ``_ - . /`` and spaces,
    no empty or dot path parts (MLflow refuses keys that a path normalisation would change),
    unique even when two names sanitise alike."""
    keys: list[str] = []
    taken: set[str] = set()
    for name in layer_names:
        parts = [_UNSAFE_METRIC_CHARS.sub("_", part) for part in str(name).split("/")]
        parts = [part if part.strip(".") else "_" for part in parts if part]
        key = METRIC_PREFIX + ("/".join(parts) or "_")
        candidate, suffix = key, 2
        while candidate in taken:
            candidate, suffix = f"{key}_{suffix}", suffix + 1
        taken.add(candidate)
        keys.append(candidate)
    return keys


def heatmap(names: Sequence[str], steps: Sequence[int], norms: np.ndarray, title: str) -> Figure:
    """Layers (rows, first at top) x recorded steps, coloured by ``log10`` of the gradient norm.

    Zero and non-finite norms have no logarithm: they are masked and shown grey.
    """
    norms = np.asarray(norms, dtype=float)
    if norms.ndim != 2 or norms.shape != (len(names), len(steps)) or norms.size == 0:
        raise ValueError(
            f"norms must be a non-empty (layers, steps) array of shape ({len(names)}, {len(steps)}), "
            f"got shape {norms.shape}"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(np.where(norms > 0, norms, np.nan))
    masked = np.ma.masked_invalid(logs)
    colours = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    # An all-masked matrix has no range to scale colours to; any fixed one draws it grey.
    limits = (float(masked.min()), float(masked.max())) if masked.count() else (0.0, 1.0)

    rows, columns = norms.shape
    height = min(16.0, max(3.2, 0.22 * min(rows, MAX_LAYER_TICKS) + 1.8))
    width = min(18.0, max(5.5, 0.4 * min(columns, MAX_STEP_TICKS) + 3.5))
    figure, axis = plt.subplots(figsize=(width, height))
    image = axis.imshow(masked, aspect="auto", interpolation="nearest", cmap=colours, vmin=limits[0],
                        vmax=limits[1])
    colour_bar = figure.colorbar(image, ax=axis, fraction=0.046)
    colour_bar.set_label("log10 |dL/dW|")

    layer_stride = math.ceil(rows / MAX_LAYER_TICKS)
    axis.set_yticks(range(0, rows, layer_stride), [names[row] for row in range(0, rows, layer_stride)],
                    fontsize=7 if rows > 20 else 9)
    step_stride = math.ceil(columns / MAX_STEP_TICKS)
    axis.set_xticks(range(0, columns, step_stride), [str(steps[column]) for column in range(0, columns, step_stride)],
                    rotation=90 if columns > 12 else 0)
    axis.set_xlabel("training step (grey: gradient exactly 0, or not finite)" if np.ma.is_masked(masked)
                    else "training step")
    axis.set_ylabel("layer (input at top)")

    if rows >= 2:
        column = list(steps).index(0) if 0 in steps else 0
        ratio = _ratio(norms[0, column], norms[-1, column])
        axis.text(0.02, 0.98, f"first/last at step {steps[column]}: {ratio:.1e}", transform=axis.transAxes,
                  ha="left", va="top", fontsize=8,
                  bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "grey", "pad": 3})
    axis.set_title(title)
    figure.tight_layout()
    return figure


def ratio_plot(series: Mapping[str, Sequence[float]], title: str) -> Figure:
    """Per-layer gradient norm at step 0 against layer index, one line per model, log y-axis."""
    if not series:
        raise ValueError("series must name at least one model, got an empty mapping")
    from pipelines import plots

    def shown(values: Sequence[float]) -> tuple[range, np.ndarray]:
        values = np.asarray(values, dtype=float)
        # A log axis cannot place zeros or non-finite values: leave gaps there.
        return range(1, len(values) + 1), np.where(np.isfinite(values) & (values > 0), values, np.nan)

    return plots.lines({name: shown(values) for name, values in series.items()}, title, "layer (input → output)",
                       "|dL/dW| at step 0", log_y=True)


# --- helpers ---------------------------------------------------------------------------


def _check_batch(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    x_size = len(x) if x.ndim else 0
    y_size = len(y) if y.ndim else 0
    if x_size == 0 or x_size != y_size:
        raise ValueError(
            f"x and y must hold the same number (at least 1) of examples, got len(x)={x_size}, len(y)={y_size}"
        )
    # Keras' data adapters turn float64 arrays into floatx; do the same so the batch
    # goes through the model exactly like a training batch.
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(keras.backend.floatx())
    if np.issubdtype(y.dtype, np.floating):
        y = y.astype(keras.backend.floatx())
    return x, y


def _check_steps(steps: Sequence[int] | None) -> frozenset[int] | None:
    if steps is None:
        return None
    checked = set()
    for step in steps:
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
            raise ValueError(f"steps must be integers >= 0, got {step!r} in {list(steps)!r}")
        checked.add(int(step))
    return frozenset(checked)


def _resolve_loss(loss: Callable[..., Any] | str | None) -> Callable[..., Any] | None:
    if loss is None:
        return None
    if isinstance(loss, str):
        try:
            return keras.losses.get(loss)
        except ValueError as error:
            message = f"loss {loss!r} is not a Keras loss name, e.g. 'mse' or 'sparse_categorical_crossentropy'"
            raise ValueError(message) from error
    if not callable(loss):
        raise ValueError(f"loss must be a Keras loss name, a Loss or a function (y_true, y_pred), got {loss!r}")
    return loss() if inspect.isclass(loss) else loss


def _compiled_loss(model: keras.Model, x: tf.Tensor, y: tf.Tensor, y_pred: Any) -> tf.Tensor:
    """The objective ``fit`` minimises: compiled loss plus ``model.losses`` (regularisers)."""
    # Overrides written before Keras 3.3 have no ``training`` argument.
    if "training" in inspect.signature(model.compute_loss).parameters:
        return model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
    return model.compute_loss(x=x, y=y, y_pred=y_pred)


def _kernel_variables(model: keras.Model) -> list[tuple[str, Any]]:
    """``(name, variable)`` for every kernel in forward order, nested models flattened as ``outer/inner``."""
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def visit(layer: keras.layers.Layer, prefix: str) -> None:
        if isinstance(layer, keras.Model):
            for sublayer in layer.layers:
                visit(sublayer, f"{prefix}{layer.name}/")
            # Kernels a subclassed model owns directly, outside any sublayer.
            leftovers = [v for v in layer.variables if _is_kernel(v) and id(v) not in seen]
            for variable in leftovers:
                seen.add(id(variable))
                found.append((f"{prefix}{layer.name}/{variable.name}", variable))
            return
        kernels = [v for v in layer.variables if _is_kernel(v) and id(v) not in seen]
        seen.update(id(v) for v in kernels)
        if len(kernels) == 1:
            found.append((f"{prefix}{layer.name}", kernels[0]))
            return
        short = [v.name for v in kernels]
        for variable in kernels:
            suffix = variable.name if short.count(variable.name) == 1 else _path_inside(variable.path, layer.name)
            found.append((f"{prefix}{layer.name}/{suffix}", variable))

    for layer in model.layers:
        visit(layer, "")
    # Kernels the top-level model owns itself (a subclassed model's own weights).
    for variable in model.variables:
        if _is_kernel(variable) and id(variable) not in seen:
            seen.add(id(variable))
            found.append((variable.path, variable))
    return found


def _is_kernel(variable: Any) -> bool:
    return variable.name.endswith("kernel")


def _path_inside(path: str, layer_name: str) -> str:
    """``bi/forward_gru/gru_cell/kernel`` -> ``forward_gru/gru_cell/kernel`` for layer ``bi``."""
    parts = path.split("/")
    return "/".join(parts[parts.index(layer_name) + 1:]) if layer_name in parts[:-1] else path


def _state_variables(model: keras.Model) -> list[Any]:
    """What a training-mode forward pass and loss may change: moving statistics, seed
    states, loss trackers. Trainable weights only change in the optimizer step."""
    unique: dict[int, Any] = {}
    for variable in [*model.non_trainable_variables, *model.metrics_variables]:
        unique.setdefault(id(variable), variable)
    return list(unique.values())


def _l2_norm(gradient: Any) -> tf.Tensor:
    if gradient is None:
        # The kernel does not reach the loss (an unused branch): its gradient is zero.
        return tf.constant(0.0, tf.float32)
    values = tf.cast(tf.convert_to_tensor(gradient), tf.float32)
    # Scale by the largest entry first so squaring neither overflows (exploding
    # gradients) nor underflows (vanishing ones, float16 under mixed precision).
    largest = tf.reduce_max(tf.abs(values)) if values.shape.num_elements() != 0 else tf.constant(0.0)
    scale = tf.where(tf.math.is_finite(largest) & (largest > 0), largest, tf.ones_like(largest))
    return scale * tf.sqrt(tf.reduce_sum(tf.square(values / scale)))


def _ratio(first: float, last: float) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(first) / np.float64(last))
