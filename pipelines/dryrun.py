"""``nnzoo run FAMILY --dry-run``: what a run would need and take, without training.

For the config a run would use it resolves every dataset the config names (prepared by
tensorflow-datasets or not, where, what a download brings), builds every model the run
trains (parameters, FLOPs per example, activation memory per example and per batch),
times one forward/backward step of each at its batch size on this device, and
estimates the training time from the number of steps. A family lists what it trains in
``dry_run_models(config, examples)`` of its stage module (:class:`ModelPlan`), and what
else a run needs that may be missing here in ``dry_run_needs(config)`` (optional).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipelines.config import flatten, to_dict
from pipelines.errors import NnzooError


class DryRunDataMissingError(NnzooError, RuntimeError):
    """A dataset the run needs is not prepared here and downloads are off."""


@dataclasses.dataclass(frozen=True)
class ModelPlan:
    """One training of a run, as the dry run sees it."""

    name: str
    """The run's name for it (``cnn``, ``adding-lstm-uni-t400``)."""
    build: Callable[[], Any]
    """Builds the Keras model the run trains (or, for a model with its own training
    loop, the network its steps run through)."""
    inputs: Sequence[tuple[tuple[int, ...], str]]
    """One ``(shape without the batch axis, dtype)`` per model input."""
    batch_size: int
    steps: int
    """Gradient steps of the whole training (an upper bound where early stopping may end it sooner)."""
    note: str = ""
    """How ``steps`` was counted, or what the timed step leaves out."""
    count: int = 1
    """Trainings of this shape (seeds, label shares): the estimate multiplies."""


