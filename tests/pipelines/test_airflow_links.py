"""Links between Airflow and MLflow (pipelines.airflow_links) and the task-log filter
for TensorFlow's start-up notes (pipelines.tasklog)."""

from __future__ import annotations

import json
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


def test_the_link_is_built_from_the_recorded_run_and_the_mlflow_ui_known_when_viewed():
    recorded = {"run_id": "abc", "experiment_id": "1", "url": None}
    # `make run`: no MLflow UI while the task ran; `make ui` serves one when the page is viewed.
    assert airflow_links.link_for(recorded, {}) is None
    assert airflow_links.link_for(json.dumps(recorded), {"NNZOO_MLFLOW_UI_URL": "http://localhost:5000"}) == (
        "http://localhost:5000/#/experiments/1/runs/abc?workflowType=machine_learning")
    # The address known at view time wins over the one the worker knew; without one, the worker's.
    stored = {**recorded, "url": "http://old.example/#/experiments/1/runs/abc"}
    assert airflow_links.link_for(stored, {"NNZOO_MLFLOW_UI_URL": "http://new.example"}).startswith("http://new.example/")
    assert airflow_links.link_for(stored, {}) == "http://old.example/#/experiments/1/runs/abc"
    for nothing in (None, "", "not json", {"run_id": "abc"}, ["abc"]):
        assert airflow_links.link_for(nothing, {"NNZOO_MLFLOW_UI_URL": "http://x"}) is None


def test_a_task_records_its_run_in_the_xcom_the_link_reads():
    pushed = {}
    ti = types.SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value}))
    airflow_links.record_run(ti, "abc", "3", None)
    assert pushed == {airflow_links.MLFLOW_RUN_XCOM: {"run_id": "abc", "experiment_id": "3", "url": None}}


def test_nnzoos_airflow_plugin_is_installed_and_declares_the_link_globally():
    """Global extra links are the ones Airflow 3's api-server evaluates at view time."""
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="airflow.plugins") if e.name == "nnzoo"]
    plugin = entry.load()
    assert [link.name for link in plugin.global_operator_extra_links] == ["MLflow run"]
    assert isinstance(plugin.global_operator_extra_links[0], airflow_links.MlflowRunLink)


