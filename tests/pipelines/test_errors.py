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


def test_unreachable_tracking_server_fails_after_the_wait_naming_the_setting(monkeypatch, fresh_tracking, tmp_path,
                                                                            capsys):
    monkeypatch.setenv("NNZOO_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("NNZOO_MLFLOW_WAIT_S", "2")
    started = time.perf_counter()
    with pytest.raises(StoreUnavailableError, match=r"http://127.0.0.1:9 is not reachable.*MLFLOW_TRACKING_URI"):
        tracking.client()
    assert 1 <= time.perf_counter() - started < 15
    assert "trying again in 1s" in capsys.readouterr().out


def test_a_tracking_server_that_comes_back_within_the_wait_is_waited_for():
    """A restarting server (down for a second here) does not fail the task."""
    import http.server
    import socket
    import threading

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = None

    def come_back():
        nonlocal server
        time.sleep(1.2)
        server = http.server.HTTPServer(("127.0.0.1", port), Health)
        server.serve_forever()

    threading.Thread(target=come_back, daemon=True).start()
    started = time.perf_counter()
    try:
        tracking._check_store(f"http://127.0.0.1:{port}")
    finally:
        if server is not None:
            server.shutdown()
    assert time.perf_counter() - started >= 1.0


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_mlflow_wait_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("NNZOO_MLFLOW_WAIT_S", value)
    with pytest.raises(ValueError, match=f"NNZOO_MLFLOW_WAIT_S='{value}'"):
        tracking.settings.mlflow_wait_seconds()


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
