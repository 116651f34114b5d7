"""The embedded Airflow mode: environment, pool, UI processes, summary (no Airflow is started here)."""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines import localrun, settings


def test_airflow_env_derives_every_location_from_nnzoo_home(tmp_path):
    env = localrun.airflow_env({"NNZOO_HOME": str(tmp_path)})
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'airflow' / 'airflow.db'}"
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(settings.REPO_ROOT / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["PYTHONPATH"] == str(settings.REPO_ROOT)
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2"


def test_airflow_env_unpauses_dags_and_names_the_one_slot_training_pool(tmp_path):
    env = localrun.airflow_env({"NNZOO_HOME": str(tmp_path)})
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert env["NNZOO_TRAINING_POOL"] == "nnzoo_training"
    assert "NNZOO_MLFLOW_UI_URL" not in env
    env = localrun.airflow_env({"NNZOO_HOME": str(tmp_path)}, mlflow_ui_url="http://localhost:5001")
    assert env["NNZOO_MLFLOW_UI_URL"] == "http://localhost:5001"


def test_airflow_env_puts_the_repository_in_front_of_an_existing_pythonpath(tmp_path):
    env = localrun.airflow_env({"NNZOO_HOME": str(tmp_path), "PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"].split(":") == [str(settings.REPO_ROOT), "/elsewhere"]


def test_airflow_env_keeps_values_already_set(tmp_path):
    base = {"NNZOO_HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "af"),
            "MLFLOW_TRACKING_URI": "sqlite:////somewhere/else.db", "AIRFLOW__CORE__PARALLELISM": "2"}
    env = localrun.airflow_env(base)
    for key, value in base.items():
        assert env[key] == value
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'af' / 'airflow.db'}"


def test_family_dag_ids_come_from_the_family_registry():
    from pipelines.families import all_families

    assert localrun.family_dag_ids() == [family.dag_id for family in all_families().values()]
    assert "zoo_classifiers" in localrun.family_dag_ids()


def test_init_airflow_creates_the_pool_the_dags_use(monkeypatch, tmp_path):
    """With NNZOO_TRAINING_POOL set, tasks wait in that pool: it is the one created."""
    commands = []
    monkeypatch.setattr(localrun, "_check", lambda command, env, what: commands.append(command))
    localrun.init_airflow(localrun.airflow_env({"NNZOO_HOME": str(tmp_path), "NNZOO_TRAINING_POOL": "gpu_slots"}))
    pools = [command for command in commands if command[1:3] == ["pools", "set"]]
    assert [command[3] for command in pools] == ["gpu_slots"]


def test_init_airflow_creates_no_pool_when_none_is_configured(monkeypatch, tmp_path):
    commands = []
    monkeypatch.setattr(localrun, "_check", lambda command, env, what: commands.append(command))
    env = localrun.airflow_env({"NNZOO_HOME": str(tmp_path)})
    env["NNZOO_TRAINING_POOL"] = ""
    localrun.init_airflow(env)
    assert [command[1:3] for command in commands] == [["db", "migrate"]]


def test_ui_links_name_each_family_dag_and_experiment(tmp_path):
    from pipelines.families import all_families

    env = localrun.airflow_env({"NNZOO_HOME": str(tmp_path)})
    assert localrun.experiment_ids(env) == {}  # no store yet, and none is created
    assert not (tmp_path / "mlflow" / "mlflow.db").exists()
    text = localrun.ui_links(env, 18080, 15000, ids={"nnzoo-classifiers": "7"})
    for family in all_families().values():
        assert f"http://localhost:18080/dags/{family.dag_id} " in text
    assert "http://localhost:15000/#/experiments/7/runs?workflowType=machine_learning" in text
    assert "http://localhost:15000/#/experiments (nnzoo-cnn_depth: after its first run)" in text


def test_run_ui_closes_the_log_files_it_hands_to_its_processes(monkeypatch, tmp_path, capsys):
    handed = []

    class Exited:
        pid = 0

        def __init__(self, command, **kwargs):
            handed.append(kwargs["stdout"])

        def poll(self):
            return 1

        def wait(self, timeout=None):
            return 1

    monkeypatch.setenv("NNZOO_HOME", str(tmp_path))
    for variable in ("NNZOO_MLFLOW_UI_URL", "AIRFLOW__API__BASE_URL", "MLFLOW_TRACKING_URI", "AIRFLOW_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(localrun.subprocess, "Popen", Exited)
    monkeypatch.setattr(localrun.os, "killpg", lambda pid, sig: None)
    monkeypatch.setattr(localrun.signal, "signal", lambda *args: None)
    envs = []
    monkeypatch.setattr(localrun, "init_airflow", lambda env: envs.append(env))
    assert localrun.run_ui(18080, 15000) == 1
    assert len(handed) == 2 and all(log.closed for log in handed)
    assert envs[0]["NNZOO_MLFLOW_UI_URL"] == "http://localhost:15000"
    assert envs[0]["AIRFLOW__API__BASE_URL"] == "http://localhost:18080"
    out = capsys.readouterr().out
    assert "http://localhost:18080/dags/zoo_classifiers" in out and "http://localhost:15000/#/experiments" in out


def test_multi_line_progress_survives_the_make_run_filter(capsys):
    from pipelines.kit import say

    say("DBN vs random init, test accuracy:\n| labels | init |\n| 1% | dbn |")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(localrun.echoed(line) for line in lines)


def test_summary_shows_the_metrics_each_family_declares_per_model_and_those_its_claims_read(store, monkeypatch):
    import dataclasses

    from pipelines import families, tracking
    from pipelines.claims import Claim, owned
    from pipelines.families import get_family

    family = get_family("classifiers")
    for model, stage in (("cnn", "train"), ("helper", "whatever")):
        tags = {tracking.TAG_FAMILY: family.name, tracking.TAG_MODEL: model, tracking.TAG_STAGE: stage}
        with tracking.run(family.experiment_name, model, tags=tags, run_key=f"zoo_classifiers/r1/{model}") as run:
            run.log_metrics({"test_accuracy": 0.9, "test_loss": 0.3, "odd_score": 2.0, "claimed": 5.0})
    env = {"MLFLOW_TRACKING_URI": store.uri}
    # Every run under the key whatever its stage tag; each model with what is declared for it.
    rows = {row["model"]: row["metrics"] for row in localrun.summary_rows(0, env)}
    assert rows == {"cnn": {"test_accuracy": 0.9}, "helper": {"test_accuracy": 0.9}}
    assert localrun.summary_rows(0, env, run_key_prefix="zoo_classifiers/other") == []
    declared = dataclasses.replace(family, headline=(("cnn", "odd_*"),), claims=owned(family.name, Claim(
        "C99", "a claim", "an experiment", metric="claimed", comparator=">", threshold=1.0, model="helper")))
    monkeypatch.setitem(families._FAMILIES, family.name, declared)
    rows = {row["model"]: row["metrics"] for row in localrun.summary_rows(0, env, run_key_prefix="zoo_classifiers/r1")}
    assert rows == {"cnn": {"odd_score": 2.0}, "helper": {"claimed": 5.0}}


def test_summary_of_a_run_that_reused_cached_trainings_reports_the_reused_runs(store):
    from pipelines import tracking
    from pipelines.kit import TAG_CACHE_HIT

    tags = {tracking.TAG_FAMILY: "classifiers", tracking.TAG_MODEL: "cnn", tracking.TAG_STAGE: "train"}
    with tracking.run("nnzoo-classifiers", "cnn", tags=tags, run_key="zoo_classifiers/first/cnn") as run:
        run.log_metrics({"test_accuracy": 0.97})
    tracking.set_tags(run.run_id, {TAG_CACHE_HIT: "zoo_classifiers/second/cnn"})
    rows = localrun.summary_rows(0, {"MLFLOW_TRACKING_URI": store.uri}, run_key_prefix="zoo_classifiers/second")
    assert [(row["run_id"], row["metrics"], row["reused"]) for row in rows] == [(run.run_id, {"test_accuracy": 0.97},
                                                                                 True)]


def test_console_scripts_come_from_this_environment():
    assert Path(localrun._bin("airflow")).parent == Path(sys.executable).parent


def test_summary_columns_fit_the_longest_model_name_and_tiny_values_keep_their_digits(monkeypatch, capsys):
    rows = [{"family": "cnn_depth", "model": "degradation_residual_shallow", "status": "FINISHED", "run_id": "a" * 32,
             "metrics": {"first_last_gradient_ratio": 1.97e-14, "test_accuracy": 0.95}},
            {"family": "cnn_depth", "model": "mlp_relu", "status": "FINISHED", "run_id": "b" * 32,
             "metrics": {"test_accuracy": 0.907}}]
    monkeypatch.setattr(localrun, "summary_rows", lambda since_ms, env: rows)
    localrun.print_summary(0, {"MLFLOW_TRACKING_URI": "sqlite:///x.db", "AIRFLOW_HOME": "/tmp/af"})
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("cnn_depth")]
    assert lines[0].index("FINISHED") == lines[1].index("FINISHED")
    assert "first_last_gradient_ratio=1.97e-14" in lines[0] and "test_accuracy=0.9500" in lines[0]


def test_make_run_echoes_what_stages_say_whole_and_the_end_of_error_lines():
    notice = "[nnzoo] training tasks use the Airflow pool 'nnzoo_training' " + "x" * 300
    assert localrun.echoed(f"2026-11-28T01:05:00Z [info] {notice}\n") == notice
    assert localrun.echoed(notice + "\n") == notice
    error = "2026-11-28T01:05:00Z [error] " + "y" * 300 + " ERROR: the data file is corrupt"
    assert localrun.echoed(error).endswith("ERROR: the data file is corrupt") and len(localrun.echoed(error)) == 200
    assert localrun.echoed("2026-11-28T01:05:00Z [info] Task started\n") is None
