"""The DAGs in a stock Airflow: plain ``airflow standalone`` in a fresh home on SQLite,
configured only as any Airflow user would (DAGs folder, no examples, a port, a cap on
parallelism), with no nnzoo set-up at all: no ``nnzoo`` command, no pool created, no
``NNZOO_TRAINING_POOL``. ``zoo_classifiers`` must run to success, its training tasks
in Airflow's ``default_pool``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO_ROOT, VENV_BIN
from tests.service.conftest import STACK_MARKER, free_port, stack_processes, tail

pytestmark = [pytest.mark.service, pytest.mark.slow]

DAG_ID = "zoo_classifiers"
STARTUP_TIMEOUT_S = 300
DAG_RUN_TIMEOUT_S = 480


class Standalone:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = tmp / "airflow"
        self.log = tmp / "airflow-standalone.log"
        self.marker = uuid.uuid4().hex[:10]
        self.process: subprocess.Popen | None = None
        self._token: str | None = None

    def env(self) -> dict[str, str]:
        # Whatever this shell had of Airflow, nnzoo or MLflow settings is left out.
        base = {key: value for key, value in os.environ.items()
                if not key.startswith(("AIRFLOW", "NNZOO_", "MLFLOW_"))}
        return {
            **base,
            # The venv is active, as for a user who installed Airflow and nnzoo in it.
            "PATH": os.pathsep.join([str(VENV_BIN), base.get("PATH", "")]),
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "2",  # a 2-core machine
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "NNZOO_HOME": str(self.tmp / "nnzoo"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{self.tmp / 'mlflow.db'}",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            # Not read by Airflow or nnzoo: lets the test find every process it started.
            STACK_MARKER: self.marker,
        }

    def start(self) -> None:
        with open(self.log, "w") as out:
            self.process = subprocess.Popen([str(VENV_BIN / "airflow"), "standalone"], env=self.env(), cwd=self.tmp,
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def outside_group(self) -> list[tuple[int, str]]:
        """Processes of this Airflow outside its process group: task processes, which
        Airflow puts in groups of their own."""
        assert self.process is not None
        found = []
        for pid, command in stack_processes(self.marker):
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(pid) != self.process.pid:
                    found.append((pid, command))
        return found

    def stop(self) -> list[str]:
        """Stop the whole process group; the processes that outlived it (killed now)."""
        assert self.process is not None
        # A task that reported success may still be exiting (interpreter shutdown):
        # let it end before its supervisor goes.
        deadline = time.monotonic() + 60
        while self.outside_group() and time.monotonic() < deadline:
            time.sleep(1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(40)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        deadline = time.monotonic() + 10  # killed processes of the group disappear once reaped
        while (leftovers := stack_processes(self.marker)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid, _command in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return [f"{pid} {command[:160]}" for pid, command in leftovers]

    def alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"airflow standalone exited ({self.process.returncode})\n{tail(self.log, 80)}", pytrace=False)

    def password(self) -> str | None:
        path = self.home / "simple_auth_manager_passwords.json.generated"
        with contextlib.suppress(FileNotFoundError, ValueError):
            return json.loads(path.read_text()).get("admin")
        return None

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        if self._token is None:
            response = requests.post(f"{self.url}/auth/token", json={"username": "admin", "password": self.password()},
                                     timeout=30)
            assert response.status_code == 201, f"POST /auth/token: {response.status_code} {response.text[:300]}"
            self._token = response.json()["access_token"]
        return requests.request(method, f"{self.url}{path}", headers={"Authorization": f"Bearer {self._token}"},
                                timeout=30, **kwargs)

    def wait(self, what: str, check, timeout: float, interval: float = 2.0):
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            self.alive()
            try:
                if result := check():
                    return result
            except (requests.RequestException, ValueError, KeyError, AssertionError) as error:
                last = error
            time.sleep(interval)
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last!r})\n{tail(self.log, 80)}",
                    pytrace=False)


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[Standalone]:
    server = Standalone(tmp_path)
    server.start()
    try:
        yield server
    finally:
        leftovers = server.stop()
        if leftovers:
            pytest.fail("processes of airflow standalone outlived its process group (killed now): "
                        + "; ".join(leftovers), pytrace=False)


def test_a_stock_airflow_standalone_runs_zoo_classifiers_without_any_nnzoo_setup(standalone: Standalone):
    begin = time.monotonic()

    def healthy() -> bool:
        health = requests.get(f"{standalone.url}/api/v2/monitor/health", timeout=5).json()
        return all(health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler"))

    standalone.wait("the api-server and scheduler", healthy, STARTUP_TIMEOUT_S)
    standalone.wait("the generated admin password", standalone.password, 60, interval=1)
    standalone.wait(f"DAG {DAG_ID} parsed", lambda: standalone.api("GET", f"/api/v2/dags/{DAG_ID}").ok,
                    STARTUP_TIMEOUT_S)
    # Nobody created a pool: only Airflow's own.
    pools = [pool["name"] for pool in standalone.api("GET", "/api/v2/pools").json()["pools"]]
    assert pools == ["default_pool"], pools

    response = standalone.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
    assert response.ok, response.text[:500]
    response = standalone.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                              json={"logical_date": None, "conf": {"profile": "smoke"}})
    assert response.ok, f"trigger: {response.status_code} {response.text[:500]}"
    run_id = response.json()["dag_run_id"]
    started = time.monotonic()

    def finished() -> str | None:
        state = standalone.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
        return state if state in ("success", "failed") else None

    state = standalone.wait(f"DAG run {run_id} to finish", finished, DAG_RUN_TIMEOUT_S, interval=3)
    tis = standalone.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    described = "\n".join(f"  {ti['task_id']}: {ti['state']} (pool {ti['pool']})" for ti in tis)
    print(f"standalone: up in {started - begin:.0f}s, DAG run {state} in {time.monotonic() - started:.0f}s\n"
          f"{described}")
    assert state == "success", f"{described}\n{tail(standalone.log, 80)}"
    by_task = {ti["task_id"]: ti for ti in tis}
    assert set(by_task) == {"prepare_data", "train_mlp", "train_cnn", "evaluate", "register"}, described
    assert all(ti["state"] == "success" for ti in tis), described
    for task_id in ("train_mlp", "train_cnn"):
        assert by_task[task_id]["pool"] == "default_pool", described
