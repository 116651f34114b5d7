"""Environment problems fail fast with one line that names the setting to change."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pipelines import settings, tracking
from pipelines.errors import StoreUnavailableError
from tests.conftest import REPO_ROOT


@pytest.fixture
def fresh_tracking(monkeypatch):
    monkeypatch.setattr(tracking, "_configured_uri", None)


def test_unreachable_tracking_server_fails_in_seconds(monkeypatch, fresh_tracking, tmp_path):
    monkeypatch.setenv("NNZOO_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: nothing listens
    started = time.perf_counter()
    with pytest.raises(StoreUnavailableError, match=r"http://127.0.0.1:9 is not reachable.*MLFLOW_TRACKING_URI"):
        tracking.client()
    assert time.perf_counter() - started < 15


def test_unwritable_artifact_root_is_named(monkeypatch, fresh_tracking, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("NNZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("NNZOO_ARTIFACT_ROOT", (blocker / "artifacts").as_uri())
    with pytest.raises(StoreUnavailableError, match="artifact folder .* not writable.*NNZOO_ARTIFACT_ROOT"):
        tracking.client()


def test_ensure_writable_dir_creates_and_probes(tmp_path):
    target = settings.ensure_writable_dir(tmp_path / "a" / "b", "data folder", "NNZOO_DATA_DIR")
    assert target.is_dir() and not any(target.iterdir())


def test_cli_reports_an_unwritable_data_dir_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {"PATH": "/usr/bin:/bin", "NNZOO_HOME": str(tmp_path / "home"), "NNZOO_DATA_DIR": str(blocker / "data"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "classifiers", "--profile", "smoke"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("nnzoo: error: data folder") and "NNZOO_DATA_DIR" in last
    assert "Traceback" not in result.stderr
