"""One generic trainer around ``model.fit``.

It owns what every family needs: seeding, precision and XLA switches, the optimizer,
early stopping, a NaN guard, resumable checkpoints and per-epoch metrics to MLflow
(through :mod:`pipelines.tracking`). Models with a special objective override
``train_step``; they still train here.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from pipelines.errors import NnzooError


class TrainingDivergedError(NnzooError, RuntimeError):
    """The loss became NaN or infinite; the run is failed and nothing is registered."""


class NaNGuard(keras.callbacks.TerminateOnNaN):
    """``TerminateOnNaN`` that also remembers where the loss went bad."""

    def __init__(self) -> None:
        super().__init__()
        self.bad: tuple[int, int, float] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.bad is None:
            self.bad = (self._epoch + 1, batch + 1, float(loss))
        super().on_batch_end(batch, logs)


class EpochProgress(keras.callbacks.Callback):
    """One line per epoch on stdout: ``[nnzoo] cnn epoch 3/20 loss=0.1 ... (4.2s)``."""

    def __init__(self, label: str, epochs: int) -> None:
        super().__init__()
        self.label = label
        self.epochs = epochs
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = " ".join(f"{key}={float(value):.4f}" for key, value in (logs or {}).items()
                          if key != "learning_rate")
        seconds = time.perf_counter() - self._started
        print(f"[nnzoo] {self.label} epoch {epoch + 1}/{self.epochs} {values} ({seconds:.1f}s)", flush=True)


class StopBelow(keras.callbacks.Callback):
    """Stop once ``monitor`` (e.g. ``val_loss``) falls below ``threshold`` at the end of an
    epoch: a run that has solved its task does not spend its remaining epochs."""

    def __init__(self, monitor: str, threshold: float) -> None:
        super().__init__()
        self.monitor = monitor
        self.threshold = threshold
        self.stopped_at: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is not None and float(value) < self.threshold:
            self.model.stop_training = True
            self.stopped_at = epoch + 1


def configure_devices() -> list[str]:
    """Turn on GPU memory growth, so a task takes the memory it needs instead of all
    of it and tasks sharing a GPU host do not starve each other. Returns GPU names.

    Must run before TensorFlow touches a GPU; later calls are harmless no-ops.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialised in this process: the setting cannot change any more
    return [gpu.name for gpu in gpus]


def distribution_scope(distribute: str):
    """Context in which to build and compile the model: ``mirrored`` replicates it on
    every visible GPU of this worker (``tf.distribute.MirroredStrategy``)."""
    import contextlib

    if distribute == "none":
        return contextlib.nullcontext()
    if distribute == "mirrored":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy().scope()
    raise ValueError(f"distribute={distribute!r}: expected none or mirrored")


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and the backend so a run repeats."""
    keras.utils.set_random_seed(seed)


def configure_precision(mixed_precision: bool) -> None:
    """Set the global dtype policy before models are built."""
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")


def make_optimizer(
    name: str, learning_rate: float, schedule: str = "constant", total_steps: int | None = None
) -> keras.optimizers.Optimizer:
    """The named optimizer; ``schedule="cosine"`` decays the rate to 0 over ``total_steps``."""
    optimizers = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
    if name not in optimizers:
        raise ValueError(f"optimizer={name!r}: expected one of {', '.join(optimizers)}")
    if schedule == "cosine":
        if not total_steps or total_steps < 1:
            raise ValueError(f"total_steps={total_steps}: cosine decay needs the number of training steps")
        rate: Any = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps)
    elif schedule == "constant":
        rate = learning_rate
    else:
        raise ValueError(f"lr_schedule={schedule!r}: expected constant or cosine")
    return optimizers[name](learning_rate=rate)


def _steps_per_epoch(data: Any) -> int | None:
    try:
        steps = int(data.cardinality())
    except (AttributeError, TypeError):
        return None
    return steps if steps > 0 else None


def device_description() -> str:
    """``GPU x N (name)`` or ``CPU``: recorded with every run."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU ({os.cpu_count()} cores)"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"GPU x {len(gpus)} ({details.get('device_name', 'unknown')})"


