"""What DAG files need to know about the deployment, without importing Airflow,
TensorFlow or MLflow: queues, pools, retries, schedules, dataset assets and the
retraining plan. Everything comes from the environment, so a deployment changes it
without code changes.

| variable | default | meaning |
|---|---|---|
| ``NNZOO_TRAINING_QUEUE`` | ``default`` | Celery queue of training tasks (``gpu`` on GPU workers) |
| ``NNZOO_TRAINING_POOL`` | unset | pool of training tasks (its slots = GPUs); unset: Airflow's ``default_pool``. The embedded mode sets ``nnzoo_training`` (1 slot), so does docker/compose.yaml (1 slot per GPU); a named pool must exist (``airflow pools set``) or its tasks are never scheduled |
| ``NNZOO_TRAINING_RETRIES`` | ``2`` | retries of a training task; a retry resumes from the last epoch |
| ``NNZOO_SCHEDULE_<FAMILY>`` | unset | cron string (or ``@daily`` ...) that retrains the family; unset: manual only |
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from pipelines import settings
from pipelines.config import leaf_fields
from pipelines.families import all_families, get_family

DATASETS_ALIAS = "nnzoo-datasets"
"""Asset alias through which ``prepare_data`` tasks announce new dataset content."""


def training_queue() -> str:
    return os.environ.get("NNZOO_TRAINING_QUEUE", "default")


EMBEDDED_TRAINING_POOL = "nnzoo_training"
"""The pool the embedded mode and docker/compose.yaml name in ``NNZOO_TRAINING_POOL``."""


def training_pool(env: Mapping[str, str] | None = None) -> str | None:
    """The pool of training tasks, or None (Airflow's ``default_pool``) unless
    ``NNZOO_TRAINING_POOL`` names one: the DAGs then run in any Airflow, no set-up needed."""
    value = ((os.environ if env is None else env).get("NNZOO_TRAINING_POOL") or "").strip()
    return value or None


def pool_notice(env: Mapping[str, str] | None = None) -> str | None:
    """One line for the user about the configured training pool (None without one):
    a task of a pool that does not exist is never scheduled, so say how to create it."""
    pool = training_pool(env)
    if pool is None:
        return None
    import shlex

    return (f"training tasks use the Airflow pool {pool!r} (NNZOO_TRAINING_POOL); Airflow never schedules "
            f"tasks of a pool that does not exist, so if it is missing create it (one slot per GPU): "
            f"airflow pools set {shlex.quote(pool)} 1 'nnzoo training tasks'")


def training_retries() -> int:
    value = os.environ.get("NNZOO_TRAINING_RETRIES", "2")
    if not value.isdigit():
        raise ValueError(f"NNZOO_TRAINING_RETRIES={value!r}: expected a whole number >= 0")
    return int(value)


def training_retry_delay() -> float:
    """Seconds before a failed training task is tried again (``NNZOO_TRAINING_RETRY_DELAY_S``,
    default 20: time for a restarted worker or service to come back)."""
    return settings.seconds_setting("NNZOO_TRAINING_RETRY_DELAY_S", 20)


def max_active_runs() -> int:
    """DAG runs of one family DAG that may run at once (``NNZOO_MAX_ACTIVE_RUNS``, default
    16, Airflow's own default). Overlapping runs are safe: training tasks share the
    training pool, each run tracks under its own run keys, and promotions of one model
    take turns (:func:`pipelines.tracking.promotion_lock`)."""
    value = os.environ.get("NNZOO_MAX_ACTIVE_RUNS", "16")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"NNZOO_MAX_ACTIVE_RUNS={value!r}: expected a whole number >= 1")
    return int(value)


def schedule(family: str) -> str | None:
    """The family's retraining schedule (``NNZOO_SCHEDULE_CLASSIFIERS=0 3 * * 0``), or None."""
    variable = f"NNZOO_SCHEDULE_{family.upper()}"
    value = (os.environ.get(variable) or "").strip()
    if not value:
        return None
    if not value.startswith("@"):
        from croniter import croniter  # an Airflow dependency, light to import

        try:
            croniter(value)
        except (ValueError, KeyError) as error:
            raise ValueError(f"{variable}={value!r}: not a cron expression ({error}); "
                             "e.g. '0 3 * * 0' or '@daily'") from None
    return value


def family_datasets(family: str) -> tuple[str, ...]:
    """Datasets a family can train on (the choices of its ``data.dataset``)."""
    _, field = leaf_fields(get_family(family).config_cls)["data.dataset"]
    return tuple(field.metadata.get("choices") or (field.default,))


def all_datasets() -> list[str]:
    return sorted({name for family in all_families() for name in family_datasets(family)})


def dataset_asset(dataset: str) -> dict[str, str]:
    """``Asset(**dataset_asset(name))``: named after the dataset, its URI is the file
    that holds the dataset's current fingerprints in the data dir."""
    return {"name": f"nnzoo-dataset-{dataset}", "uri": (settings.data_dir() / dataset / "latest.json").as_uri()}


def plan_retraining(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Which family DAGs to trigger for these dataset events.

    Each event's ``extra`` holds the ``dataset`` and ``profile`` that a ``prepare_data``
    materialised; ``source_dag_id`` is the DAG that did it. Every family whose config
    for that profile trains on that dataset is retrained, except the source DAG, which
    has just trained on exactly this data.
    """
    wanted: dict[str, dict[str, Any]] = {}
    for event in events:
        extra = event.get("extra") or {}
        dataset, profile = extra.get("dataset"), extra.get("profile", "quick")
        if not dataset:
            continue
        for family in all_families().values():
            if family.dag_id == event.get("source_dag_id"):
                continue
            data = getattr(family.config(profile), "data", None)
            if data is not None and getattr(data, "dataset", None) == dataset:
                wanted[family.dag_id] = {"trigger_dag_id": family.dag_id, "conf": {"profile": profile}}
    return [wanted[dag_id] for dag_id in sorted(wanted)]


# --- inside a running task (Airflow is imported there, not at DAG parse time) --------


def task_config(family: str) -> dict[str, Any]:
    """The validated config dict of the running task's DAG-run params."""
    from airflow.sdk import get_current_context

    from pipelines.params import config_from_params

    return config_from_params(family, get_current_context()["params"])


def task_run_key() -> str:
    """``<dag id>/<dag run id>`` of the running task: its MLflow runs' identity across retries."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    return f"{context['dag'].dag_id}/{context['run_id']}"


ZOO_RUN_VARIABLE = "NNZOO_ZOO_RUN"
"""Set by ``nnzoo zoo`` (``make run``) for its DAG runs: every family trains there, so
their ``prepare_data`` announce nothing for ``nnzoo_retrain`` to retrain."""


def announce_dataset(outlet_events: Any, data: Mapping[str, Any]) -> None:
    """From ``prepare_data``: an event on the dataset's Asset (through the alias) when
    the content it materialised is new, which schedules ``nnzoo_retrain``; none inside
    ``nnzoo zoo``, which trains every family anyway."""
    from airflow.sdk import Asset, AssetAlias

    if data["changed"] and os.environ.get(ZOO_RUN_VARIABLE):
        print(f"[nnzoo] new content of {data['dataset']} not announced to nnzoo_retrain: "
              "this zoo run trains every family on it", flush=True)
        return
    if data["changed"]:
        outlet_events[AssetAlias(DATASETS_ALIAS)].add(
            Asset(**dataset_asset(data["dataset"])),
            extra={key: data[key] for key in ("dataset", "fingerprint", "profile", "data_uri")})


# --- what every family DAG file passes to Airflow (parse time, light) -----------------


def family_dag_kwargs(family: Any) -> dict[str, Any]:
    """``@dag`` arguments of a family DAG: its id, how many runs at once
    (:func:`max_active_runs`), tags, the documentation and the trigger form derived from
    the family's config."""
    import pendulum
    from airflow.sdk import Param

    from pipelines.params import form_specs

    return {
        "dag_id": family.dag_id,
        "description": family.description,
        "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
        "catchup": False,
        "max_active_runs": max_active_runs(),
        "tags": ["nnzoo", family.name],
        "params": {name: Param(**spec) for name, spec in form_specs(family.name).items()},
        "doc_md": family.doc_md,
    }


def training_task_kwargs() -> dict[str, Any]:
    """``@task`` arguments of training tasks: queue, pool and retries from the environment
    (no ``pool`` unless one is configured: Airflow's ``default_pool`` then)."""
    from datetime import timedelta

    kwargs: dict[str, Any] = {"queue": training_queue(), "retries": training_retries(),
                              "retry_delay": timedelta(seconds=training_retry_delay())}
    if (pool := training_pool()) is not None:
        kwargs["pool"] = pool
    return kwargs
