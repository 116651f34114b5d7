"""zoo_classifiers on the distributed stack: Airflow's CeleryExecutor on PostgreSQL and
Redis, the training tasks on the ``gpu`` queue of a Celery worker, results in an MLflow
tracking server on PostgreSQL with proxied artifacts. Everything is checked through the
public REST APIs of Airflow and MLflow, as a user or another service would."""

from __future__ import annotations

import pytest
import requests

from tests.service.conftest import DAG_ID, TRAINING_QUEUE, DagRun, Stack, describe_run, query

pytestmark = [pytest.mark.service, pytest.mark.slow]

MODELS = ("mlp", "cnn")
EXPERIMENT = "nnzoo-classifiers"


def test_the_stack_runs_on_postgres_celery_and_redis(stack: Stack):
    health = stack.api("GET", "/api/v2/monitor/health").json()
    for component in ("metadatabase", "scheduler", "dag_processor"):
        assert health[component]["status"] == "healthy", health
    # Airflow's metadata lives in the test's own PostgreSQL database.
    assert query(stack.databases["airflow"], "SELECT dag_id FROM dag WHERE dag_id = %s", (DAG_ID,)) == [(DAG_ID,)]
    assert query(stack.databases["mlflow"], "SELECT count(*) FROM alembic_version")[0][0] == 1
    assert stack.api("GET", f"/api/v2/dags/{DAG_ID}").json()["dag_id"] == DAG_ID
    pools = {pool["name"]: pool for pool in stack.api("GET", "/api/v2/pools").json()["pools"]}
    assert pools["nnzoo_training"]["slots"] == 1


def test_smoke_run_succeeds_with_training_on_the_gpu_queue(stack: Stack, smoke_dag_run: DagRun):
    run = smoke_dag_run
    assert run.state == "success", describe_run(stack, run)
    tis = run.task_instances
    assert set(tis) == {"prepare_data", "train_mlp", "train_cnn", "evaluate", "register"}, describe_run(stack, run)
    for task_id, ti in tis.items():
        assert ti["state"] == "success", describe_run(stack, run)
        expected_queue = TRAINING_QUEUE if task_id.startswith("train_") else "default"
        assert ti["queue"] == expected_queue, f"{task_id} ran on queue {ti['queue']!r}"
        # Executed by the Celery worker, not in the scheduler.
        assert ti["hostname"], f"{task_id} has no worker hostname"
        assert ti["executor"] in (None, "CeleryExecutor") or "Celery" in str(ti["executor"])
    for model in MODELS:
        assert tis[f"train_{model}"]["pool"] == "nnzoo_training"
    # Every task went through Celery: its result backend (PostgreSQL) holds one
    # successful result per task instance, and the worker logged each workload.
    results = query(stack.databases["airflow"], "SELECT status, count(*) FROM celery_taskmeta GROUP BY status")
    assert dict(results).get("SUCCESS", 0) >= len(tis), results
    worker_log = (stack.log_dir / "airflow-celery-worker.log").read_text(errors="replace")
    for task_id in tis:
        assert f"task_id={task_id}/" in worker_log, f"{task_id} not in the worker's log"


def test_the_run_is_tracked_in_the_mlflow_server(stack: Stack, smoke_dag_run: DagRun):
    assert smoke_dag_run.state == "success", describe_run(stack, smoke_dag_run)
    experiment = stack.mlflow("GET", "experiments/get-by-name", params={"experiment_name": EXPERIMENT})["experiment"]
    assert experiment["artifact_location"].startswith("mlflow-artifacts:"), experiment
    runs = stack.mlflow("POST", "runs/search", json={
        "experiment_ids": [experiment["experiment_id"]],
        "filter": f"tags.`nnzoo.run_key` LIKE '{DAG_ID}/{smoke_dag_run.run_id}/%'",
    }).get("runs", [])
    by_model = {}
    for run in runs:
        tags = {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}
        by_model[tags.get("nnzoo.model")] = run
    assert set(MODELS) <= set(by_model), [run["info"]["run_name"] for run in runs]
    for model in MODELS:
        run = by_model[model]
        assert run["info"]["status"] == "FINISHED"
        metrics = {metric["key"]: metric["value"] for metric in run["data"].get("metrics", [])}
        assert 0.0 <= metrics["test_accuracy"] <= 1.0
        params = {param["key"]: param["value"] for param in run["data"].get("params", [])}
        assert params["profile"] == "smoke"
        # Artifacts went through the server (mlflow-artifacts:) into its --artifacts-destination.
        run_id = run["info"]["run_id"]
        assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:"), run["info"]["artifact_uri"]
        plots = stack.mlflow("GET", "artifacts/list", params={"run_id": run_id, "path": "plots"}).get("files", [])
        assert {"plots/training_curves.png", "plots/confusion_matrix.png"} <= {item["path"] for item in plots}
        stored = stack.tmp / "mlflow-artifacts" / experiment["experiment_id"] / run_id / "artifacts" / "plots"
        assert (stored / "training_curves.png").stat().st_size > 1000
        download = requests.get(f"{stack.mlflow_url}/get-artifact", timeout=30,
                                params={"run_id": run_id, "path": "plots/training_curves.png"})
        assert download.status_code == 200 and download.content.startswith(b"\x89PNG"), download.status_code
    # The logged models too (MLflow 3 keeps them beside the runs, under models/m-<id>).
    assert list((stack.tmp / "mlflow-artifacts").rglob("model.keras")), "no model reached the artifact store"


def test_both_models_are_registered(stack: Stack, smoke_dag_run: DagRun):
    assert smoke_dag_run.state == "success", describe_run(stack, smoke_dag_run)
    registered = {model["name"] for model in stack.mlflow("GET", "registered-models/search").get("registered_models", [])}
    for model in MODELS:
        name = f"nnzoo-classifiers-{model}"
        assert name in registered
        versions = stack.mlflow("GET", "model-versions/search", params={"filter": f"name='{name}'"})["model_versions"]
        assert versions and all(version["status"] == "READY" for version in versions), versions
        champion = stack.mlflow("GET", "registered-models/alias", params={"name": name, "alias": "champion"})
        assert champion["model_version"]["version"] in {version["version"] for version in versions}
