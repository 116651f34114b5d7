"""Retraining and scheduling seen live on the distributed stack (real scheduler,
dag-processor and Celery worker), with nobody triggering a DAG:

* new dataset content -> asset event -> ``nnzoo_retrain`` -> the other families' DAG
  runs. The session's smoke run of ``zoo_classifiers`` is the first to materialise
  its split of ``mnist_subset``: its ``prepare_data`` announces it, and the retraining
  DAG triggers ``zoo_cnn_depth`` and ``zoo_unsupervised``. Those two stay paused
  (their smoke runs train 13 and 14 models one after another: minutes), so their runs
  wait, queued.
* an asset event on the dataset -> ``nnzoo_retrain`` -> ``zoo_classifiers`` retrained
  to the end -> new registered model versions. The event comes from outside Airflow,
  as from a job that lands new data (REST ``POST /api/v2/assets/events``); without a
  source DAG it concerns every family on the dataset, and ``zoo_classifiers`` (the
  cheap one) is the one unpaused.
* ``NNZOO_SCHEDULE_SEQUENCES`` (every minute in the stack): a run of run type
  ``scheduled`` appears once the DAG is unpaused; it is paused again at once.
* the retrained run executes on a worker whose broker visibility timeout is a few
  seconds: the broker hands its training tasks out again while they run, and each
  still runs once (try 1, one MLflow run per model), Airflow ignoring the duplicates.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.service.conftest import (
    DAG_ID,
    DAG_RUN_TIMEOUT_S,
    RETRAIN_DAG_ID,
    SCHEDULED_FAMILY,
    VISIBILITY_TIMEOUT_S,
    DagRun,
    Stack,
    describe_run,
    replace_worker,
    task_instances,
    wait_until,
)

pytestmark = [pytest.mark.service, pytest.mark.slow]

DATASET = "mnist_subset"
PAUSED_USERS = ("zoo_cnn_depth", "zoo_unsupervised")  # also train on it under smoke
SCHEDULED_DAG_ID = f"zoo_{SCHEDULED_FAMILY}"
SHORT_VISIBILITY_S = 3  # below the quickest training task on an idle AVX-512 machine (4.7 s)
MODELS = ("mlp", "cnn")
REDELIVERED = "Task already running elsewhere, ignoring redelivered message"
REFUSED_AFTER_END = "'previous_state': 'success'"
BY_OPERATOR = "operator_triggered"  # run type of a run created by TriggerDagRunOperator (Airflow 3.3)


def dag_runs(stack: Stack, dag_id: str) -> list[dict]:
    response = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})
    assert response.status_code == 200, response.text[:500]
    return response.json()["dag_runs"]


def upstream_events(stack: Stack, run: dict) -> list[dict]:
    response = stack.api("GET", f"/api/v2/dags/{RETRAIN_DAG_ID}/dagRuns/{run['dag_run_id']}/upstreamAssetEvents")
    assert response.status_code == 200, response.text[:500]
    return response.json()["asset_events"]


def pause(stack: Stack, dag_id: str, paused: bool) -> None:
    response = stack.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": paused})
    assert response.status_code == 200, response.text[:500]


def retrain_run_for(stack: Stack, matches) -> dict | None:
    """The finished ``nnzoo_retrain`` run one of whose triggering events ``matches``."""
    for run in dag_runs(stack, RETRAIN_DAG_ID):
        if run["state"] in ("success", "failed") and any(matches(event) for event in upstream_events(stack, run)):
            return run
    return None


def finished(stack: Stack, dag_id: str, run_id: str) -> str | None:
    state = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
    return state if state in ("success", "failed") else None


@pytest.fixture(scope="module")
def live(stack: Stack, smoke_dag_run: DagRun) -> Iterator[dict[str, Any]]:
    """Runs the scenario once; the tests check its parts."""
    assert smoke_dag_run.state == "success", describe_run(stack, smoke_dag_run)
    begin = time.monotonic()
    out: dict[str, Any] = {}
    # 1. The smoke run's first materialisation of the dataset retrained the other families.
    out["from_content"] = wait_until(
        "nnzoo_retrain to run for the smoke run's new dataset content",
        lambda: retrain_run_for(stack, lambda e: e.get("source_dag_id") == DAG_ID), 180, stack, interval=3)
    out["first_events"] = upstream_events(stack, out["from_content"])
    out["paused_user_runs"] = {dag_id: dag_runs(stack, dag_id) for dag_id in PAUSED_USERS}
    out["source_runs"] = dag_runs(stack, DAG_ID)

    # 2. A worker whose broker redelivers whatever runs longer than a few seconds.
    replace_worker(stack, "airflow-celery-worker-short-visibility",
                   AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT=str(SHORT_VISIBILITY_S),
                   # Sweep for overdue messages every second (default: every 100 s).
                   AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__UNACKED_RESTORE_INTERVAL="1",
                   AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__UNACKED_RESTORE_THROTTLE="1")
    try:
        # 3. New data announced from outside Airflow; the schedule switched on meanwhile.
        asset = stack.api("GET", "/api/v2/assets", params={"name_pattern": f"nnzoo-dataset-{DATASET}"}).json()
        asset_id = next(a["id"] for a in asset["assets"] if a["name"] == f"nnzoo-dataset-{DATASET}")
        smoke_runs_before = {run["dag_run_id"] for run in dag_runs(stack, DAG_ID)}
        response = stack.api("POST", "/api/v2/assets/events", json={
            "asset_id": asset_id, "extra": {"dataset": DATASET, "profile": "smoke", "fingerprint": "landed-by-a-job"}})
        assert response.status_code == 200, f"POST /assets/events: {response.status_code} {response.text[:500]}"
        out["event"] = event = response.json()
        pause(stack, SCHEDULED_DAG_ID, False)
        try:
            out["scheduled"] = wait_until(
                f"a scheduled run of {SCHEDULED_DAG_ID}",
                lambda: [r for r in dag_runs(stack, SCHEDULED_DAG_ID) if r["run_type"] == "scheduled"], 150, stack)
        finally:
            pause(stack, SCHEDULED_DAG_ID, True)

        out["from_event"] = wait_until("nnzoo_retrain to run for the posted event",
                                       lambda: retrain_run_for(stack, lambda e: e["id"] == event["id"]), 180, stack,
                                       interval=3)
        out["retrained"] = retrained = wait_until(
            f"a {DAG_ID} run triggered by nnzoo_retrain",
            lambda: [r for r in dag_runs(stack, DAG_ID) if r["dag_run_id"] not in smoke_runs_before], 60, stack)[0]
        run_id = retrained["dag_run_id"]
        state = wait_until(f"{DAG_ID} run {run_id} to finish", lambda: finished(stack, DAG_ID, run_id),
                           DAG_RUN_TIMEOUT_S, stack, interval=3)
        out["retrained_run"] = DagRun(run_id=run_id, state=state, task_instances=task_instances(stack, run_id),
                                      seconds=time.monotonic() - begin)
        out["worker_log"] = (stack.log_dir / "airflow-celery-worker-short-visibility.log").read_text(errors="replace")
    finally:
        replace_worker(stack, "airflow-celery-worker-restored")
    out["seconds"] = time.monotonic() - begin
    print(f"\nretraining scenario: {out['seconds']:.0f}s")
    yield out


def test_new_dataset_content_runs_nnzoo_retrain_which_triggers_the_other_families(stack: Stack, live: dict,
                                                                                  smoke_dag_run: DagRun):
    run = live["from_content"]
    assert run["state"] == "success", run
    assert run["run_type"] == "asset_triggered", run
    [event] = [e for e in live["first_events"] if e.get("source_dag_id") == DAG_ID]
    assert event["source_task_id"] == "prepare_data"
    assert event["extra"]["dataset"] == DATASET and event["extra"]["profile"] == "smoke"
    assert re.fullmatch(r"[0-9a-f]{16}", event["extra"]["fingerprint"]), event["extra"]
    # Every other family on the dataset got a run with the same profile; paused, they wait.
    for dag_id, runs in live["paused_user_runs"].items():
        assert [(r["run_type"], r["triggered_by"], r["conf"]) for r in runs] == [
            (BY_OPERATOR, "operator", {"profile": "smoke"})], (dag_id, runs)
        assert runs[0]["state"] == "queued", runs
    # The source DAG has just trained on this data: it is not triggered again.
    assert [r["dag_run_id"] for r in live["source_runs"]] == [smoke_dag_run.run_id], live["source_runs"]


def test_an_asset_event_retrains_a_family_to_a_new_registered_version(stack: Stack, live: dict):
    run = live["from_event"]
    assert run["state"] == "success" and run["run_type"] == "asset_triggered", run
    retrained = live["retrained"]
    assert (retrained["run_type"], retrained["triggered_by"], retrained["conf"]) == (
        BY_OPERATOR, "operator", {"profile": "smoke"}), retrained
    dag_run = live["retrained_run"]
    assert dag_run.state == "success", describe_run(stack, dag_run)
    assert all(ti["state"] == "success" for ti in dag_run.task_instances.values()), describe_run(stack, dag_run)
    for model in MODELS:
        name = f"nnzoo-classifiers-{model}"
        versions = stack.mlflow("GET", "model-versions/search", params={"filter": f"name='{name}'"})["model_versions"]
        keys = {}
        for version in versions:
            tags = {t["key"]: t["value"] for t in stack.mlflow("GET", "runs/get", params={"run_id": version["run_id"]})
                    ["run"]["data"].get("tags", [])}
            keys[version["version"]] = tags.get("nnzoo.run_key", "")
        new = [v for v, key in keys.items() if key.startswith(f"{DAG_ID}/{dag_run.run_id}/")]
        assert len(new) == 1 and len(versions) >= 2, (name, keys)


def test_a_family_schedule_creates_scheduled_runs(stack: Stack, live: dict):
    [run, *_] = live["scheduled"]
    assert run["run_type"] == "scheduled" and run["triggered_by"] == "timetable", run
    dag = stack.api("GET", f"/api/v2/dags/{SCHEDULED_DAG_ID}").json()
    assert dag["timetable_summary"] == "* * * * *" and dag["is_paused"], dag


def test_a_training_task_outliving_the_visibility_timeout_runs_once(stack: Stack, live: dict):
    """The broker delivers a message again when it is not acknowledged within the
    visibility timeout; tasks are acknowledged when they end, so a long training
    is delivered twice. Airflow refuses to start a task instance that is running."""
    assert VISIBILITY_TIMEOUT_S >= 24 * 3600  # the stack's own setting, as a deployment's
    dag_run = live["retrained_run"]
    assert dag_run.state == "success", describe_run(stack, dag_run)
    log = live["worker_log"]
    deliveries: dict[str, int] = {}
    for celery_id in re.findall(r"\[([0-9a-f-]{36})\] Executing workload in Celery", log):
        deliveries[celery_id] = deliveries.get(celery_id, 0) + 1
    redelivered, refused = log.count(REDELIVERED), log.count(REFUSED_AFTER_END)
    for ti in dag_run.task_instances.values():
        assert ti["state"] == "success" and ti["try_number"] == 1, ti
    for model in MODELS:
        seconds = dag_run.task_instances[f"train_{model}"]["duration"]
        assert seconds > SHORT_VISIBILITY_S, f"train_{model} took {seconds}s: too short to be redelivered"
    assert redelivered >= 1, "no message was delivered twice: the test proves nothing\n" + log[-3000:]
    experiment = stack.mlflow("GET", "experiments/get-by-name", params={"experiment_name": "nnzoo-classifiers"})
    runs = stack.mlflow("POST", "runs/search", json={
        "experiment_ids": [experiment["experiment"]["experiment_id"]],
        "filter": f"tags.`nnzoo.run_key` LIKE '{DAG_ID}/{dag_run.run_id}/%'"}).get("runs", [])
    tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs]
    trainings = [t.get("nnzoo.model") for t in tags if t.get("nnzoo.stage") == "train"]
    assert sorted(trainings) == sorted(MODELS), trainings
    print(f"\nworker with visibility timeout {SHORT_VISIBILITY_S}s: {sum(deliveries.values())} deliveries of "
          f"{len(deliveries)} messages (max {max(deliveries.values())} of one); {redelivered} ignored as already "
          f"running, {refused} refused because the task instance had already succeeded")