def reset_gpu_peak() -> None:
    """Start counting the first GPU's peak memory afresh (no GPU: nothing)."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.reset_memory_stats("GPU:0")
        except (ValueError, RuntimeError):
            pass  # not initialised yet: counting starts at zero anyway


def gpu_peak_memory() -> dict[str, float]:
    """``{"gpu_peak_memory_mb": ...}``: the first GPU's peak allocation since
    :func:`reset_gpu_peak`; empty without a GPU."""
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return {}
    try:
        return {"gpu_peak_memory_mb": tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20}
    except (ValueError, RuntimeError):
        return {}


def fit(
    model: keras.Model,
    train_data: Any,
    val_data: Any,
    train_config: Any,
    *,
    loss: Any = "sparse_categorical_crossentropy",
    metrics: Sequence[Any] = ("accuracy",),
    checkpoint_dir: str | os.PathLike | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    progress_label: str | None = None,
    verbose: int | str = 0,
    steps_per_epoch: int | None = None,
    steps_per_execution: int | None = None,
) -> keras.callbacks.History:
    """Compile and fit ``model`` with ``train_config`` (:class:`pipelines.config.TrainConfig`).

    With ``checkpoint_dir`` a killed fit resumes from its last completed epoch
    (``keras.callbacks.BackupAndRestore``). Raises :class:`TrainingDivergedError` if the
    loss is not finite; the best weights by validation loss are restored at the end.
    ``progress_label`` prints one line per epoch under that name. ``steps_per_epoch``
    is required for endless (repeated) data; ``steps_per_execution`` (default: the config's)
    runs that many steps per call into the compiled graph, which pays off for many tiny steps.
    """
    steps = steps_per_epoch or _steps_per_epoch(train_data)
    model.compile(
        optimizer=make_optimizer(train_config.optimizer, train_config.learning_rate, train_config.lr_schedule,
                                 None if steps is None else steps * train_config.epochs),
        loss=loss,
        metrics=list(metrics),
        jit_compile=train_config.jit_compile,
        steps_per_execution=steps_per_execution or train_config.steps_per_execution,
        # Tracing a graph costs seconds per model, more than a smoke run's few steps take eagerly.
        run_eagerly=train_config.run_eagerly and not train_config.jit_compile,
    )
    guard = NaNGuard()
    all_callbacks: list[keras.callbacks.Callback] = [guard, *callbacks]
    if progress_label:
        all_callbacks.append(EpochProgress(progress_label, train_config.epochs))
    if train_config.early_stopping_patience and val_data is not None:
        all_callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=train_config.early_stopping_patience, restore_best_weights=True))
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        all_callbacks.append(keras.callbacks.BackupAndRestore(str(checkpoint_dir)))
    if train_config.jit_compile and not model.jit_compile:
        unable = sorted({type(layer).__name__ for layer in model._flatten_layers() if not layer.supports_jit})
        print(f"[nnzoo] {model.name}: XLA was asked for (train.jit_compile) but Keras cannot compile "
              f"{', '.join(unable) or 'this model'}; it trains without XLA", flush=True)
    history = model.fit(
        train_data, validation_data=val_data, epochs=train_config.epochs, callbacks=all_callbacks, verbose=verbose,
        steps_per_epoch=steps_per_epoch,
        # A tf.data pipeline shuffles itself; Keras would warn that it ignores shuffle=True.
        shuffle=not hasattr(train_data, "cardinality"),
    )
    losses = history.history.get("loss", [])
    bad_epochs = [i + 1 for i, value in enumerate(losses) if not math.isfinite(value)]
    if guard.bad is not None or bad_epochs:
        epoch, batch, value = guard.bad or (bad_epochs[0], 0, float("nan"))
        raise TrainingDivergedError(
            f"loss became {value} at epoch {epoch}, batch {batch} "
            f"(optimizer={train_config.optimizer}, learning_rate={train_config.learning_rate}); "
            "lower train.learning_rate or check the data"
        )
    return history


def classification_scores(model: Any, images: Any, labels: Any, *, normalize: bool = True) -> tuple[dict, Any]:
    """``({"accuracy", "loss"}, predicted classes)`` of a softmax classifier on ``images``
    (uint8 scaled to [0, 1] unless ``normalize`` is off): accuracy and mean cross-entropy."""
    import numpy as np

    from pipelines.data.prepared import normalize_images

    inputs = normalize_images(np.asarray(images)) if normalize else images
    probabilities = np.asarray(model.predict(inputs, batch_size=512, verbose=0))
    predicted = probabilities.argmax(axis=1)
    picked = probabilities[np.arange(len(labels)), labels]
    return {"accuracy": float((predicted == labels).mean()),
            "loss": float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())}, predicted
