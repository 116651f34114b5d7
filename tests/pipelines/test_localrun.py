"""Environment of the embedded Airflow mode (no Airflow is started here)."""

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


def test_family_dag_ids_match_the_dag_files():
    files = {path.stem for path in (settings.REPO_ROOT / "dags").glob("zoo_*.py")}
    assert set(localrun.family_dag_ids()) == files - {"zoo_all"}
    assert "zoo_classifiers" in localrun.family_dag_ids()


def test_console_scripts_come_from_this_environment():
    assert Path(localrun._bin("airflow")).parent == Path(sys.executable).parent