def test_airflow_loads_the_plugin_once_and_reports_no_plugin_import_error(tmp_path):
    """In the environment of the embedded mode's task processes (the checkout on
    PYTHONPATH): a build by-product in the checkout (nnzoo.egg-info) made Airflow see
    nnzoo twice and list "Plugin 'nnzoo' already registered" as an import error."""
    from pipelines import localrun

    env = localrun.airflow_env({"PATH": "/usr/bin:/bin", "NNZOO_HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path)})
    assert str(REPO_ROOT) in env["PYTHONPATH"].split(":")
    code = ("from airflow import plugins_manager as pm; import json; pm.ensure_plugins_loaded(); "
            "print(json.dumps([pm.get_import_errors(), [p.name for p in pm._get_plugins()[0]]]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    errors, loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert errors == {}
    assert loaded.count("nnzoo") == 1


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


def test_no_family_task_keeps_a_link_of_its_own():
    """An operator's own "MLflow run" link would be evaluated on the worker and shadow the
    plugin's view-time one."""
    from pipelines.dagbuilder import build_dag

    dag = build_dag("classifiers")
    for task in dag.tasks:
        assert not task.operator_extra_links, task.task_id


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


# --- `airflow dags test`'s output as task log files --------------------------------------

DAG_TEST_OUTPUT = """\
2026-12-07T14:02:26.284648Z [info     ] Created dag run.               [airflow.models.dagrun]
2026-12-07T14:02:26.328947Z [info     ] [DAG TEST] starting task_id=prepare_data map_index=-1 [airflow.sdk.definitions.dag]
2026-12-07T14:02:26.329681Z [info     ] [DAG TEST] running task <TaskInstance: zoo_x.prepare_data manual__2026-12-07T14:02:25+00:00 [TaskInstanceState.SCHEDULED] ti_id=1> [airflow.sdk.definitions.dag]
[nnzoo] prepared 420 digits
2026-12-07T14:02:44.169623Z [info     ] [DAG TEST] end task task_id=prepare_data map_index=-1 [airflow.sdk.definitions.dag]
2026-12-07T14:02:44.200000Z [info     ] between tasks                  [airflow.models.dagrun]
2026-12-07T14:02:44.230254Z [info     ] [DAG TEST] starting task_id=finetune map_index=2 [airflow.sdk.definitions.dag]
2026-12-07T14:02:44.231701Z [info     ] [DAG TEST] running task <TaskInstance: zoo_x.finetune manual__2026-12-07T14:02:25+00:00 map_index=2 [TaskInstanceState.SCHEDULED] ti_id=2> [airflow.sdk.definitions.dag]
[nnzoo] finetune epoch 1/2
2026-12-07T14:02:50.000000Z [error    ] Task failed                    [task]
2026-12-07T14:02:51.000000Z [info     ] [DAG TEST] starting task_id=finetune map_index=2 [airflow.sdk.definitions.dag]
2026-12-07T14:02:51.100000Z [info     ] [DAG TEST] running task <TaskInstance: zoo_x.finetune manual__2026-12-07T14:02:25+00:00 map_index=2 [TaskInstanceState.SCHEDULED] ti_id=2> [airflow.sdk.definitions.dag]
[nnzoo] finetune epoch 2/2
"""


def test_dag_test_output_becomes_one_airflow_log_file_per_task_try(tmp_path):
    logs = tasklog.DagTestLogs(tmp_path)
    for line in DAG_TEST_OUTPUT.splitlines(keepends=True):
        logs.feed(line)
    logs.close()
    run = "run_id=manual__2026-12-07T14:02:25+00:00"
    prepare = tmp_path / f"dag_id=zoo_x/{run}/task_id=prepare_data/attempt=1.log"
    first, second = (tmp_path / f"dag_id=zoo_x/{run}/task_id=finetune/map_index=2/attempt={n}.log" for n in (1, 2))
    assert logs.written == [prepare, first, second]
    records = [json.loads(line) for line in prepare.read_text().splitlines()]
    # Airflow's JSON task log: the task's own lines, levels and times, nothing of other tasks.
    assert [r["event"] for r in records if r["event"].startswith("[nnzoo]")] == ["[nnzoo] prepared 420 digits"]
    assert records[0]["timestamp"] == "2026-12-07T14:02:26.328947Z" and records[0]["level"] == "info"
    assert records[2] == {"level": "info", "event": "[nnzoo] prepared 420 digits",
                          "timestamp": "2026-12-07T14:02:26.329681Z"}
    assert not any("between tasks" in r["event"] for r in records)
    tries = [[json.loads(line)["event"] for line in path.read_text().splitlines()] for path in (first, second)]
    assert "[nnzoo] finetune epoch 1/2" in tries[0] and "[nnzoo] finetune epoch 2/2" not in tries[0]
    assert "[nnzoo] finetune epoch 2/2" in tries[1]
    assert json.loads(first.read_text().splitlines()[-1])["level"] == "error"


def test_the_zoo_run_announces_no_dataset_for_retraining(monkeypatch, capsys):
    from airflow.sdk import AssetAlias

    from pipelines import orchestration

    class Events(dict):
        def __missing__(self, key):
            self[key] = types.SimpleNamespace(added=[], add=lambda asset, extra: self[key].added.append(extra))
            return self[key]

    data = {"changed": True, "dataset": "mnist_subset", "fingerprint": "f", "profile": "smoke", "data_uri": "u"}
    events = Events()
    orchestration.announce_dataset(events, data)
    assert events[AssetAlias(orchestration.DATASETS_ALIAS)].added == [
        {"dataset": "mnist_subset", "fingerprint": "f", "profile": "smoke", "data_uri": "u"}]
    monkeypatch.setenv(orchestration.ZOO_RUN_VARIABLE, "1")
    events = Events()
    orchestration.announce_dataset(events, data)
    assert not events
    assert "not announced to nnzoo_retrain" in capsys.readouterr().out


# --- MLflow's server as `make ui` starts it ---------------------------------------------------


def test_the_mlflow_start_page_remembers_the_model_training_view_for_a_new_browser():
    import asyncio

    from pipelines import mlflow_app

    page = b"<!doctype html><html><head><title>MLflow</title></head><body></body></html>"

    async def inner(scope, receive, send):
        kind = b"text/html; charset=utf-8" if scope["path"] == "/" else b"application/javascript"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", kind), (b"content-length", str(len(page)).encode())]})
        await send({"type": "http.response.body", "body": page[:20], "more_body": True})
        await send({"type": "http.response.body", "body": page[20:]})

    def serve(path, method="GET"):
        sent = []

        async def send(message):
            sent.append(message)

        asyncio.run(mlflow_app.DefaultViewMiddleware(inner)({"type": "http", "method": method, "path": path},
                                                             None, send))
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return dict(sent[0]["headers"]), body

    headers, body = serve("/")
    assert body.startswith(b"<!doctype html><html><head><script>")
    assert b'if(!localStorage.getItem("mlflow.workflowType_v1"))' in body  # a choice already made is kept
    assert b'setItem("mlflow.workflowType_v1","\\"machine_learning\\"")' in body  # as MLflow's UI stores it
    assert int(headers[b"content-length"]) == len(body)
    for other in (serve("/static-files/main.js"), serve("/", method="HEAD")):
        assert other[1] == page


def test_make_ui_starts_mlflow_with_nnzoos_app():
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="mlflow.app") if e.name == "nnzoo"]
    assert entry.value == "pipelines.mlflow_app:app"
