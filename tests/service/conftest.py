"""The distributed stack against the real local services, once per test session.

Airflow 3 on PostgreSQL with the CeleryExecutor and Redis as broker (``airflow db
migrate``, then scheduler, dag-processor, api-server and one ``airflow celery worker -q
gpu,default``), plus an MLflow tracking server on PostgreSQL that proxies artifacts
(``mlflow-artifacts:``). Each component is a subprocess in its own process group with
its log under the session's tmp dir. The databases are new and uniquely named and are
dropped at the end; the broker uses Redis DB ``REDIS_DB`` with keys prefixed by the
stack's id (kombu's ``global_keyprefix``), so that stacks of test sessions running at
the same time never take each other's tasks; its keys are deleted at the end.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth, user ``postgres``) and Redis on
127.0.0.1:6379 (``scripts/start_services.sh`` starts them where they are not running).
Deselect these tests with ``-m "not service"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from pipelines import localrun, orchestration
from tests.conftest import SERVICE_SCOPE, VENV_BIN, scope_of

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 9
TRAINING_QUEUE = "gpu"
DAG_ID = "zoo_classifiers"
ADMIN_USER = "admin"
# Marks the environment of every process of the stack, so that teardown can find any
# process that left its process group (Airflow task processes make their own group).
STACK_MARKER = "NNZOO_TEST_STACK_ID"

STARTUP_TIMEOUT_S = 240
DAG_RUN_TIMEOUT_S = 420

RETRAIN_DAG_ID = "nnzoo_retrain"
# A family retrained on a schedule (cron every minute); its DAG stays paused until a
# test unpauses it for one scheduled run. Its dataset is its own, so the runs it starts
# retrain nobody else.
SCHEDULED_FAMILY = "sequences"
# As a deployment sets it: longer than the longest training task (docs/distributed.md).
VISIBILITY_TIMEOUT_S = 86400


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


@dataclasses.dataclass
class Component:
    name: str
    process: subprocess.Popen
    log: Path


@dataclasses.dataclass
class Stack:
    """A running distributed stack; URLs, credentials, environment and logs."""

    tmp: Path
    env: dict[str, str]
    airflow_url: str
    mlflow_url: str
    password: str
    stack_id: str
    databases: dict[str, str]
    components: list[Component] = dataclasses.field(default_factory=list)
    stopped: bool = False
    _token: str | None = None

    @property
    def log_dir(self) -> Path:
        return self.tmp / "logs"

    def logs(self, lines: int = 40, names: tuple[str, ...] | None = None) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            if names is None or path.stem in names:
                parts.append(f"----- {path.name} (last {lines} lines) -----\n{tail(path, lines)}")
        return "\n".join(parts)

    def token(self) -> str:
        if self._token is None:
            response = requests.post(f"{self.airflow_url}/auth/token",
                                     json={"username": ADMIN_USER, "password": self.password}, timeout=30)
            assert response.status_code == 201, f"POST /auth/token: {response.status_code} {response.text[:500]}"
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """An authenticated call to Airflow's REST API (``path`` starts with /api/v2)."""
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.airflow_url}{path}", headers=headers, timeout=30, **kwargs)

    def mlflow(self, method: str, endpoint: str, **kwargs: Any) -> dict:
        """A call to MLflow's REST API (``endpoint`` after /api/2.0/mlflow/); the JSON answer."""
        response = requests.request(method, f"{self.mlflow_url}/api/2.0/mlflow/{endpoint}", timeout=30, **kwargs)
        assert response.status_code == 200, f"MLflow {endpoint}: {response.status_code} {response.text[:500]}"
        return response.json()

    def check_alive(self) -> None:
        dead = [c for c in self.components if c.process.poll() is not None]
        if dead:
            names = ", ".join(f"{c.name} (exit {c.process.returncode})" for c in dead)
            pytest.fail(f"stack component(s) exited: {names}\n{self.logs(60)}", pytrace=False)


def wait_until(what: str, check: Callable[[], Any], timeout: float, stack: Stack | None = None,
               interval: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the logs after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if stack is not None:
            stack.check_alive()
        try:
            result = check()
        except (requests.RequestException, OSError, ValueError, KeyError) as error:
            last_error, result = error, None
        if result:
            return result
        time.sleep(interval)
    detail = f" (last error: {last_error!r})" if last_error else ""
    logs = f"\n{stack.logs(60)}" if stack is not None else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{detail}{logs}", pytrace=False)


# --- PostgreSQL and Redis -----------------------------------------------------------------

def _pg_connect(database: str = "postgres"):
    import psycopg2

    connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=database, connect_timeout=5)
    connection.autocommit = True
    return connection


