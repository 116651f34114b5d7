"""The distributed stack against the real local services, once per test session
(:mod:`pipelines.stack`): Airflow 3 on PostgreSQL with the CeleryExecutor and Redis as
broker (scheduler, dag-processor, api-server and one ``airflow celery worker -q
gpu,default``), plus an MLflow tracking server on PostgreSQL that proxies artifacts
(``mlflow-artifacts:``). The stack's databases are new and uniquely named and dropped at
the end; its broker keys are prefixed by its id and deleted at the end.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth, user ``postgres``) and Redis on
127.0.0.1:6379 (``scripts/start_services.sh`` starts them where they are not running).
Deselect these tests with ``-m "not service"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines import stack as stacks
from pipelines.stack import (  # noqa: F401 (the service tests import these from here)
    ADMIN_USER,
    STACK_MARKER,
    STARTUP_TIMEOUT_S,
    TRAINING_QUEUE,
    VISIBILITY_TIMEOUT_S,
    Component,
    Stack,
    StackError,
    free_port,
    query,
    stack_processes,
    stop_components,
    tail,
    wait_until,
)
from tests.conftest import SERVICE_SCOPE, scope_of

DAG_ID = "zoo_classifiers"
DAG_RUN_TIMEOUT_S = 420
RETRAIN_DAG_ID = "nnzoo_retrain"
# A family retrained on a schedule (cron every minute); its DAG stays paused until a
# test unpauses it for one scheduled run. Its dataset is its own, so the runs it starts
# retrain nobody else.
SCHEDULED_FAMILY = "sequences"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Airflow (CeleryExecutor, PostgreSQL, Redis) and an MLflow server, up and healthy."""
    try:
        running = stacks.start_stack(tmp_path_factory.mktemp("stack"), dag_id=DAG_ID,
                                     extra_env={f"NNZOO_SCHEDULE_{SCHEDULED_FAMILY.upper()}": "* * * * *"})
    except StackError as error:
        pytest.fail(f"{error}\n(deselect these tests with -m 'not service')", pytrace=False)
    _RUNNING.append(running)
    try:
        yield running
    finally:
        with contextlib.suppress(ValueError):
            _RUNNING.remove(running)
        _teardown(running)  # nothing left to do if the last service test stopped it already


# The session's stack while it runs: stopped as soon as the last test of tests/service is
# done, not when the session ends, so that an idle scheduler, dag-processor and worker do
# not take CPU from the tests that run after them in the same process.
_RUNNING: list[Stack] = []


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _RUNNING and (nextitem is None or scope_of(nextitem.nodeid) != SERVICE_SCOPE):
        _teardown(_RUNNING.pop())


def replace_worker(stack: Stack, name: str, **env: str) -> Component:
    """Stop the Celery worker (warm shutdown: it finishes what it runs) and start
    another one under ``name`` with ``env`` added to the stack's environment."""
    for old in [c for c in stack.components if c.name.startswith("airflow-celery-worker")]:
        stop_components([old], timeout=120)
        stack.components.remove(old)
    return stacks.start_worker(stack, name, **env)


def _teardown(stack: Stack) -> None:
    problems = stacks.teardown(stack)
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
    return stacks.task_instances(stack, DAG_ID, run_id)


@pytest.fixture(scope="session")
def smoke_dag_run(stack: Stack) -> DagRun:
    """``zoo_classifiers`` triggered through the REST API with profile smoke, run to its end.

    ``nnzoo_retrain`` is unpaused first, as a deployment runs it: Airflow queues asset
    events only for unpaused DAGs, and this run's ``prepare_data`` is the first to
    materialise its dataset (new content), so it schedules a retraining
    (tests/service/test_retraining.py).
    """
    for dag_id in (RETRAIN_DAG_ID, DAG_ID):
        stacks.unpause(stack, dag_id)
    begin = time.monotonic()
    run_id = stacks.trigger(stack, DAG_ID, {"profile": "smoke"})

    def finished() -> str | None:
        state = stacks.run_state(stack, DAG_ID, run_id)
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

