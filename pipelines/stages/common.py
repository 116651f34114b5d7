"""Pieces every family's stages share: config decoding, data preparation, run
identity, standard run params, and registration with promotion."""

from __future__ import annotations

import functools
import subprocess
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

    Also creates the family's MLflow experiment, so parallel training tasks that
    follow never race to create the store or the experiment.
    """
    from pipelines.data.prepared import prepare

    fam, typed = load_config(family, config)
    prepared = prepare(typed.data)
    tracking.ensure_experiment(fam.experiment_name)
    return {
        "data_uri": prepared.uri,
        "dataset": prepared.name,
        "fingerprint": prepared.fingerprint,
        "sizes": {split: int(len(prepared.arrays[f"{split}_y"])) for split in ("train", "val", "test")},
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
