"""Where nnzoo keeps its state, by environment."""

from __future__ import annotations

from pipelines import settings


def test_everything_lives_under_nnzoo_home(tmp_path, monkeypatch):
    monkeypatch.setenv("NNZOO_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert settings.home() == tmp_path
    assert settings.data_dir() == tmp_path / "data"
    assert settings.work_dir() == tmp_path / "work"
    assert settings.mlflow_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert settings.mlflow_artifact_root_for("nnzoo-x") == (tmp_path / "mlflow" / "artifacts").as_uri() + "/nnzoo-x"


def test_default_home_is_var_in_the_repository(monkeypatch):
    monkeypatch.delenv("NNZOO_HOME")
    assert settings.home() == settings.REPO_ROOT / "var"


def test_individual_locations_can_be_moved(tmp_path, monkeypatch):
    monkeypatch.setenv("NNZOO_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("NNZOO_WORK_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("NNZOO_ARTIFACT_ROOT", "s3://bucket/nnzoo/")
    assert settings.data_dir() == tmp_path / "d"
    assert settings.work_dir() == tmp_path / "w"
    assert settings.mlflow_artifact_root_for("nnzoo-x") == "s3://bucket/nnzoo/nnzoo-x"


def test_a_tracking_server_chooses_its_own_artifact_root(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert settings.mlflow_tracking_uri() == "http://mlflow.example:5000"
    assert settings.mlflow_artifact_root() is None
    assert settings.mlflow_artifact_root_for("nnzoo-x") is None
