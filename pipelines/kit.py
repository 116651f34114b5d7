"""The family kit's stage side: data preparation, the parent-run lifecycle, run
identity and params, the training skeleton (plan -> reuse, resume or run -> fit ->
curves, model), evaluation reuse, and registration with promotion."""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipelines import settings, tracking
from pipelines.config import MOCK_SUFFIX, ExperimentConfig, flatten, to_dict
from pipelines.families import Family, registered_name


def prepare_data(family: Family, config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Materialise the family's dataset split and return its reference.

    ``changed`` is True when this content of the dataset is new to the data dir (the
    DAG then emits an event on the dataset's Asset, which schedules retraining).
    Also creates the family's MLflow experiment, so parallel training tasks that
    follow never race to create the store or the experiment, and, for a pipeline with
    a parent run, opens it (a retry of the same orchestrated run gets the same one).
    """
    from pipelines.data.prepared import prepare, record_latest

    typed = family.load(config)
    prepared = prepare(typed.data)
    tracking.ensure_experiment(family.experiment_name, family.description)
    data = {"data_uri": prepared.uri, "dataset": prepared.name, "fingerprint": prepared.fingerprint,
            "sizes": dict(prepared.sizes), "profile": typed.profile_label,
            # Mock data is no news about the dataset: nothing is retrained on it.
            "changed": False if typed.mock_data else record_latest(typed.data, prepared.fingerprint)}
    if family.pipeline.parent_run:
        key = run_key(inputs, "pipeline")
        parent = tracking.start_run(family.experiment_name, f"{family.name}-{typed.profile_label}", run_key=key,
                                    tags=run_tags(family, typed, "pipeline", "pipeline"))
        tracking.log_params(parent, run_params(typed, prepared))
        log_dataset(parent, prepared)
        data["parent_run_id"] = parent
        say(f"{family.name}: parent run {parent} for {prepared.name} {prepared.fingerprint} {data['sizes']}")
    return data


def finish(family: Family, config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """End the pipeline's parent run: FINISHED when every last step (the pipeline's
    leaves) returned, else FAILED naming the nested runs that failed. It runs whatever
    happened upstream (in Airflow: trigger rule ``all_done``)."""
    parent = parent_run_of(inputs)
    if "reason" not in inputs and all(inputs.get(leaf) is not None for leaf in family.pipeline.leaves()):
        tracking.end_run(parent, "FINISHED")
        return {"parent_run_id": parent, "status": "FINISHED"}
    experiment_id = tracking.ensure_experiment(family.experiment_name)
    failed = []
    for child in tracking.child_runs(experiment_id, parent):
        if child.info.status in ("FAILED", "KILLED"):
            failed.append(f"{child.info.run_name}: {child.data.tags.get(tracking.TAG_FAILURE, child.info.status)}")
        elif child.info.status == "RUNNING":
            # The pipeline is over (this runs after every other step), so a run still
            # RUNNING belonged to a worker that died and whose retries are spent.
            tracking.end_run(child.info.run_id, "KILLED", "worker died before the run ended")
            failed.append(f"{child.info.run_name}: worker died before the run ended")
    reason = inputs.get("reason") or ("; ".join(failed) if failed else "an upstream step failed before any run")
    tracking.end_run(parent, "FAILED", f"pipeline did not complete: {reason}")
    say(f"{family.name}: parent run {parent} FAILED: {reason}")
    return {"parent_run_id": parent, "status": "FAILED", "reason": reason}


def parent_run_of(inputs: dict[str, Any]) -> str:
    """The pipeline's parent run id, which ``prepare_data`` put into every step's inputs."""
    parent = inputs.get("parent_run_id")
    if not parent:
        raise ValueError("inputs lack parent_run_id: run prepare_data first, it opens the pipeline's parent run")
    return parent


def log_dataset(run_id: str, data: Any, context: str = "training") -> None:
    """The prepared dataset as the run's MLflow dataset input (name, fingerprint, file)."""
    tracking.log_dataset(run_id, data.name, data.fingerprint, getattr(data, "uri", "") or getattr(data, "source", ""),
                         context=context, sizes=getattr(data, "sizes", None))


def say(text: str) -> None:
    """Progress for the user: every line prefixed, so log filters (``make run``) keep tables whole."""
    print("\n".join(f"[nnzoo] {line}" for line in str(text).splitlines()), flush=True)


def run_tags(family: Family, typed: ExperimentConfig, model: str, stage: str, **labels: Any) -> dict[str, Any]:
    """The tags of a family's run; ``labels`` (``task="adding"``) become ``nnzoo.<label>``."""
    return {tracking.TAG_FAMILY: family.name, tracking.TAG_MODEL: model, tracking.TAG_PROFILE: typed.profile_label,
            tracking.TAG_STAGE: stage, **{tracking.tag(name): value for name, value in labels.items()}}


@functools.cache
def git_commit() -> str:
    """The commit the code runs from (``-dirty`` if modified), or ``unknown``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=settings.REPO_ROOT, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=settings.REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_params(config: ExperimentConfig, data: Any, **extra: Any) -> dict[str, Any]:
    """What every run logs: the flattened config, dataset identity (name, fingerprint,
    source, split sizes), code version, device; then ``extra``."""
    from pipelines.train import device_description

    params = flatten(to_dict(config))
    if data is not None:
        params.update({"dataset.name": data.name, "dataset.fingerprint": data.fingerprint,
                       "dataset.source": data.source,
                       **{f"dataset.{split}_size": size for split, size in data.sizes.items()}})
    params.update({"code.git_commit": git_commit(), "device": device_description(), **extra})
    return params


def builder_kwargs(section: Any) -> dict[str, Any]:
    """A config section as keyword arguments of a model builder (lists as tuples)."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in to_dict(section).items()}


def run_key(inputs: dict[str, Any], name: str) -> str | None:
    """Identity of a task's run across retries (``<dag run>/<name>``), if orchestrated."""
    base = inputs.get("run_key")
    return f"{base}/{name}" if base else None


TAG_MODEL_URI = "nnzoo.model_uri"
TAG_CACHE_KEY = "nnzoo.cache_key"
TAG_CACHE_HIT = "nnzoo.cache.last_hit"
TAG_RESUMED = "nnzoo.resumed"
TAG_EVALUATED_ON = "nnzoo.evaluated_on"
# Values that change what is done with a result, not the result itself.
_NOT_IN_CACHE_KEY = ("cache", "promotion_tolerance")


def cache_key(config: ExperimentConfig, model: str, fingerprint: str) -> str:
    """Hash of what determines a training's result: config, model, data, code release."""
    import hashlib
    import json

    from pipelines import __version__

    params = {k: v for k, v in flatten(to_dict(config)).items() if k not in _NOT_IN_CACHE_KEY}
    payload = json.dumps({"config": params, "model": model, "data": fingerprint, "nnzoo": __version__},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """What a training stage does: reuse a finished run, resume one, or start afresh."""

    experiment_id: str
    run_key: str | None
    cache_key: str
    reuse: dict[str, Any] | None = None
    resume_run_id: str | None = None
    logged_epochs: int = 0


def plan_training(
    family: Family, config: ExperimentConfig, model: str, inputs: dict[str, Any], fingerprint: str
) -> TrainingPlan:
    """Decide between reuse, resume and a new run, so that retries and repeats never
    duplicate a run or a registered version:

    * the same orchestrated task (same ``run_key``) already FINISHED -> reuse it;
    * it started but did not finish (killed worker, failure) -> resume that run from its
      checkpoint, continuing its metric history;
    * ``config.cache`` and a FINISHED run with the same cache key -> reuse it.
    """
    key = run_key(inputs, model)
    ckey = cache_key(config, model, fingerprint)
    experiment_id = tracking.ensure_experiment(family.experiment_name)
    plan = TrainingPlan(experiment_id, key, ckey)
    if key:
        earlier = tracking.find_run(experiment_id, key)
        if earlier is not None:
            if earlier.info.status == "FINISHED" and TAG_MODEL_URI in earlier.data.tags:
                say(f"{model}: run {earlier.info.run_id} already finished for {key}; reusing it")
                return dataclasses.replace(plan, reuse=_outputs(model, earlier, cached=False))
            logged = tracking.max_logged_step(earlier.info.run_id, "loss")
            say(f"{model}: resuming run {earlier.info.run_id} ({earlier.info.status}, "
                  f"{logged} epoch(s) logged) from its checkpoint")
            return dataclasses.replace(plan, resume_run_id=earlier.info.run_id, logged_epochs=logged)
    if config.cache:
        for earlier in tracking.find_runs_by_tag(experiment_id, TAG_CACHE_KEY, ckey, status="FINISHED"):
            if TAG_MODEL_URI in earlier.data.tags:
                say(f"{model}: cache hit, reusing finished run {earlier.info.run_id} "
                      f"(same config, model and data {fingerprint}); nothing is trained")
                tracking.set_tags(earlier.info.run_id, {TAG_CACHE_HIT: key or "cli"})
                return dataclasses.replace(plan, reuse=_outputs(model, earlier, cached=True))
    return plan


def finished_run(family: Family, key: str | None) -> Any | None:
    """The FINISHED run of an earlier try of this task (same run key), if any: a step
    that is not a training (no :func:`plan_training`) reuses it instead of running twice."""
    if not key:
        return None
    earlier = tracking.find_run(tracking.ensure_experiment(family.experiment_name), key)
    return earlier if earlier is not None and earlier.info.status == "FINISHED" else None


def side_run(family: Family, typed: ExperimentConfig, inputs: dict[str, Any], name: str,
             work: Callable[[Any], Mapping[str, float]], *, run_name: str | None = None, stage: str | None = None,
             data: Any = None, params: Mapping[str, Any] | None = None, labels: Mapping[str, Any] | None = None,
             done: Callable[[Any], bool] | None = None) -> dict[str, Any]:
    """The non-training step kind (a conversion, a count, a comparison): one run of model
    ``name``, nested under the pipeline's parent run, with the config, dataset, commit and
    device as params (:func:`run_params`, plus ``params``); ``work(run)`` does the step,
    logs what it likes into ``run`` and returns the metrics, which the kit logs. A retry
    of the task reuses the run once it FINISHED (and ``done(run)`` holds, when given);
    a failure ends it FAILED with the reason. Returns ``run_id`` and ``metrics``."""
    key = run_key(inputs, name)
    earlier = finished_run(family, key)
    if earlier is not None and (done is None or done(earlier)):
        say(f"{name}: run {earlier.info.run_id} already finished for {key}; reusing it")
        return {"run_id": earlier.info.run_id, "metrics": dict(earlier.data.metrics)}
    parent = parent_run_of(inputs) if family.pipeline.parent_run else None
    with tracking.run(family.experiment_name, run_name or name, run_key=key, parent_run_id=parent,
                      tags=run_tags(family, typed, name, stage or name, **(labels or {}))) as run:
        run.log_params(run_params(typed, data, model=name, **(params or {})))
        metrics = {key: float(value) for key, value in work(run).items()}
        run.log_metrics(metrics)
    return {"run_id": run.run_id, "metrics": metrics}


def _outputs(model: str, run: Any, *, cached: bool) -> dict[str, Any]:
    return {"model": model, "run_id": run.info.run_id, "model_uri": run.data.tags[TAG_MODEL_URI], "cached": cached,
            "metrics": dict(run.data.metrics)}


def checkpoint_dir(run_id: str):
    """Run-scoped folder for resumable checkpoints (shared storage in distributed mode)."""
    return settings.work_dir() / "checkpoints" / run_id


@dataclasses.dataclass(frozen=True)
class Training:
    """One training as a family describes it; :func:`run_training` does the rest."""

    name: str
    """Model key: the run key's suffix, part of the cache key."""
    build: Callable[[], Any]
    """Builds the Keras model; called inside the distribution scope."""
    arrays: tuple[Any, Any] | None = None
    """``(train, validation)`` arrays, each ``(x, y)`` (or ``x`` alone): batched by
    :func:`~pipelines.data.prepared.batches` at the trainer's batch size (training
    shuffled with the seed, endless when ``fit`` sets ``steps_per_epoch``; validation in
    batches of 512, none when empty), images scaled to [0, 1] unless ``normalize`` is
    off. Or ``datasets``."""
    normalize: bool = True
    datasets: Callable[[], tuple[Any, Any]] | None = None
    """``(train, validation or None)`` pipelines, made after seeding."""
    example: Any = None
    """A few inputs: the logged model's signature; with ``arrays``, the first four training inputs."""
    data: Any = None
    """The prepared dataset trained on (its identity goes into params and cache key)."""
    fingerprint: str | None = None
    """Identity of data that is not a prepared dataset."""
    depends_on: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Identities of other inputs the result depends on (a style image, the weights of a
    loss network): part of the cache key, so a changed one is never served from cache."""
    run_name: str | None = None
    model_tag: str | None = None
    stage: str = "train"
    tags: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    train: Any = None
    """The trainer's :class:`~pipelines.config.TrainConfig`; default: the config's ``train``."""
    fit: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """More :func:`pipelines.train.fit` arguments: loss, metrics, steps_per_epoch, ..."""
    after: Callable[[Any, Any, Any], Mapping[str, float] | None] | None = None
    """``after(run, model, history)``: the family's artifacts; returns metrics to log."""
    seed: int | None = None
    float32: bool = False
    """Train in float32 on one device whatever the switches say (e.g. CD statistics)."""
    keep_model: bool = True
    examples: int | None = None
    """Training examples per epoch, for ``examples_per_second``."""
    progress: bool = True
    """One line per epoch on stdout (off for many short trainings)."""
    callbacks: Callable[[str], Sequence[Any]] | None = None
    """``callbacks(run_id)``: more Keras callbacks for the fit."""
    gradient_norms: tuple[Any, Any, int] | None = None
    """``(x, y, every)``: each layer's gradient norm on this fixed batch at step 0 and every
    ``every`` steps (:class:`pipelines.gradients.GradientNorms`), logged as per-step
    ``grad_norm.<layer>`` metrics, ``gradients/norms.json`` and a heatmap, with
    ``first_last_gradient_ratio`` and the first and last layers' norms at the first record."""
    export: Callable[[Any], tuple[Any, Any]] | None = None
    """``export(model) -> (model to log, its input example)``: what is logged and later
    registered, when that is not the trained model itself (e.g. a text model wrapped
    with its tokenizer so that it takes raw strings)."""


def training_fingerprint(spec: Training) -> str | None:
    """Identity of what a training reads besides its config: its data and ``depends_on``."""
    fingerprint = spec.data.fingerprint if spec.data else spec.fingerprint
    if not spec.depends_on:
        return fingerprint
    return f"{fingerprint}" + "".join(f"+{name}:{value}" for name, value in sorted(spec.depends_on.items()))


def run_training(family: Family, typed: ExperimentConfig, inputs: dict[str, Any], spec: Training) -> dict[str, Any]:
    """Plan (reuse a finished run, resume an unfinished one, or start), then in one MLflow
    run: devices, precision, seed, distribution scope, fit with checkpoints and per-epoch
    metrics, curves, the family's ``after``, summary and model. Returns ``run_id``,
    ``model_uri``, ``cached`` and ``metrics``."""
    from pipelines import plots
    from pipelines import train as trainer

    plan = plan_training(family, typed, spec.name, inputs, training_fingerprint(spec))
    if plan.reuse is not None:
        return plan.reuse
    train_config = spec.train or typed.train
    label = spec.run_name or spec.name
    tags = {**run_tags(family, typed, spec.model_tag or spec.name, spec.stage, **spec.tags),
            TAG_CACHE_KEY: plan.cache_key}
    parent = parent_run_of(inputs) if family.pipeline.parent_run else None
    # The run the plan asks for: new, or the unfinished one it resumes (ends FAILED on error).
    with tracking.run(family.experiment_name, label, tags=tags, run_key=plan.run_key, parent_run_id=parent,
                      resume_run_id=plan.resume_run_id) as run:
        if run.resumed:
            run.set_tags({TAG_RESUMED: f"after {plan.logged_epochs} logged epoch(s)"})
        trainer.configure_devices()
        trainer.configure_precision(train_config.mixed_precision and not spec.float32)
        trainer.set_seed(train_config.seed if spec.seed is None else spec.seed)
        train_data, val_data = spec.datasets() if spec.datasets else _batched(spec, train_config)
        # One scope for building and fitting: a second MirroredStrategy would be a different one.
        with trainer.distribution_scope("none" if spec.float32 else train_config.distribute):
            model = spec.build()
            run.log_params(run_params(typed, spec.data, model=spec.name, parameters=model.count_params(),
                                      **spec.params))
            if spec.data is not None:
                log_dataset(run.run_id, spec.data)
            log_model_cost(run, model, _example(spec))
            recorder = _gradient_recorder(spec, run.run_id)
            callbacks = [tracking.keras_epoch_logger(run.run_id, skip_through=plan.logged_epochs),
                         *(spec.callbacks(run.run_id) if spec.callbacks else ()), *recorder]
            trainer.reset_gpu_peak()
            started = time.perf_counter()
            history = trainer.fit(model, train_data, val_data, train_config, checkpoint_dir=checkpoint_dir(run.run_id),
                                  callbacks=callbacks, progress_label=label if spec.progress else None, **spec.fit)
        seconds, epochs = time.perf_counter() - started, len(history.history["loss"])
        # history.epoch counts from the epoch a resumed fit restarted at: the total trained.
        metrics = {"train_seconds": seconds, "epochs_trained": history.epoch[-1] + 1 if history.epoch else 0}
        if spec.examples:
            metrics["examples_per_second"] = epochs * spec.examples / max(seconds, 1e-9)
        metrics.update(trainer.gpu_peak_memory())
        tracking.log_figure(run.run_id, plots.training_curves(
            history.history, f"{label} on {spec.data.name if spec.data else spec.fingerprint}"),
            "plots/training_curves.png")
        if recorder and recorder[0].records:
            metrics.update(_log_gradient_norms(run.run_id, recorder[0], label))
        metrics.update((spec.after(run, model, history) or {}) if spec.after else {})
        run.log_metrics(metrics)
        tracking.log_summary(run.run_id, model)
        logged, example = spec.export(model) if spec.export else (model, _example(spec))
        model_uri = tracking.log_keras_model(run.run_id, logged, example) if spec.keep_model else ""
        run.set_tags({TAG_MODEL_URI: model_uri})
    trainer.configure_precision(False)  # later steps in this process build in float32 again
    # Every metric the run holds (final values), as a reused run reports them.
    return _outputs(spec.name, tracking.get_run(run.run_id), cached=False)


def _gradient_recorder(spec: Training, run_id: str) -> list[Any]:
    if spec.gradient_norms is None:
        return []
    from pipelines.gradients import GradientNorms

    x, y, every = spec.gradient_norms
    return [GradientNorms(x, y, every=every, on_record=lambda at, norms: tracking.log_metrics(run_id, norms, at))]


def _log_gradient_norms(run_id: str, recorder: Any, title: str) -> dict[str, float]:
    from pipelines.gradients import heatmap

    names, steps, norms = recorder.matrix()
    tracking.log_dict(run_id, {"layers": names, "steps": steps, "norms": norms.tolist()}, "gradients/norms.json")
    tracking.log_figure(run_id, heatmap(names, steps, norms, title), "plots/gradient_heatmap.png")
    return {"first_last_gradient_ratio": recorder.first_last_ratio(0), "gradient_norm_first_layer": norms[0, 0],
            "gradient_norm_last_layer": norms[-1, 0]}


def _batched(spec: Training, train_config: Any) -> tuple[Any, Any]:
    from pipelines.data.prepared import batches

    (train, val), seed = spec.arrays, train_config.seed if spec.seed is None else spec.seed
    # A fixed number of steps per epoch needs an endless stream.
    return (batches(train, train_config.batch_size, shuffle=True, seed=seed, normalize=spec.normalize,
                    repeat="steps_per_epoch" in spec.fit),
            batches(val, 512, normalize=spec.normalize) if len(_inputs(val)) else None)


def _inputs(arrays: Any) -> Any:
    return arrays[0] if isinstance(arrays, tuple) else arrays


def _example(spec: Training) -> Any:
    if spec.example is not None or spec.arrays is None:
        return spec.example
    from pipelines.data.prepared import normalize_images

    inputs = _inputs(spec.arrays[0])
    if isinstance(inputs, (tuple, list)):  # a model of several inputs
        return [part[:4] for part in inputs]
    return normalize_images(inputs[:4]) if spec.normalize else inputs[:4]


TAG_FLOPS_UNCOUNTED = "nnzoo.flops.uncounted"


def log_model_cost(run: Any, model: Any, example: Any = None) -> dict[str, float]:
    """Log the model's size and compute: ``params`` (weights, trainable or not) and
    ``flops`` (forward pass per example, :mod:`pipelines.flops`); layers the counter does
    not know are named in a tag instead of being guessed. A fully-convolutional model
    (inputs of any size) is counted at the size of ``example`` (a batch, or a list of
    batches for several inputs)."""
    import numpy as np

    from pipelines.flops import count_flops

    shapes = None
    if example is not None and any(None in tuple(tensor.shape[1:]) for tensor in getattr(model, "inputs", None) or ()):
        batches = example if isinstance(example, (list, tuple)) else [example]
        shapes = [tuple(np.shape(batch)[1:]) for batch in batches]
        shapes = shapes[0] if len(shapes) == 1 else shapes
    count = count_flops(model, shapes)
    metrics = {"params": float(model.count_params()), "flops": float(count.total)}
    run.log_metrics(metrics)
    if count.uncounted:
        run.set_tags({TAG_FLOPS_UNCOUNTED: ", ".join(count.uncounted)})
    return metrics


def evaluated(run_id: str, fingerprint: str, keys: tuple[str, ...]) -> dict[str, float] | None:
    """The metrics an earlier evaluation of this run on this data logged (a retry, or a
    cached run), or None when it still has to be evaluated."""
    earlier = tracking.get_run(run_id)
    if earlier.data.tags.get(TAG_EVALUATED_ON) == fingerprint and all(k in earlier.data.metrics for k in keys):
        say(f"{earlier.info.run_name}: already evaluated on {fingerprint}")
        return {key: earlier.data.metrics[key] for key in keys}
    return None


def evaluate_into(family: Family, run_id: str, fingerprint: str, keys: tuple[str, ...],
                  measure: Callable[[Any], Mapping[str, float]], *, reuse_all: bool = False) -> dict[str, float]:
    """The evaluation step kind: ``measure(run)`` scores the model of training run
    ``run_id`` on the data of ``fingerprint`` and may log pictures into ``run``; the kit
    logs the metrics it returns and marks the run evaluated on that data. Once per run
    and data: a retry, or a run reused from the cache, returns the logged ``keys``. A
    failure ends the run FAILED with the reason."""
    earlier = evaluated(run_id, fingerprint, keys)
    if earlier is not None:  # ``reuse_all``: every metric the run holds, not only ``keys``
        return dict(tracking.get_run(run_id).data.metrics) if reuse_all else earlier
    with tracking.run(family.experiment_name, "", resume_run_id=run_id) as run:
        metrics = {key: float(value) for key, value in measure(run).items()}
        run.log_metrics(metrics)
        run.set_tags({TAG_EVALUATED_ON: fingerprint})
    return metrics


def report_on_parent(inputs: dict[str, Any], metrics: Mapping[str, float] | None = None, *, name: str = "",
                     text: str = "", data: Mapping[str, Any] | None = None,
                     figures: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parent report step kind: on the pipeline's parent run, ``metrics`` (what the
    family's summary and the zoo report read there), ``text`` as
    ``comparison/<name>.md`` (and printed), ``data`` as ``comparison/<name>.json`` and
    each figure of ``figures`` (artifact path -> matplotlib figure; a false value:
    nothing to draw). A retried step writes the same keys and files again. Returns ``{"metrics":
    metrics}``."""
    parent = parent_run_of(inputs)
    metrics = {key: float(value) for key, value in (metrics or {}).items()}
    tracking.log_metrics(parent, metrics)
    for path, figure in (figures or {}).items():
        if figure:
            tracking.log_figure(parent, figure, path)
    if data is not None:
        tracking.log_dict(parent, data, f"comparison/{name}.json")
    if text:
        tracking.log_bytes(parent, text.encode(), f"comparison/{name}.md")
        say(text)
    return {"metrics": metrics}


TAG_PROMOTION_METRIC = "nnzoo.promotion.metric"
TAG_HIGHER_IS_BETTER = "nnzoo.promotion.higher_is_better"
"""Version tags: the metric the version was promoted on and its direction ("True"/"False")."""


def register_and_promote(
    family: Family, model: str, run_id: str, model_uri: str, metric: str, value: float,
    *, tolerance: float, higher_is_better: bool = True,
) -> dict[str, Any]:
    """Register the run's model as ``nnzoo-<family>-<model>`` (once per run) and promote it
    against the versions of its own profile and dataset (:func:`pipelines.tracking.promote`)."""
    run = tracking.get_run(run_id)
    if run.info.status != "FINISHED":
        raise RuntimeError(f"run {run_id} ended {run.info.status}; only finished runs are registered")
    # Its lineage: a champion is only ever compared with versions of the same profile and data.
    profile = run.data.tags.get(tracking.TAG_PROFILE, "unknown")
    dataset = run.data.params.get("dataset.name") or run.data.params.get("data.dataset") or "unknown"
    mock = profile.endswith(MOCK_SUFFIX)
    name = registered_name(family.name, model, mock)
    version = tracking.register_model_version(
        model_uri, name, run_id, tags={f"nnzoo.{metric}": value, "nnzoo.family": family.name,
                                       tracking.TAG_PROFILE: profile, tracking.TAG_DATASET: dataset,
                                       # what a champion is judged by, for whoever audits the registry
                                       TAG_PROMOTION_METRIC: metric, TAG_HIGHER_IS_BETTER: str(higher_is_better)})
    if mock:
        decision = mock_decision(name, version.version, metric, value, profile, dataset)
    else:
        decision = tracking.promote(name, version.version, metric, value, higher_is_better=higher_is_better,
                                    tolerance=tolerance, profile=profile, dataset=dataset)
    say(f"registered {name} v{decision['version']}: {decision['reason']}")
    return decision


def mock_decision(name: str, version: str, metric: str, value: float, profile: str, dataset: str) -> dict[str, Any]:
    """A version trained on mock data is registered for the record and never promoted:
    no alias at all, the reason on the version and its run (the keys of
    :func:`pipelines.tracking.promote`'s decision)."""
    reason = "trained on mock data: registered for the record, never promoted"
    mlflow_client = tracking.client()
    for key, tag_value in {"nnzoo.promotion.decision": "none", "nnzoo.promotion.reason": reason}.items():
        mlflow_client.set_model_version_tag(name, str(version), key, tag_value)
    run_id = mlflow_client.get_model_version(name, str(version)).run_id
    if run_id:
        tracking.set_tags(run_id, {"nnzoo.promotion.decision": "none", "nnzoo.promotion.reason": reason})
    return {"name": name, "version": str(version), "metric": metric, "value": value, "profile": profile,
            "dataset": dataset, "lineage_alias": None, "lineage_champion": False, "promoted": False,
            "reason": reason, "champion_version": None, "champion_value": None}


class StepContext:
    """What a step function declared with :func:`step_of` gets instead of ``(config,
    inputs)``: the decoded config (``config``), the pipeline's prepared data (``data``,
    loaded once), the parent run (``parent``), the upstream outputs by step name
    (``step["train"]``) and the kit's step kinds bound to the family, config and inputs."""

    def __init__(self, family: Family, config: dict[str, Any], inputs: dict[str, Any]) -> None:
        self.family, self.inputs = family, inputs
        self.config = family.load(config)  # a bad config is refused before any run is touched

    @functools.cached_property
    def data(self) -> Any:
        from pipelines.data.prepared import load_prepared

        return load_prepared(self.inputs["data_uri"])

    @property
    def parent(self) -> str:
        return parent_run_of(self.inputs)

    def __getitem__(self, name: str) -> Any:
        if name not in self.inputs:
            raise KeyError(f"{name!r} is not among this step's inputs ({', '.join(sorted(self.inputs))}): declare it "
                           f"in the step's needs")
        return self.inputs[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.inputs.get(name, default)

    def mapped(self, name: str, hint: str) -> list[Any]:
        """The outputs of mapped step ``name`` that produced something; none is an error
        (``hint`` says which knob chooses the jobs)."""
        outputs = [output for output in self.get(name) or [] if output]
        if not outputs:
            raise ValueError(f"{name} produced nothing: {hint}")
        return outputs

    def train(self, spec: Training) -> dict[str, Any]:
        return run_training(self.family, self.config, self.inputs, spec)

    def side_run(self, name: str, work: Callable[[Any], Mapping[str, float]], **options: Any) -> dict[str, Any]:
        return side_run(self.family, self.config, self.inputs, name, work, **options)

    def evaluate_into(self, run_id: str, keys: tuple[str, ...], measure: Callable[[Any], Mapping[str, float]],
                      *, fingerprint: str | None = None, reuse_all: bool = False) -> dict[str, float]:
        """:func:`evaluate_into`, on the pipeline's data unless ``fingerprint`` names other data."""
        return evaluate_into(self.family, run_id, fingerprint or self.data.fingerprint, keys, measure,
                             reuse_all=reuse_all)

    def report(self, metrics: Mapping[str, float] | None = None, **options: Any) -> dict[str, Any]:
        return report_on_parent(self.inputs, metrics, **options)

    def register(self, model: str, trained: Mapping[str, Any], metric: str, value: float,
                 higher_is_better: bool = True) -> dict[str, Any]:
        """:func:`register_and_promote` of ``trained`` (a training's outputs) with the config's tolerance."""
        return register_and_promote(self.family, model, trained["run_id"], trained["model_uri"], metric, value,
                                    tolerance=self.config.promotion_tolerance, higher_is_better=higher_is_better)

    def register_best(self, model: str, candidates: Sequence[Mapping[str, Any]], metric: str,
                      higher_is_better: bool = True) -> dict[str, Any] | None:
        """Register the candidate (training outputs with ``metrics``) with the best ``metric``
        (the first of equals); None when there is none. The decision names the run it took."""
        if not candidates:
            return None
        best = (max if higher_is_better else min)(candidates, key=lambda c: c["metrics"][metric])
        decision = self.register(model, best, metric, best["metrics"][metric], higher_is_better)
        return {**decision, "run_id": best["run_id"]}


def step_of(family: Family) -> Callable[[Callable[[StepContext], dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Declare a step function of ``family`` that takes a :class:`StepContext`; it is
    still called as ``function(config, inputs)`` by the runner, the DAG and tests."""

    def declare(function: Callable[[StepContext], dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        @functools.wraps(function)
        def stage(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
            return function(StepContext(family, config, inputs))

        return stage

    return declare
