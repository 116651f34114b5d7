"""Links between Airflow and MLflow (pipelines.airflow_links) and the task-log filter
for TensorFlow's start-up notes (pipelines.tasklog)."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from pipelines import airflow_links, tasklog
from tests.conftest import REPO_ROOT


def _ti(**overrides):
    values = {"dag_id": "zoo_classifiers", "task_id": "train_cnn", "run_id": "manual__2026-11-27T10:00:00+00:00",
              "map_index": -1, "try_number": 2,
              "log_url": "http://airflow.example/dags/zoo_classifiers/runs/manual__2026/tasks/train_cnn?try_number=2"}
    return types.SimpleNamespace(**{**values, **overrides})


def test_the_link_is_the_url_remembered_for_that_task_instance():
    link = airflow_links.MlflowRunLink()
    ti = _ti(task_id="train_mlp", run_id="manual__links")
    assert link.get_link(None, ti_key=ti) == ""  # nothing made yet: Airflow shows it disabled
    airflow_links.remember_run_url(ti, "http://mlflow.example/#/experiments/1/runs/abc")
    assert link.get_link(None, ti_key=ti) == "http://mlflow.example/#/experiments/1/runs/abc"
    assert link.get_link(None, ti_key=_ti(task_id="train_mlp", run_id="manual__links", map_index=3)) == ""
    assert link.name == "MLflow run" and link.xcom_key == "_link_MlflowRunLink"


@pytest.mark.parametrize("env, expected", [
    ({"NNZOO_MLFLOW_UI_URL": "http://ui.example:5000/", "MLFLOW_TRACKING_URI": "http://server:5000"},
     "http://ui.example:5000"),
    ({"MLFLOW_TRACKING_URI": "https://mlflow.example"}, "https://mlflow.example"),
    ({"MLFLOW_TRACKING_URI": "sqlite:////tmp/mlflow.db"}, None),
    ({}, None),
])
def test_the_mlflow_ui_url_comes_from_the_configuration(env, expected):
    assert airflow_links.mlflow_ui_url(env) == expected
    url = airflow_links.mlflow_run_url("7", "r1", env)
    assert url == (None if expected is None else f"{expected}/#/experiments/7/runs/r1?workflowType=machine_learning")


def test_origin_tags_lead_back_to_the_task_instance():
    tags = airflow_links.origin_tags(_ti(map_index=4))
    assert tags["airflow.dag_id"] == "zoo_classifiers" and tags["airflow.task_id"] == "train_cnn"
    assert tags["airflow.dag_run_id"] == "manual__2026-11-27T10:00:00+00:00"
    assert (tags["airflow.try_number"], tags["airflow.map_index"]) == ("2", "4")
    assert tags["airflow.url"].startswith("http://airflow.example/dags/zoo_classifiers/")
    assert tags["mlflow.source.type"] == "JOB" and tags["mlflow.source.name"] == "airflow:zoo_classifiers.train_cnn[4]"
    assert tags["mlflow.user"]


@pytest.mark.parametrize("output, expected", [
    ({"run_id": "a", "model_uri": "m"}, "a"),
    ({"versions": {"cnn": {"version": "1"}}, "parent_run_id": "p"}, "p"),
    ({"mlp": {"run_id": "m1"}, "cnn": {"run_id": "c1"}}, "m1"),
    ([{"job": 1}, {"run_id": "x"}], "x"),
    ({"status": "FINISHED"}, None),
    (None, None),
])
def test_the_run_a_step_made_is_found_in_its_output(output, expected):
    assert airflow_links.run_of(output) == expected


def test_every_task_of_a_family_dag_offers_the_mlflow_link():
    from pipelines.dagbuilder import build_dag

    dag = build_dag("classifiers")
    for task in dag.tasks:
        assert [link.name for link in task.operator_extra_links] == ["MLflow run"], task.task_id


# --- TensorFlow's start-up notes -----------------------------------------------------

NOTES = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1795814321.764219   10791 port.cc:153] oneDNN custom operations are on. You may see",
    b"W0000 00:00:1795814321.808800   10791 cpu_feature_guard.cc:227] This TensorFlow binary is optimized",
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    b"appropriate compiler flags.",
]
ERRORS = [
    b"E0000 00:00:1795814321.808800   10791 cuda_dnn.cc:8310] Unable to register cuDNN factory",
    b"Traceback (most recent call last):",
    b"ValueError: input 20x40 is smaller than the network's window 28x28",
    b"I think this is not a runtime note",
]


def test_runtime_notes_are_told_from_errors():
    assert all(tasklog.is_runtime_note(line) for line in NOTES)
    assert not any(tasklog.is_runtime_note(line) for line in ERRORS)


def test_routed_stderr_sends_notes_to_stdout_and_keeps_errors_on_stderr():
    script = (
        "import os, sys\n"
        "from pipelines import tasklog\n"
        "assert tasklog.route_native_stderr() and not tasklog.route_native_stderr()\n"
        f"for line in {NOTES + ERRORS!r}:\n"
        "    os.write(2, line + b'\\n')\n"
        "print('python stderr', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out, err = result.stdout.splitlines(), result.stderr.splitlines()
    assert out == NOTES
    assert err == [*ERRORS, b"python stderr"]