def create_database(name: str) -> None:
    with contextlib.closing(_pg_connect()) as connection, connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with contextlib.closing(_pg_connect()) as connection, connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_exists(name: str) -> bool:
    with contextlib.closing(_pg_connect()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cursor.fetchone() is not None


def query(database: str, sql: str, params: tuple = ()) -> list[tuple]:
    with contextlib.closing(_pg_connect(database)) as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def redis_prefix(stack_id: str) -> str:
    return f"nnzoo-test-{stack_id}:"


def delete_redis_keys(prefix: str) -> None:
    """Delete the broker keys of one stack (the DB is shared with other stacks)."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def require_services() -> None:
    missing = [f"{name} on {host}:{port}" for name, host, port in
               (("PostgreSQL", PG_HOST, PG_PORT), ("Redis", REDIS_HOST, REDIS_PORT)) if not answers(host, port)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not answering; start them (bash scripts/start_services.sh) "
                    f"or deselect these tests with -m 'not service'", pytrace=False)


# --- processes ------------------------------------------------------------------------------

def stack_processes(stack_id: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose environment carries the stack marker."""
    needle = f"{STACK_MARKER}={stack_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            status = (entry / "stat").read_text()
            if status[status.rindex(")") + 2] == "Z":  # a zombie waiting for its parent
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            continue
        found.append((int(entry.name), command))
    return found


def stop_components(components: list[Component], timeout: float = 30) -> None:
    """SIGTERM every process group, wait, then SIGKILL the groups still there."""
    for component in components:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(component.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for component in components:
        with contextlib.suppress(subprocess.TimeoutExpired):
            component.process.wait(max(0.1, deadline - time.monotonic()))
    for component in components:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(component.process.pid, 0)
            # The leader or one of its children is still there.
            os.killpg(component.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            component.process.wait(10)


def _run(stack: Stack, name: str, args: list[str], timeout: float) -> None:
    log = stack.log_dir / f"{name}.log"
    with open(log, "w") as out:
        try:
            result = subprocess.run(args, env=stack.env, cwd=stack.tmp, stdout=out, stderr=subprocess.STDOUT,
                                    timeout=timeout, start_new_session=True)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(args[1:])} did not finish in {timeout:.0f}s\n{tail(log, 60)}", pytrace=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args[1:])} failed (exit {result.returncode})\n{tail(log, 60)}", pytrace=False)


def _start(stack: Stack, name: str, args: list[str]) -> Component:
    log = stack.log_dir / f"{name}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(args, env=stack.env, cwd=stack.tmp, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    component = Component(name, process, log)
    stack.components.append(component)
    return component


def stack_env(tmp: Path, *, stack_id: str, airflow_db: str, mlflow_port: int, api_port: int,
              log_server_port: int, passwords_file: Path) -> dict[str, str]:
    """The environment of every Airflow process: the embedded mode's, pointed at the services."""
    pg = f"postgres@{PG_HOST}:{PG_PORT}/{airflow_db}"
    overrides = {
        STACK_MARKER: stack_id,
        "NNZOO_HOME": str(tmp / "nnzoo"),
        "AIRFLOW_HOME": str(tmp / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
        # Queues, unacked messages and control keys of this stack only.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": redis_prefix(stack_id),
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{pg}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        # Task processes on the worker talk to the api-server's execution API.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        # One secret for every component: the api-server signs, workers and tasks verify.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),  # >= 64 bytes for HS512
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_server_port),
        # Parse dags/ soon after start, not after the default 5-minute listing interval.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # A message not acknowledged within this time is delivered again (Redis broker);
        # training tasks are acknowledged when they end, so it must outlast the longest.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S),
        "NNZOO_TRAINING_QUEUE": TRAINING_QUEUE,
        "NNZOO_TRAINING_POOL": orchestration.EMBEDDED_TRAINING_POOL,
        f"NNZOO_SCHEDULE_{SCHEDULED_FAMILY.upper()}": "* * * * *",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "NNZOO_MLFLOW_UI_URL": f"http://127.0.0.1:{mlflow_port}",
        # MLflow's job runner (GenAI jobs, unused here) restarts its huey consumers a second
        # after they die, so some could outlive the server's process group at teardown.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PYTHONUNBUFFERED": "1",
    }
    base = {key: value for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW__", "NNZOO_", "MLFLOW_"))}
    env = localrun.airflow_env({**base, **overrides})
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Airflow (CeleryExecutor, PostgreSQL, Redis) and an MLflow server, up and healthy."""
    require_services()
    tmp = tmp_path_factory.mktemp("stack")
    stack_id = uuid.uuid4().hex[:10]
    databases = {"airflow": f"nnzoo_test_airflow_{stack_id}", "mlflow": f"nnzoo_test_mlflow_{stack_id}"}
    mlflow_port, api_port, log_server_port = free_port(), free_port(), free_port()
    password = secrets.token_urlsafe(12)
    (tmp / "airflow").mkdir()
    (tmp / "logs").mkdir()
    passwords_file = tmp / "airflow" / "simple_auth_manager_passwords.json"
    passwords_file.write_text(json.dumps({ADMIN_USER: password}) + "\n")
    env = stack_env(tmp, stack_id=stack_id, airflow_db=databases["airflow"], mlflow_port=mlflow_port,
                    api_port=api_port, log_server_port=log_server_port, passwords_file=passwords_file)
    stack = Stack(tmp=tmp, env=env, airflow_url=f"http://127.0.0.1:{api_port}",
                  mlflow_url=f"http://127.0.0.1:{mlflow_port}", password=password, stack_id=stack_id,
                  databases=databases)
    airflow, mlflow = str(VENV_BIN / "airflow"), str(VENV_BIN / "mlflow")
    try:
        for database in databases.values():
            create_database(database)
        _start(stack, "mlflow-server", [
            mlflow, "server",
            "--backend-store-uri", f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{databases['mlflow']}",
            "--artifacts-destination", str(tmp / "mlflow-artifacts"),
            "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"])
        _run(stack, "airflow-db-migrate", [airflow, "db", "migrate"], timeout=300)
        _run(stack, "airflow-pools-set", [airflow, "pools", "set", orchestration.training_pool(stack.env), "1",
                                          "nnzoo training tasks (one at a time on CPU)"], timeout=120)
        _start(stack, "airflow-api-server", [airflow, "api-server"])
        _start(stack, "airflow-scheduler", [airflow, "scheduler"])
        _start(stack, "airflow-dag-processor", [airflow, "dag-processor"])
        _start(stack, "airflow-celery-worker", worker_command(stack))

        def healthy() -> bool:
            health = requests.get(f"{stack.airflow_url}/api/v2/monitor/health", timeout=5).json()
            return all(health.get(part, {}).get("status") == "healthy"
                       for part in ("metadatabase", "scheduler", "dag_processor"))

        wait_until("MLflow /health", lambda: requests.get(f"{stack.mlflow_url}/health", timeout=5).ok,
                   STARTUP_TIMEOUT_S, stack)
        wait_until("Airflow /api/v2/monitor/health (metadatabase, scheduler, dag_processor)", healthy,
                   STARTUP_TIMEOUT_S, stack)
        wait_worker_ready(stack, "airflow-celery-worker")
        wait_until(f"DAG {DAG_ID} parsed", lambda: stack.api("GET", f"/api/v2/dags/{DAG_ID}").status_code == 200,
                   STARTUP_TIMEOUT_S, stack, interval=2)
        _RUNNING.append(stack)
        yield stack
    finally:
        with contextlib.suppress(ValueError):
            _RUNNING.remove(stack)
        _teardown(stack)  # nothing left to do if the last service test stopped it already


# The session's stack while it runs: stopped as soon as the last test of tests/service is
# done, not when the session ends, so that an idle scheduler, dag-processor and worker do
# not take CPU from the tests that run after them in the same process.
_RUNNING: list[Stack] = []


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _RUNNING and (nextitem is None or scope_of(nextitem.nodeid) != SERVICE_SCOPE):
        _teardown(_RUNNING.pop())


def worker_command(stack: Stack) -> list[str]:
    return [str(VENV_BIN / "airflow"), "celery", "worker", "-q", f"{TRAINING_QUEUE},default", "--concurrency", "2",
            "--celery-hostname", f"nnzoo-test-{stack.stack_id}@%h", "--without-mingle", "--without-gossip"]


def wait_worker_ready(stack: Stack, name: str) -> None:
    wait_until(f"the Celery worker {name} to be ready", lambda: " ready." in tail(stack.log_dir / f"{name}.log", 400),
               STARTUP_TIMEOUT_S, stack)


def replace_worker(stack: Stack, name: str, **env: str) -> Component:
    """Stop the Celery worker (warm shutdown: it finishes what it runs) and start
    another one under ``name`` with ``env`` added to the stack's environment."""
    for old in [c for c in stack.components if c.name.startswith("airflow-celery-worker")]:
        stop_components([old], timeout=120)
        stack.components.remove(old)
    saved = stack.env
    stack.env = {**saved, **env}
    try:
        component = _start(stack, name, worker_command(stack))
    finally:
        stack.env = saved
    wait_worker_ready(stack, name)
    return component


def _teardown(stack: Stack) -> None:
    if stack.stopped:
        return
    stack.stopped = True
    stop_components(stack.components)
    # Anything of the stack that left its group (task processes, a worker's children).
    leftovers = stack_processes(stack.stack_id)
    for pid, _command in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    problems = []
    for database in stack.databases.values():
        try:
            drop_database(database)
        except Exception as error:  # report, and go on cleaning up
            problems.append(f"could not drop database {database}: {error}")
    try:
        delete_redis_keys(redis_prefix(stack.stack_id))
    except Exception as error:
        problems.append(f"could not delete the Redis keys of the stack (DB {REDIS_DB}): {error}")
    if leftovers:
        problems.append("processes of the stack were still running after their groups were stopped "
                        "(killed now): " + "; ".join(f"{pid} {command[:160]}" for pid, command in leftovers))
    still = stack_processes(stack.stack_id)
    if still:
        problems.append("processes of the stack survive SIGKILL: " + "; ".join(f"{pid} {c[:160]}" for pid, c in still))
    if problems:
        pytest.fail("teardown of the distributed stack:\n" + "\n".join(problems), pytrace=False)


# --- one DAG run, shared by the tests that need a finished run -----------------------------

@dataclasses.dataclass
class DagRun:
    run_id: str
    state: str
    task_instances: dict[str, dict]
    seconds: float


def task_instances(stack: Stack, run_id: str) -> dict[str, dict]:
    response = stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
    assert response.status_code == 200, response.text[:500]
    return {ti["task_id"]: ti for ti in response.json()["task_instances"]}


@pytest.fixture(scope="session")
def smoke_dag_run(stack: Stack) -> DagRun:
    """``zoo_classifiers`` triggered through the REST API with profile smoke, run to its end.

    ``nnzoo_retrain`` is unpaused first, as a deployment runs it: Airflow queues asset
    events only for unpaused DAGs, and this run's ``prepare_data`` is the first to
    materialise its dataset (new content), so it schedules a retraining
    (tests/service/test_retraining.py).
    """
    for dag_id in (RETRAIN_DAG_ID, DAG_ID):
        wait_until(f"DAG {dag_id} parsed", lambda d=dag_id: stack.api("GET", f"/api/v2/dags/{d}").status_code == 200,
                   STARTUP_TIMEOUT_S, stack, interval=2)
        response = stack.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        assert response.status_code == 200, response.text[:500]
    begin = time.monotonic()
    response = stack.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                         json={"logical_date": None, "conf": {"profile": "smoke"}})
    assert response.status_code == 200, f"trigger: {response.status_code} {response.text[:1000]}"
    run_id = response.json()["dag_run_id"]

    def finished() -> str | None:
        state = stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
        return state if state in ("success", "failed") else None

    state = wait_until(f"DAG run {run_id} to finish", finished, DAG_RUN_TIMEOUT_S, stack, interval=3)
    tis = task_instances(stack, run_id)
    return DagRun(run_id=run_id, state=state, task_instances=tis, seconds=time.monotonic() - begin)


def describe_run(stack: Stack, run: DagRun) -> str:
    states = "\n".join(f"  {task_id}: {ti['state']} (queue {ti.get('queue')}, try {ti.get('try_number')}, "
                       f"host {ti.get('hostname')})" for task_id, ti in sorted(run.task_instances.items()))
    task_logs = []
    for path in sorted((Path(stack.env["AIRFLOW_HOME"]) / "logs").rglob("*.log")):
        task_logs.append(f"----- task log {path.relative_to(stack.env['AIRFLOW_HOME'])} -----\n{tail(path, 30)}")
    return (f"DAG run {run.run_id}: {run.state} after {run.seconds:.0f}s\n{states}\n" + "\n".join(task_logs[-6:])
            + "\n" + stack.logs(50, ("airflow-celery-worker", "airflow-scheduler")))

