"""A local distributed stack: Airflow 3 with the CeleryExecutor on PostgreSQL and Redis,
Celery workers, and an MLflow tracking server on PostgreSQL that proxies artifacts
(``mlflow-artifacts:``). What the service tests (tests/service) and ``make load``
(bench/load.py) run against.

Each component is a subprocess in its own process group, its log under the stack's
folder. The databases are new and uniquely named and are dropped at the end; the broker
is either the machine's Redis (DB ``REDIS_DB``, keys prefixed by the stack's id: kombu's
``global_keyprefix``, so that stacks running at the same time never take each other's
tasks) or a Redis of the stack's own (``own_redis``: a ``redis-server`` on a free port
with an append-only file, which can be restarted). Needs PostgreSQL on 127.0.0.1:5432
(trust auth, user ``postgres``) and, without ``own_redis``, Redis on 127.0.0.1:6379
(``scripts/start_services.sh`` starts them where they are not running).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 9
TRAINING_QUEUE = "gpu"
ADMIN_USER = "admin"
STACK_MARKER = "NNZOO_TEST_STACK_ID"
"""Marks the environment of every process of a stack, so that teardown finds any process
that left its process group (Airflow task processes make their own group)."""
STARTUP_TIMEOUT_S = 240
VISIBILITY_TIMEOUT_S = 86400
"""As a deployment sets it: longer than the longest training task (docs/distributed.md)."""
VENV_BIN = Path(sys.executable).parent


class StackError(RuntimeError):
    """The stack could not start, a component died, or something it waited for never came."""


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
    args: list[str] = dataclasses.field(default_factory=list)
    env: dict[str, str] | None = None


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
    redis_url: str
    redis_port: int | None = None
    """The port of the stack's own Redis (``own_redis``), else None."""
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
        import requests

        if self._token is None:
            response = requests.post(f"{self.airflow_url}/auth/token",
                                     json={"username": ADMIN_USER, "password": self.password}, timeout=30)
            if response.status_code != 201:
                raise StackError(f"POST /auth/token: {response.status_code} {response.text[:500]}")
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any):
        """An authenticated call to Airflow's REST API (``path`` starts with /api/v2)."""
        import requests

        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.airflow_url}{path}", headers=headers, timeout=30, **kwargs)

    def mlflow(self, method: str, endpoint: str, **kwargs: Any) -> dict:
        """A call to MLflow's REST API (``endpoint`` after /api/2.0/mlflow/); the JSON answer."""
        import requests

        response = requests.request(method, f"{self.mlflow_url}/api/2.0/mlflow/{endpoint}", timeout=30, **kwargs)
        if response.status_code != 200:
            raise StackError(f"MLflow {endpoint}: {response.status_code} {response.text[:500]}")
        return response.json()

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def check_alive(self, allow: tuple[str, ...] = ()) -> None:
        dead = [c for c in self.components if c.process.poll() is not None and c.name not in allow]
        if dead:
            names = ", ".join(f"{c.name} (exit {c.process.returncode})" for c in dead)
            raise StackError(f"stack component(s) exited: {names}\n{self.logs(60)}")


