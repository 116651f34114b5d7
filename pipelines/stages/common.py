"""Pieces every family's stages share: config decoding, data preparation, run
identity, standard run params, and registration with promotion."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import subprocess
from collections.abc import Iterator, Mapping
from typing import Any

from pipelines import settings, tracking
from pipelines.config import ExperimentConfig, flatten, from_dict, to_dict
from pipelines.families import Family, get_family


def load_config(family: str, config: dict[str, Any]) -> tuple[Family, ExperimentConfig]:
    """Decode a stage's ``config`` dict into the family's typed config (validated)."""
    fam = get_family(family)
    return fam, from_dict(fam.config_cls, config)


def prepare_data(family: str, config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Materialise the family's dataset split and return its reference.

    ``changed`` is True when this content of the dataset is new to the data dir (the
    DAG then emits an event on the dataset's Asset, which schedules retraining).
    Also creates the family's MLflow experiment, so parallel training tasks that
    follow never race to create the store or the experiment.
    """
    from pipelines.data.prepared import prepare, record_latest

    fam, typed = load_config(family, config)
    prepared = prepare(typed.data)
    tracking.ensure_experiment(fam.experiment_name)
    return {
        "data_uri": prepared.uri,
        "dataset": prepared.name,
        "fingerprint": prepared.fingerprint,
        "sizes": {split: int(len(prepared.arrays[f"{split}_y"])) for split in ("train", "val", "test")},
        "profile": typed.profile,
        "changed": record_latest(typed.data, prepared.fingerprint),
    }


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
    """What every training run logs: the flattened config, dataset identity, code, device."""
    from pipelines.data.registry import get_dataset
    from pipelines.train import device_description

    params = flatten(to_dict(config))
    params.update({
        "dataset.name": data.name,
        "dataset.fingerprint": data.fingerprint,
        "dataset.source": get_dataset(data.name).source,
        "dataset.train_size": len(data.arrays["train_y"]),
        "dataset.val_size": len(data.arrays["val_y"]),
        "dataset.test_size": len(data.arrays["test_y"]),
        "code.git_commit": git_commit(),
        "device": device_description(),
    })
    params.update(extra)
    return params


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
                print(f"[nnzoo] {model}: run {earlier.info.run_id} already finished for {key}; reusing it")
                return dataclasses.replace(plan, reuse=_outputs(model, earlier, cached=False))
            logged = tracking.max_logged_step(earlier.info.run_id, "loss")
            print(f"[nnzoo] {model}: resuming run {earlier.info.run_id} ({earlier.info.status}, "
                  f"{logged} epoch(s) logged) from its checkpoint")
            return dataclasses.replace(plan, resume_run_id=earlier.info.run_id, logged_epochs=logged)
    if config.cache:
        for earlier in tracking.find_runs_by_tag(experiment_id, TAG_CACHE_KEY, ckey, status="FINISHED"):
            if TAG_MODEL_URI in earlier.data.tags:
                print(f"[nnzoo] {model}: cache hit, reusing finished run {earlier.info.run_id} "
                      f"(same config, model and data {fingerprint}); nothing is trained")
                tracking.set_tags(earlier.info.run_id, {TAG_CACHE_HIT: key or "cli"})
                return dataclasses.replace(plan, reuse=_outputs(model, earlier, cached=True))
    return plan


@contextlib.contextmanager
def training_run(family: Family, plan: TrainingPlan, run_name: str, tags: Mapping[str, Any],
                 parent_run_id: str | None = None) -> Iterator[tracking.RunHandle]:
    """The MLflow run ``plan`` asks for: new (tagged with its cache key and run key) or
    the unfinished one it resumes (tagged ``nnzoo.resumed``). Ends FAILED on error."""
    with tracking.run(family.experiment_name, run_name, tags={**tags, TAG_CACHE_KEY: plan.cache_key},
                      run_key=plan.run_key, parent_run_id=parent_run_id, resume_run_id=plan.resume_run_id) as run:
        if run.resumed:
            run.set_tags({TAG_RESUMED: f"after {plan.logged_epochs} logged epoch(s)"})
        yield run


def _outputs(model: str, run: Any, *, cached: bool) -> dict[str, Any]:
    return {"model": model, "run_id": run.info.run_id, "model_uri": run.data.tags[TAG_MODEL_URI], "cached": cached}


def checkpoint_dir(run_id: str):
    """Run-scoped folder for resumable checkpoints (shared storage in distributed mode)."""
    return settings.work_dir() / "checkpoints" / run_id


def register_and_promote(
    family: Family, model: str, run_id: str, model_uri: str, metric: str, value: float,
    *, tolerance: float, higher_is_better: bool = True,
) -> dict[str, Any]:
    """Register the run's model as ``nnzoo-<family>-<model>`` (once per run) and promote it."""
    run = tracking.get_run(run_id)
    if run.info.status != "FINISHED":
        raise RuntimeError(f"run {run_id} ended {run.info.status}; only finished runs are registered")
    name = f"nnzoo-{family.name}-{model}"
    version = tracking.register_model_version(
        model_uri, name, run_id, tags={f"nnzoo.{metric}": value, "nnzoo.family": family.name})
    decision = tracking.promote(name, version.version, metric, value, higher_is_better=higher_is_better,
                                tolerance=tolerance)
    return decision