def steps(examples: int, batch_size: int, epochs: int) -> int:
    """Gradient steps of ``epochs`` passes over ``examples`` in batches (the last one partial)."""
    return -(-examples // batch_size) * epochs


def stopping_note(train: Any) -> str:
    """``", early stopping (patience N) may end it sooner"`` when the trainer's config stops early."""
    patience = train.early_stopping_patience
    return f", early stopping (patience {patience}) may end it sooner" if patience else ""


def training_examples(data: Any, examples: Mapping[str, int]) -> int:
    """The training split of data config ``data`` (its dataset's published count, at most
    ``max_examples``, less the validation and test shares); 0 when the count is unknown."""
    total = min(examples.get(data.dataset, 0), data.max_examples or 10**12)
    return int(total * (1 - data.val_fraction - data.test_fraction))


def dataset_needs(config: Any) -> list[dict[str, Any]]:
    """Every registered dataset the config names (any string field), with where its data
    would come from: for a tensorflow-datasets one, whether it is prepared in the data_dir
    and how much a download brings."""
    from pipelines.data.registry import dataset_names, get_dataset

    known = set(dataset_names())
    data_dir = getattr(getattr(config, "data", None), "data_dir", None)
    found = []
    for path, value in flatten(to_dict(config)).items():
        if isinstance(value, str) and value in known and value not in {entry["name"] for entry in found}:
            dataset = get_dataset(value)
            entry = {"name": value, "field": path, "source": dataset.source, "examples": dataset.examples}
            if dataset.tfds_name:
                entry.update(_tfds_status(dataset.tfds_name, data_dir))
            else:
                entry.update(prepared=True, where="bundled or generated", download_bytes=0)
            found.append(entry)
    return found


def _tfds_status(name: str, data_dir: str | None) -> dict[str, Any]:
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    prepared = bool(builder.is_prepared())
    download = sum(getattr(info, "size", 0) or 0 for info in (builder.url_infos or {}).values())
    return {"tfds": name, "prepared": prepared, "where": str(builder.data_dir), "download_bytes": int(download),
            "version": str(builder.version)}


def _activation_bytes(model: Any, policy_bytes: int) -> int:
    """Bytes of every layer output per example (what backpropagation keeps), at ``policy_bytes`` each."""
    import numpy as np

    total = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        try:
            outputs = layer.output
        except (AttributeError, ValueError):
            continue
        for tensor in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
            shape = tuple(getattr(tensor, "shape", ()) or ())[1:]
            if shape and all(dim is not None for dim in shape):
                total += int(np.prod(shape)) * policy_bytes
    return total


def time_step(model: Any, inputs: Sequence[tuple[tuple[int, ...], str]], batch_size: int, repeats: int = 3) -> float:
    """Seconds of one forward/backward pass (a summed-output loss) over a random batch,
    the median of ``repeats`` after a warm-up; the optimizer update is left out."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    batch = []
    for shape, dtype in inputs:
        if "int" in dtype:
            batch.append(tf.constant(rng.integers(0, 2, size=(batch_size, *shape)), dtype=dtype))
        else:
            batch.append(tf.constant(rng.random((batch_size, *shape)), dtype=dtype))
    feed = batch[0] if len(batch) == 1 else batch

    @tf.function
    def step() -> Any:
        with tf.GradientTape() as tape:
            outputs = model(feed, training=True)
            parts = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            loss = tf.add_n([tf.reduce_mean(tf.cast(part, tf.float32)) for part in parts])
        return tape.gradient(loss, model.trainable_variables)

    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return float(sorted(times)[len(times) // 2])


def examples_of(datasets: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Examples per dataset name: the published count, which the plans split themselves."""
    return {entry["name"]: int(entry["examples"]) for entry in datasets if entry.get("examples")}


def dry_run(family: Any, config: Any, *, time_steps: bool = True, say: Callable[[str], None] = print
            ) -> dict[str, Any]:
    """The plan of ``family``'s run with ``config`` (see the module docstring). Raises
    :class:`DryRunDataMissingError` after the plan when a dataset is missing offline."""
    import importlib

    from pipelines import train as trainer
    from pipelines.flops import count_flops

    datasets = dataset_needs(config)
    module = importlib.import_module(f"pipelines.stages.{family.name}")
    plans: Sequence[ModelPlan] = module.dry_run_models(config, examples_of(datasets))
    device = trainer.device_description()
    train_config = getattr(config, "train", None)
    mixed = bool(getattr(train_config, "mixed_precision", False))
    switches = {key: getattr(train_config, key) for key in ("mixed_precision", "jit_compile", "distribute",
                                                             "steps_per_execution")} if train_config else {}
    # Memory is counted at the run's precision; the step is timed in float16 only on a GPU
    # (on a CPU float16 convolutions are emulated, 100x slower than what a run there would do).
    import tensorflow as tf

    timed_mixed = mixed and bool(tf.config.list_physical_devices("GPU"))
    trainer.configure_precision(timed_mixed)
    models = []
    try:
        for plan in plans:
            model = plan.build()
            shapes = [shape for shape, _ in plan.inputs]
            flops = count_flops(model, shapes[0] if len(shapes) == 1 else shapes)
            activations = _activation_bytes(model, 2 if mixed else 4)
            row = {"name": plan.name, "params": int(model.count_params()), "flops_per_example": float(flops.total),
                   "activation_bytes_per_example": activations, "batch_size": plan.batch_size,
                   "activation_bytes_per_batch": activations * plan.batch_size,
                   "weights_bytes": int(model.count_params()) * 4, "steps": plan.steps, "count": plan.count,
                   "note": plan.note}
            if time_steps:
                seconds = time_step(model, plan.inputs, plan.batch_size)
                row.update(step_seconds=seconds, estimated_seconds=seconds * plan.steps * plan.count)
            models.append(row)
            say(_model_line(row))
    finally:
        trainer.configure_precision(False)
    total = sum(row.get("estimated_seconds", 0.0) for row in models)
    result = {"family": family.name, "profile": config.profile, "device": device, "switches": switches,
              "timed_in": "mixed_float16" if timed_mixed else "float32",
              "datasets": datasets, "models": models, "estimated_training_seconds": total if time_steps else None}
    missing = [entry for entry in datasets if not entry["prepared"]]
    result["missing"] = [entry["name"] for entry in missing]
    # Needs besides datasets (pretrained weights), from the family: ``dry_run_needs(config)``.
    problems = list(getattr(module, "dry_run_needs", lambda config: [])(config))
    if missing and os.environ.get("NNZOO_TFDS_DOWNLOAD", "0") != "1":
        problems += [
            f"dataset {entry['name']} (tfds {entry['tfds']} {entry.get('version', '')}) is not prepared in "
            f"{entry['where']} and downloads are off: fetch it once where there is network access with "
            f"`tfds build {entry['tfds']} --data_dir DIR` (then data.data_dir=DIR) or run with "
            f"NNZOO_TFDS_DOWNLOAD=1 ({_size(entry['download_bytes'])} to download)" for entry in missing]
    if problems:
        result["error"] = "; ".join(problems)
    return result


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _model_line(row: Mapping[str, Any]) -> str:
    timed = (f", step {row['step_seconds'] * 1000:.0f} ms -> {_duration(row['estimated_seconds'])}"
             if "step_seconds" in row else "")
    times = f" x{row['count']}" if row["count"] > 1 else ""
    return (f"[nnzoo] {row['name']}{times}: {row['params']:,} params, {row['flops_per_example'] / 1e6:,.1f} MFLOPs/example, "
            f"activations {_size(row['activation_bytes_per_example'])}/example "
            f"({_size(row['activation_bytes_per_batch'])} at batch {row['batch_size']}), "
            f"{row['steps']:,} steps{timed}")


def render(result: Mapping[str, Any]) -> str:
    """The dry run as the terminal shows it."""
    lines = [f"{result['family']} ({result['profile']} profile) on {result['device']}",
             "switches: " + ", ".join(f"{key}={value}" for key, value in result["switches"].items())
             + (f" (steps timed in {result['timed_in']})" if result["switches"].get("mixed_precision") else ""),
             "datasets:"]
    for entry in result["datasets"]:
        status = ("bundled or generated" if "tfds" not in entry else
                  f"prepared in {entry['where']}" if entry["prepared"] else
                  f"NOT prepared ({entry['where']}); download {_size(entry['download_bytes'])}")
        examples = f", {entry['examples']:,} examples" if entry.get("examples") else ""
        lines.append(f"  {entry['name']:<16} ({entry['field']}) {entry['source']}{examples}: {status}")
    lines.append("models:")
    header = f"  {'model':<28} {'params':>11} {'MFLOPs/ex':>10} {'act/ex':>9} {'act/batch':>10} {'steps':>8} " \
             f"{'ms/step':>8} {'estimate':>9}"
    lines.append(header)
    for row in result["models"]:
        name = row["name"] + (f" x{row['count']}" if row["count"] > 1 else "")
        timed = (f"{row['step_seconds'] * 1000:>8.0f} {_duration(row['estimated_seconds']):>9}"
                 if "step_seconds" in row else f"{'-':>8} {'-':>9}")
        lines.append(f"  {name:<28} {row['params']:>11,} {row['flops_per_example'] / 1e6:>10,.1f} "
                     f"{_size(row['activation_bytes_per_example']):>9} {_size(row['activation_bytes_per_batch']):>10} "
                     f"{row['steps']:>8,} {timed}")
    if result.get("estimated_training_seconds") is not None:
        lines.append(f"training estimate on this device: {_duration(result['estimated_training_seconds'])} "
                     "(forward/backward steps only; data, evaluation and the optimizer update come on top)")
    return "\n".join(lines)