def wait_until(what: str, check: Callable[[], Any], timeout: float, stack: Stack | None = None,
               interval: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; :class:`StackError` with the
    logs after ``timeout``."""
    import requests

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
    raise StackError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{logs}")


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


def require_services(redis: bool = True) -> None:
    wanted = [("PostgreSQL", PG_HOST, PG_PORT)] + ([("Redis", REDIS_HOST, REDIS_PORT)] if redis else [])
    missing = [f"{name} on {host}:{port}" for name, host, port in wanted if not answers(host, port)]
    if missing:
        raise StackError(f"{' and '.join(missing)} not answering; start them (bash scripts/start_services.sh)")


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


def run_once(stack: Stack, name: str, args: list[str], timeout: float) -> None:
    log = stack.log_dir / f"{name}.log"
    with open(log, "w") as out:
        try:
            result = subprocess.run(args, env=stack.env, cwd=stack.tmp, stdout=out, stderr=subprocess.STDOUT,
                                    timeout=timeout, start_new_session=True)
        except subprocess.TimeoutExpired:
            raise StackError(f"{' '.join(args[1:])} did not finish in {timeout:.0f}s\n{tail(log, 60)}") from None
    if result.returncode != 0:
        raise StackError(f"{' '.join(args[1:])} failed (exit {result.returncode})\n{tail(log, 60)}")


def start_component(stack: Stack, name: str, args: list[str], env: dict[str, str] | None = None) -> Component:
    """Start ``args`` as component ``name`` (a new process group; log ``<name>.log``, appended to)."""
    log = stack.log_dir / f"{name}.log"
    with open(log, "a") as out:
        process = subprocess.Popen(args, env=env or stack.env, cwd=stack.tmp, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    component = Component(name, process, log, args, env)
    stack.components.append(component)
    return component


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...), wherever their group."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parent = int(stat[stat.rindex(")") + 2:].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_component(stack: Stack, name: str) -> list[int]:
    """SIGKILL a component and everything below it, its task processes (which make their
    own process groups) included, as a machine that dies would; the pids killed."""
    component = stack.component(name)
    victims = [component.process.pid, *descendants(component.process.pid)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(component.process.pid, signal.SIGKILL)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    component.process.wait(30)
    stack.components.remove(component)
    return victims


def restart_component(stack: Stack, name: str, timeout: float = 30) -> Component:
    """Stop a component (SIGTERM, then SIGKILL after ``timeout``) and start it again."""
    component = stack.component(name)
    stop_components([component], timeout=timeout)
    stack.components.remove(component)
    return start_component(stack, name, component.args, component.env)


def stack_env(tmp: Path, *, stack_id: str, airflow_db: str, mlflow_port: int, api_port: int,
              log_server_port: int, passwords_file: Path, redis_url: str, key_prefix: str | None,
              extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every Airflow process: the embedded mode's, pointed at the services."""
    from pipelines import localrun, orchestration

    pg = f"postgres@{PG_HOST}:{PG_PORT}/{airflow_db}"
    overrides = {
        STACK_MARKER: stack_id,
        "NNZOO_HOME": str(tmp / "nnzoo"),
        "AIRFLOW_HOME": str(tmp / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": redis_url,
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
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "NNZOO_MLFLOW_UI_URL": f"http://127.0.0.1:{mlflow_port}",
        # MLflow's job runner (GenAI jobs, unused here) restarts its huey consumers a second
        # after they die, so some could outlive the server's process group at teardown.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PYTHONUNBUFFERED": "1",
        **({"AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": key_prefix} if key_prefix else {}),
        **(extra or {}),
    }
    base = {key: value for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW__", "NNZOO_", "MLFLOW_"))}
    env = localrun.airflow_env({**base, **overrides})
    env.update(overrides)
    return env


def worker_command(stack: Stack, name: str = "worker", concurrency: int = 2) -> list[str]:
    return [str(VENV_BIN / "airflow"), "celery", "worker", "-q", f"{TRAINING_QUEUE},default", "--concurrency",
            str(concurrency), "--celery-hostname", f"nnzoo-{name}-{stack.stack_id}@%h", "--without-mingle",
            "--without-gossip"]


def wait_worker_ready(stack: Stack, name: str, since: int = 0) -> None:
    """Wait for the worker's log to say it is ready (after byte ``since`` of the log)."""
    log = stack.log_dir / f"{name}.log"

    def ready() -> bool:
        with contextlib.suppress(FileNotFoundError), open(log, "rb") as handle:
            handle.seek(since)
            return b" ready." in handle.read()
        return False

    wait_until(f"the Celery worker {name} to be ready", ready, STARTUP_TIMEOUT_S, stack)


def start_worker(stack: Stack, name: str, concurrency: int = 2, **env: str) -> Component:
    log = stack.log_dir / f"{name}.log"
    since = log.stat().st_size if log.exists() else 0
    component = start_component(stack, name, worker_command(stack, name, concurrency),
                                {**stack.env, **env} if env else None)
    wait_worker_ready(stack, name, since)
    return component


def redis_command(port: int, folder: Path) -> list[str]:
    """A Redis of the stack's own; its append-only file keeps queued messages over a restart."""
    server = shutil.which("redis-server")
    if server is None:
        raise StackError("own_redis needs redis-server on PATH (Debian: apt-get install redis-server)")
    return [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--appendonly", "yes",
            "--appendfsync", "always", "--save", "", "--protected-mode", "no"]


def start_stack(tmp: Path, *, workers: int = 1, worker_concurrency: int = 2, own_redis: bool = False,
                dag_id: str = "zoo_classifiers", extra_env: dict[str, str] | None = None,
                training_slots: int = 1) -> Stack:
    """Start the stack under ``tmp`` and wait until it is healthy, ``dag_id`` parsed and
    ``workers`` Celery workers (``worker``, ``worker-2``, ...) are ready; the training
    pool gets ``training_slots`` slots (one: one training at a time, as on 2 CPU cores). On any failure
    the part already started is stopped again and :class:`StackError` raised."""
    import requests

    from pipelines import orchestration

    require_services(redis=not own_redis)
    tmp.mkdir(parents=True, exist_ok=True)
    stack_id = uuid.uuid4().hex[:10]
    databases = {"airflow": f"nnzoo_test_airflow_{stack_id}", "mlflow": f"nnzoo_test_mlflow_{stack_id}"}
    mlflow_port, api_port, log_server_port = free_port(), free_port(), free_port()
    redis_port = free_port() if own_redis else None
    redis_url = f"redis://127.0.0.1:{redis_port}/0" if own_redis else f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    password = secrets.token_urlsafe(12)
    for folder in ("airflow", "logs", "redis"):
        (tmp / folder).mkdir(exist_ok=True)
    passwords_file = tmp / "airflow" / "simple_auth_manager_passwords.json"
    passwords_file.write_text(json.dumps({ADMIN_USER: password}) + "\n")
    env = stack_env(tmp, stack_id=stack_id, airflow_db=databases["airflow"], mlflow_port=mlflow_port,
                    api_port=api_port, log_server_port=log_server_port, passwords_file=passwords_file,
                    redis_url=redis_url, key_prefix=None if own_redis else redis_prefix(stack_id), extra=extra_env)
    stack = Stack(tmp=tmp, env=env, airflow_url=f"http://127.0.0.1:{api_port}",
                  mlflow_url=f"http://127.0.0.1:{mlflow_port}", password=password, stack_id=stack_id,
                  databases=databases, redis_url=redis_url, redis_port=redis_port)
    airflow, mlflow = str(VENV_BIN / "airflow"), str(VENV_BIN / "mlflow")
    try:
        if own_redis:
            start_component(stack, "redis", redis_command(redis_port, tmp / "redis"))
            wait_until("the stack's Redis", lambda: answers("127.0.0.1", redis_port), 30, stack, interval=0.2)
        for database in databases.values():
            create_database(database)
        start_component(stack, "mlflow-server", [
            mlflow, "server",
            "--backend-store-uri", f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{databases['mlflow']}",
            "--artifacts-destination", str(tmp / "mlflow-artifacts"),
            "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"])
        run_once(stack, "airflow-db-migrate", [airflow, "db", "migrate"], timeout=300)
        run_once(stack, "airflow-pools-set", [airflow, "pools", "set", orchestration.training_pool(stack.env),
                                              str(training_slots), "nnzoo training tasks"], timeout=120)
        start_component(stack, "airflow-api-server", [airflow, "api-server"])
        start_component(stack, "airflow-scheduler", [airflow, "scheduler"])
        start_component(stack, "airflow-dag-processor", [airflow, "dag-processor"])
        for index in range(workers):
            start_component(stack, worker_name(index), worker_command(stack, worker_name(index), worker_concurrency))

        def healthy() -> bool:
            health = requests.get(f"{stack.airflow_url}/api/v2/monitor/health", timeout=5).json()
            return all(health.get(part, {}).get("status") == "healthy"
                       for part in ("metadatabase", "scheduler", "dag_processor"))

        wait_until("MLflow /health", lambda: requests.get(f"{stack.mlflow_url}/health", timeout=5).ok,
                   STARTUP_TIMEOUT_S, stack)
        wait_until("Airflow /api/v2/monitor/health (metadatabase, scheduler, dag_processor)", healthy,
                   STARTUP_TIMEOUT_S, stack)
        for index in range(workers):
            wait_worker_ready(stack, worker_name(index))
        wait_until(f"DAG {dag_id} parsed", lambda: stack.api("GET", f"/api/v2/dags/{dag_id}").status_code == 200,
                   STARTUP_TIMEOUT_S, stack, interval=2)
    except BaseException:
        teardown(stack)
        raise
    return stack


def worker_name(index: int) -> str:
    """``airflow-celery-worker``, then ``airflow-celery-worker-2``, ..."""
    return "airflow-celery-worker" + (f"-{index + 1}" if index else "")


def teardown(stack: Stack) -> list[str]:
    """Stop every component, kill what left its group, drop the databases and the broker
    keys; the problems met (an empty list when it all went)."""
    if stack.stopped:
        return []
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
    if stack.redis_port is None:
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
    return problems


# --- DAG runs ---------------------------------------------------------------------------------

def unpause(stack: Stack, dag_id: str) -> None:
    wait_until(f"DAG {dag_id} parsed", lambda: stack.api("GET", f"/api/v2/dags/{dag_id}").status_code == 200,
               STARTUP_TIMEOUT_S, stack, interval=2)
    response = stack.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
    if response.status_code != 200:
        raise StackError(f"unpause {dag_id}: {response.status_code} {response.text[:500]}")


def trigger(stack: Stack, dag_id: str, conf: dict) -> str:
    """Trigger ``dag_id`` through the REST API; its run id."""
    response = stack.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
    if response.status_code != 200:
        raise StackError(f"trigger {dag_id}: {response.status_code} {response.text[:1000]}")
    return response.json()["dag_run_id"]


def run_state(stack: Stack, dag_id: str, run_id: str) -> str:
    response = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
    if response.status_code != 200:
        raise StackError(f"state of {dag_id}/{run_id}: {response.status_code} {response.text[:500]}")
    return response.json()["state"]


def task_instances(stack: Stack, dag_id: str, run_id: str) -> dict[str, dict]:
    """The run's task instances by task id (a mapped task's by ``task_id[map_index]``)."""
    response = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
    if response.status_code != 200:
        raise StackError(f"task instances of {dag_id}/{run_id}: {response.status_code} {response.text[:500]}")
    found = {}
    for ti in response.json()["task_instances"]:
        index = ti.get("map_index", -1)
        found[ti["task_id"] if index in (-1, None) else f"{ti['task_id']}[{index}]"] = ti
    return found


def task_tries(stack: Stack, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict]:
    """Every try of one task instance (Airflow's history of earlier tries, then the last)."""
    response = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries",
                         params={"map_index": map_index})
    if response.status_code != 200:
        raise StackError(f"tries of {task_id}: {response.status_code} {response.text[:500]}")
    return response.json()["task_instances"]
