"""The family DAGs end to end through Airflow's own CLI (`airflow dags test`) on an
embedded SQLite Airflow, writing into a temporary MLflow store."""

from __future__ import annotations

import json
import subprocess

import pytest

from pipelines import localrun, orchestration
from tests.conftest import REPO_ROOT, VENV_BIN, new_store

pytestmark = pytest.mark.slow

AIRFLOW = str(VENV_BIN / "airflow")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """(store, env): a migrated Airflow home and an MLflow store, both temporary."""
    store = new_store(tmp_path_factory.mktemp("e2e"))
    env = localrun.airflow_env(store.env())
    env["NNZOO_MLFLOW_UI_URL"] = "http://mlflow.example:5000"  # where the tasks' "MLflow run" links point
    assert env["NNZOO_HOME"] == str(store.home)
    assert env["AIRFLOW_HOME"] == str(store.home / "airflow")
    assert env["MLFLOW_TRACKING_URI"] == store.uri
    localrun.init_airflow(env)
    return store, env


def dags_test(env, conf: dict, timeout: float = 400, dag_id: str = "zoo_classifiers") -> subprocess.CompletedProcess:
    return subprocess.run([AIRFLOW, "dags", "test", dag_id, "-c", json.dumps(conf)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _runs(store):
    client = store.client()
    experiments = [e.experiment_id for e in client.search_experiments() if e.name.startswith("nnzoo-")]
    return client.search_runs(experiments) if experiments else []


def test_init_airflow_creates_the_training_pool(embedded):
    _store, env = embedded
    # The embedded mode names a one-slot pool (a stock Airflow would use default_pool).
    assert orchestration.training_pool(env) == "nnzoo_training"
    result = subprocess.run([AIRFLOW, "pools", "get", orchestration.training_pool(env), "-o", "json"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(json.loads(result.stdout)[0]["slots"]) == 1
    localrun.init_airflow(env)  # idempotent


@pytest.mark.parametrize("conf, param", [
    ({"profile": "smoke", "epochs": 0}, "epochs"),
    ({"profile": "smoke", "batch_size": "x"}, "batch_size"),
    ({"profile": "tiny"}, "profile"),
])
def test_invalid_params_fail_before_any_run_starts(embedded, conf, param):
    store, env = embedded
    before = {run.info.run_id for run in _runs(store)}
    result = dags_test(env, conf, timeout=180)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"Invalid input for param {param}" in output
    assert {run.info.run_id for run in _runs(store)} == before


@pytest.fixture(scope="module")
def smoke_dag_run(embedded):
    _store, env = embedded
    return dags_test(env, {"profile": "smoke"})


def test_smoke_dag_run_trains_evaluates_and_registers(embedded, smoke_dag_run):
    store, _env = embedded
    result = smoke_dag_run
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    client = store.client()
    all_runs = [run for run in _runs(store) if run.data.tags["nnzoo.family"] == "classifiers"]
    runs = {run.data.tags["nnzoo.model"]: run for run in all_runs}
    assert len(all_runs) == 2 and set(runs) == {"mlp", "cnn"}
    for model, run in runs.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["nnzoo.run_key"].startswith("zoo_classifiers/")
        assert run.data.tags["nnzoo.run_key"].endswith(f"/{model}")
        assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
        assert run.data.params["profile"] == "smoke"
        champion = client.get_model_version_by_alias(f"nnzoo-classifiers-{model}", "champion")
        assert champion.run_id == run.info.run_id
    assert (store.home / "data" / "mnist_subset").is_dir()


def test_the_two_uis_link_to_each_other(embedded, smoke_dag_run):
    """Each training task's "MLflow run" link (an XCom Airflow's UI reads) leads to its
    run; the run and its registered version lead back to the task instance."""
    import sqlite3
    from pathlib import Path

    store, env = embedded
    assert smoke_dag_run.returncode == 0
    client = store.client()
    runs = {run.data.tags["nnzoo.model"]: run for run in _runs(store)
            if run.data.tags["nnzoo.family"] == "classifiers"}
    experiment = client.get_experiment(runs["cnn"].info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.tags["mlflow.note.content"]
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        links = dict(db.execute("SELECT task_id, value FROM xcom WHERE dag_id = 'zoo_classifiers' "
                                "AND key = '_link_MlflowRunLink'").fetchall())
    for model, run in runs.items():
        tags = run.data.tags
        task_id = f"train_{model}"
        assert (tags["airflow.dag_id"], tags["airflow.task_id"], tags["airflow.try_number"]) == (
            "zoo_classifiers", task_id, "1")
        assert tags["airflow.dag_run_id"] in tags["nnzoo.run_key"]
        assert "/dags/zoo_classifiers/runs/" in tags["airflow.url"] and tags["airflow.url"].split("?")[0].endswith(
            f"/tasks/{task_id}")
        assert tags["mlflow.source.type"] == "JOB" and tags["mlflow.source.name"] == f"airflow:zoo_classifiers.{task_id}"
        assert tags["mlflow.user"]
        url = json.loads(links[task_id])
        assert url == (f"http://mlflow.example:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
                       "?workflowType=machine_learning")
        inputs = run.inputs.dataset_inputs
        assert [item.dataset.name for item in inputs] == ["mnist_subset"], inputs
        assert inputs[0].dataset.digest == run.data.params["dataset.fingerprint"][:36]
        version = client.get_model_version_by_alias(f"nnzoo-classifiers-{model}", "champion")
        assert version.tags["airflow.dag_id"] == "zoo_classifiers" and version.tags["airflow.url"]
        assert version.tags["nnzoo.profile"] == "smoke"
    # The run names tell the two DAG runs' trainings apart (here: one DAG run, two models).
    assert len({run.info.run_name for run in runs.values()}) == len(runs)


def test_summary_rows_read_the_store_of_the_given_env(embedded, smoke_dag_run):
    store, env = embedded
    assert smoke_dag_run.returncode == 0
    rows = localrun.summary_rows(0, env)
    assert {row["model"] for row in rows} >= {"mlp", "cnn"}
    assert {run.info.run_id for run in _runs(store)} >= {row["run_id"] for row in rows}
    assert all(row["status"] == "FINISHED" and "test_accuracy" in row["metrics"] for row in rows)


@pytest.fixture(scope="module")
def unsupervised_dag_run(embedded):
    _store, env = embedded
    return dags_test(env, {"profile": "smoke"}, timeout=600, dag_id="zoo_unsupervised")


def test_unsupervised_dag_nests_every_training_under_one_finished_parent(embedded, unsupervised_dag_run):
    from pipelines.families import get_family

    store, _env = embedded
    result = unsupervised_dag_run
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    smoke = get_family("unsupervised").config("smoke")
    runs = [run for run in _runs(store) if run.data.tags["nnzoo.family"] == "unsupervised"]
    parents = [run for run in runs if run.data.tags["nnzoo.stage"] == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = [run for run in runs if run is not parent]
    assert all(run.data.tags.get("mlflow.parentRunId") == parent.info.run_id for run in children)
    assert all(run.info.status == "FINISHED" for run in children)
    assert all(run.data.tags["nnzoo.run_key"].startswith("zoo_unsupervised/") for run in runs)
    names = sorted(run.info.run_name for run in children)
    finetunes = [name for name in names if name.startswith("finetune-")]
    assert len(finetunes) == len(smoke.finetune.label_fractions) * 2 * smoke.finetune.seeds
    layers = [f"rbm-layer-{n}" for n in range(1, len(smoke.rbm.layers) + 1)]
    assert sorted(set(names) - set(finetunes)) == sorted(["autoencoder", "rbm-features-digits", *layers])
    assert "plots/accuracy_vs_labels.png" in [a.path for a in store.client().list_artifacts(parent.info.run_id,
                                                                                             "plots")]
    client = store.client()
    for model in ("autoencoder", "dbn", *layers):
        champion = client.get_model_version_by_alias(f"nnzoo-unsupervised-{model}", "champion")
        assert champion.run_id in {run.info.run_id for run in children}, model


def test_unsupervised_dag_labels_each_mapped_finetuning(embedded, unsupervised_dag_run):
    import sqlite3
    from pathlib import Path

    from pipelines.families import get_family

    _store, env = embedded
    assert unsupervised_dag_run.returncode == 0
    smoke = get_family("unsupervised").config("smoke")
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        rows = db.execute("SELECT rendered_map_index, state FROM task_instance "
                          "WHERE dag_id = 'zoo_unsupervised' AND task_id = 'finetune'").fetchall()
    expected = {f"{init} {fraction:.0%} seed {seed}" for fraction in smoke.finetune.label_fractions
                for init in ("dbn", "random") for seed in range(smoke.finetune.seeds)}
    assert {label for label, _state in rows} == expected
    assert {state for _label, state in rows} == {"success"}


def test_unsupervised_dag_fails_visibly_when_its_data_cannot_be_loaded(embedded, unsupervised_dag_run):
    """tfds `mnist` is not on this machine: prepare_data fails, every step after it is
    upstream_failed, and the all-done `finish` step fails too (nothing to close), so
    the DAG run is failed rather than green; no MLflow run is left behind."""
    import sqlite3
    from pathlib import Path

    store, env = embedded
    before = {run.info.run_id for run in _runs(store)}
    result = dags_test(env, {"profile": "smoke", "dataset": "mnist"}, timeout=600, dag_id="zoo_unsupervised")
    output = result.stdout + result.stderr
    assert "tensorflow-datasets could not load 'mnist'" in output
    # After Airflow's record of the exception, the task log ends with the error in one line.
    said = [line for line in output.splitlines() if "nnzoo: error: tensorflow-datasets could not load 'mnist'" in line]
    assert said, output[-4000:]
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        run_id, state = db.execute("SELECT run_id, state FROM dag_run WHERE dag_id = 'zoo_unsupervised' "
                                   "ORDER BY id DESC LIMIT 1").fetchone()
        states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = 'zoo_unsupervised' "
                                 "AND run_id = ? AND map_index = -1", (run_id,)).fetchall())
    assert state == "failed"
    assert states["prepare_data"] == "failed"
    assert states["finish"] == "failed"
    assert states["register"] == "upstream_failed"
    assert {run.info.run_id for run in _runs(store)} == before
