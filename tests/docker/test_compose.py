"""The compose stack, checked without a Docker engine: the real files pass every check
in compose_checks, and a copy broken on purpose fails the check that guards it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docker import compose_checks as cc

STACK = cc.Stack(cc.REPO_ROOT)


@pytest.mark.parametrize("check", cc.ALL_CHECKS, ids=lambda check: check.__name__)
def test_stack_passes(check: Callable[[cc.Stack], list[str]]) -> None:
    assert check(STACK) == []


def test_compose_parses_with_the_expected_services() -> None:
    services = STACK.services()
    assert {"postgres", "redis", "mlflow", "airflow-init", "airflow-worker-gpu"} <= set(services)
    assert all("image" in svc or "build" in svc for svc in services.values())


def test_env_file_is_git_ignored() -> None:
    assert cc.is_git_ignored(cc.REPO_ROOT, "docker/.env")
    assert not cc.is_git_ignored(cc.REPO_ROOT, "docker/.env.example")


def test_git_ignore_check_can_fail(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("var/\n")
    assert not cc.is_git_ignored(tmp_path, "docker/.env")
    (tmp_path / ".gitignore").write_text("var/\ndocker/.env\n")
    assert cc.is_git_ignored(tmp_path, "docker/.env")


def test_variable_parser() -> None:
    refs = cc.var_refs("a ${A:?need A} $B ${C:-x:y} $$D $${E} ${F-1}")
    assert [(r.name, r.op, r.arg) for r in refs] == [
        ("A", ":?", "need A"), ("B", "", ""), ("C", ":-", "x:y"), ("F", "-", "1")]
    assert cc.interpolate_defaults("${C:-x} $$HOME ${A:?a}") == "x $HOME ${A:?a}"
    assert cc.is_secret_name("AIRFLOW__CORE__FERNET_KEY")
    assert not cc.is_secret_name("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    assert not cc.is_secret_name("NNZOO_GPU_COUNT")


# --- mutations: each breaks one property of a copy of the stack --------------------------


def _service(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda doc: doc["services"][name]


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def _delete(path: list[Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mutate


def _all_airflow(key: str, value: str | None) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        for svc in doc["services"].values():
            env = svc.get("environment") or {}
            if "AIRFLOW__CORE__EXECUTOR" in env:
                if value is None:
                    env.pop(key, None)
                else:
                    env[key] = value
    return mutate


def _drop_redis_image(doc: dict[str, Any]) -> None:
    doc["services"]["redis"].pop("image")


def _rename_queue(service: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        command = doc["services"][service]["command"]
        doc["services"][service]["command"] = [new if part == old else part for part in command]
    return mutate


def _one_scheduler_env(key: str, value: str) -> Callable[[dict[str, Any]], None]:
    return _set(["services", "airflow-scheduler", "environment", key], value)


REQ = "${{{0}:?{0} is not set: copy docker/.env.example to docker/.env and fill it in}}"

DOC_MUTATIONS: list[tuple[str, Callable[[dict[str, Any]], None], Callable[[cc.Stack], list[str]], str]] = [
    ("no-volumes-key", _delete(["volumes"]), cc.check_top_level, "top-level key 'volumes'"),
    ("service-missing", _delete(["services", "airflow-triggerer"]), cc.check_top_level, "airflow-triggerer"),
    ("no-image-no-build", _drop_redis_image, cc.check_images_and_builds, "neither image nor build"),
    ("missing-dockerfile", _set(["services", "airflow-worker-gpu", "build", "dockerfile"], "docker/Dockerfile.gpu"),
     cc.check_images_and_builds, "dockerfile"),
    ("missing-context", _set(["services", "mlflow", "build", "context"], "../nowhere"),
     cc.check_images_and_builds, "build context"),
    ("depends-on-unknown", _set(["services", "mlflow", "depends_on"], {"postgress": {"condition": "service_healthy"}}),
     cc.check_depends_on, "unknown service 'postgress'"),
    ("healthy-without-healthcheck", _delete(["services", "redis", "healthcheck"]), cc.check_depends_on,
     "redis has no healthcheck"),
    ("init-restarts", _set(["services", "airflow-init", "restart"], "always"), cc.check_depends_on,
     "airflow-init restarts"),
    ("undeclared-volume", _delete(["volumes", "nnzoo-shared"]), cc.check_volumes, "'nnzoo-shared' is not declared"),
    ("unused-volume", _set(["volumes", "orphan"], None), cc.check_volumes, "'orphan' is declared"),
    ("missing-bind-source", _set(["services", "postgres", "volumes", 1], "./nope:/docker-entrypoint-initdb.d:ro"),
     cc.check_volumes, "'./nope' does not exist"),
    ("mlflow-no-healthcheck", _delete(["services", "mlflow", "healthcheck"]), cc.check_healthchecks,
     "mlflow: no healthcheck"),
    ("apiserver-no-healthcheck", _delete(["services", "airflow-apiserver", "healthcheck"]), cc.check_healthchecks,
     "airflow-apiserver: no healthcheck"),
    ("postgres-no-healthcheck", _delete(["services", "postgres", "healthcheck"]), cc.check_healthchecks,
     "postgres: no healthcheck"),
    ("gpu-worker-default-queue", _rename_queue("airflow-worker-gpu", "gpu", "default"), cc.check_workers,
     "not on queue gpu"),
    ("gpu-worker-no-reservation", _delete(["services", "airflow-worker-gpu", "deploy"]), cc.check_workers,
     "reserves no nvidia device"),
    ("gpu-worker-amd", _set(["services", "airflow-worker-gpu", "deploy", "resources", "reservations", "devices", 0,
                             "driver"], "amd"), cc.check_workers, "reserves no nvidia device"),
    ("gpu-worker-cpu-image", _set(["services", "airflow-worker-gpu", "build", "args", "EXTRAS"], "cpu"),
     cc.check_workers, "not built with EXTRAS=gpu"),
    ("gpu-worker-two-tasks-one-gpu", _set(["services", "airflow-worker-gpu", "command", 5], "2"), cc.check_workers,
     "concurrency is not 1"),
    ("cpu-worker-gpu-queue", _rename_queue("airflow-worker-cpu", "default", "gpu"), cc.check_workers,
     "not on queue default"),
    ("training-queue-unserved", _all_airflow("NNZOO_TRAINING_QUEUE", "tpu"), cc.check_workers,
     "'tpu' is served by no worker"),
    ("execution-url-port", _all_airflow("AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                                        "http://airflow-apiserver:8081/execution/"),
     cc.check_execution_api, "does not match"),
    ("execution-url-host", _all_airflow("AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                                        "http://localhost:8080/execution/"),
     cc.check_execution_api, "does not match"),
    ("apiserver-other-port", lambda doc: doc["services"]["airflow-apiserver"].update(
        command=[doc["services"]["airflow-apiserver"]["command"][0].replace("--port 8080", "--port 9090")]),
     cc.check_execution_api, "listens on 9090"),
    ("missing-tracking-uri", _all_airflow("MLFLOW_TRACKING_URI", None), cc.check_airflow_environment,
     "MLFLOW_TRACKING_URI missing"),
    ("local-executor", _all_airflow("AIRFLOW__CORE__EXECUTOR", "LocalExecutor"), cc.check_airflow_environment,
     "not CeleryExecutor"),
    ("jwt-differs", _one_scheduler_env("AIRFLOW__API_AUTH__JWT_SECRET", REQ.format("OTHER_JWT_SECRET")),
     cc.check_airflow_environment, "AIRFLOW__API_AUTH__JWT_SECRET differs"),
    ("no-scheduler", _set(["services", "airflow-scheduler", "command"], ["version"]), cc.check_airflow_environment,
     "no service runs `airflow scheduler`"),
    ("literal-secret-env", _one_scheduler_env("AIRFLOW__CORE__FERNET_KEY", "Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFy"),
     cc.check_no_literal_secrets, "literal value for a secret"),
    ("literal-password-in-url", _all_airflow("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                                             "postgresql+psycopg2://airflow:airflow@postgres:5432/airflow"),
     cc.check_no_literal_secrets, "literal password in URL"),
    ("literal-redis-password", _set(["services", "redis", "command"], ["redis-server", "--requirepass", "hunter2"]),
     cc.check_no_literal_secrets, "literal redis password"),
    ("data-dir-not-shared", _set(["services", "airflow-worker-gpu", "volumes"], ["airflow-logs:/opt/airflow/logs"]),
     cc.check_shared_data, "not on a named volume"),
    ("init-no-pool", _set(["services", "airflow-init", "command"], ["airflow db migrate"]), cc.check_airflow_init,
     "does not create the training pool"),
    ("init-fixed-slots", lambda doc: doc["services"]["airflow-init"].update(
        command=[doc["services"]["airflow-init"]["command"][0].replace('"${NNZOO_GPU_COUNT:-1}" "nnzoo', '4 "nnzoo')]),
     cc.check_airflow_init, "do not come from NNZOO_GPU_COUNT"),
    ("mlflow-script-not-in-image", _set(["services", "mlflow", "entrypoint"], ["sh", "/opt/elsewhere/start.sh"]),
     cc.check_mlflow, "is not copied into the image"),
    ("mlflow-artifacts-not-on-volume", _set(["services", "mlflow", "volumes"], []), cc.check_mlflow,
     "not on a named volume"),
    ("mlflow-uri-wrong-port", _all_airflow("MLFLOW_TRACKING_URI", "http://mlflow:5001"), cc.check_mlflow,
     "does not point at http://mlflow:5000"),
    ("postgres-no-init", _set(["services", "postgres", "volumes"], ["postgres-data:/var/lib/postgresql/data"]),
     cc.check_postgres_init, "nothing mounted"),
]


@pytest.fixture
def stack_copy(tmp_path: Path) -> cc.Stack:
    stack = cc.copy_stack(tmp_path)
    assert cc.all_problems(stack) == [], "the unmodified copy must pass, or the mutations prove nothing"
    return stack


def _write_doc(stack: cc.Stack, mutate: Callable[[dict[str, Any]], None]) -> None:
    doc = stack.doc
    mutate(doc)
    stack.compose_path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.parametrize(("mutate", "check", "expected"), [m[1:] for m in DOC_MUTATIONS],
                         ids=[m[0] for m in DOC_MUTATIONS])
def test_broken_compose_is_rejected(stack_copy: cc.Stack, mutate: Callable[[dict[str, Any]], None],
                                    check: Callable[[cc.Stack], list[str]], expected: str) -> None:
    _write_doc(stack_copy, lambda doc: None)
    assert check(stack_copy) == [], "re-serialising the copy alone must not break the check"
    _write_doc(stack_copy, mutate)
    problems = check(stack_copy)
    assert any(expected in problem for problem in problems), problems


# Text edits of one file of the copy: (id, file, old, new, check, expected problem).
TEXT_MUTATIONS = [
    ("secret-with-default", "docker/compose.yaml",
     "${AIRFLOW_JWT_SECRET:?AIRFLOW_JWT_SECRET is not set: copy docker/.env.example to docker/.env and fill it in}",
     "${AIRFLOW_JWT_SECRET:-changeme}", cc.check_variable_forms, "must use the required form"),
    ("secret-plain", "docker/compose.yaml",
     "${REDIS_PASSWORD:?REDIS_PASSWORD is not set: copy docker/.env.example to docker/.env and fill it in}",
     "${REDIS_PASSWORD}", cc.check_variable_forms, "must use the required form"),
    ("required-without-hint", "docker/compose.yaml",
     "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set: copy docker/.env.example to docker/.env and fill it in}",
     "${POSTGRES_PASSWORD:?missing}", cc.check_variable_forms, "should say to copy"),
    ("setting-without-default", "docker/compose.yaml", "${NNZOO_GPU_DEVICE:-0}", "${NNZOO_GPU_DEVICE}",
     cc.check_variable_forms, "has no default"),
    ("var-not-in-example", "docker/compose.yaml", "${NNZOO_GPU_DEVICE:-0}", "${NNZOO_GPU_INDEX:-0}",
     cc.check_env_example, "NNZOO_GPU_INDEX} is used in compose.yaml but not listed"),
    ("example-var-missing", "docker/.env.example", "\nREDIS_PASSWORD=\n", "\n",
     cc.check_env_example, "REDIS_PASSWORD} is used in compose.yaml but not listed"),
    ("example-var-unused", "docker/.env.example", "\nREDIS_PASSWORD=\n", "\nREDIS_PASSWORD=\nUNUSED_SETTING=1\n",
     cc.check_env_example, "UNUSED_SETTING is listed"),
    ("example-holds-secret", "docker/.env.example", "\nREDIS_PASSWORD=\n", "\nREDIS_PASSWORD=s3cr3t-value\n",
     cc.check_env_example, "secret REDIS_PASSWORD must be empty"),
    ("example-default-drift", "docker/.env.example", "\nNNZOO_GPU_COUNT=1\n", "\nNNZOO_GPU_COUNT=4\n",
     cc.check_env_example, "NNZOO_GPU_COUNT"),
    ("dockerfile-no-from", "docker/Dockerfile", "FROM python:3.11-slim", "LABEL base=none",
     cc.check_dockerfile, "no FROM"),
    ("dockerfile-no-distributed", "docker/Dockerfile", '".[${EXTRAS},distributed]"', '".[${EXTRAS}]"',
     cc.check_dockerfile, "lacks the distributed extra"),
    ("dockerfile-fixed-extra", "docker/Dockerfile", '".[${EXTRAS},distributed]"', '".[cpu,distributed]"',
     cc.check_dockerfile, "ignores the EXTRAS build arg"),
    ("dockerfile-unknown-extra", "docker/Dockerfile", '".[${EXTRAS},distributed]"', '".[${EXTRAS},celery]"',
     cc.check_dockerfile, "'celery' is not an extra"),
    ("pyproject-no-mlflow-auth", "pyproject.toml", ', "mlflow[auth]==3.17.2"', "", cc.check_dockerfile,
     "mlflow[auth] (Flask-WTF) is not installed"),
    ("dockerfile-gpu-default", "docker/Dockerfile", "ARG EXTRAS=cpu", "ARG EXTRAS=gpu",
     cc.check_dockerfile, "should default to cpu"),
    ("dockerfile-copies-var", "docker/Dockerfile", "COPY dags ./dags", "COPY dags ./dags\nCOPY var ./var",
     cc.check_dockerfile, "COPY var copies"),
    ("dockerfile-copies-context", "docker/Dockerfile", "COPY dags ./dags", "COPY . .",
     cc.check_dockerfile, "COPY . copies"),
    ("dockerfile-secret-env", "docker/Dockerfile", "TF_CPP_MIN_LOG_LEVEL=2",
     "TF_CPP_MIN_LOG_LEVEL=2 AIRFLOW__CORE__FERNET_KEY=abc", cc.check_dockerfile, "bakes a secret"),
    ("dockerfile-root", "docker/Dockerfile", "USER airflow", "USER root", cc.check_dockerfile, "runs as root"),
    ("dockerfile-other-entrypoint", "docker/Dockerfile", 'ENTRYPOINT ["tini", "--", "airflow"]',
     'ENTRYPOINT ["tini", "--", "bash"]', cc.check_dockerfile, "not the airflow command"),
    ("pyproject-extra-renamed", "pyproject.toml", "\ndistributed = [", "\ncluster = [",
     cc.check_dockerfile, "'distributed' is not an extra"),
    ("pyproject-gpu-without-cuda", "pyproject.toml", 'gpu = ["tensorflow[and-cuda]', 'gpu = ["tensorflow-cpu',
     cc.check_dockerfile, "does not install tensorflow[and-cuda]"),
    ("mlflow-script-no-auth", "docker/mlflow-server.sh", "    --app-name basic-auth \\\n", "",
     cc.check_mlflow, "lacks '--app-name basic-auth'"),
    ("mlflow-script-syntax", "docker/mlflow-server.sh", "set -eu", "if then fi", cc.check_shell_scripts,
     "syntax error"),
    ("postgres-init-no-mlflow-db", "docker/postgres-init/10-nnzoo-databases.sh", "CREATE DATABASE mlflow OWNER",
     "-- CREATE DATABASE ml_flow OWNER", cc.check_postgres_init, "CREATE DATABASE mlflow"),
]


@pytest.mark.parametrize(("relative", "old", "new", "check", "expected"), [m[1:] for m in TEXT_MUTATIONS],
                         ids=[m[0] for m in TEXT_MUTATIONS])
def test_broken_files_are_rejected(stack_copy: cc.Stack, relative: str, old: str, new: str,
                                   check: Callable[[cc.Stack], list[str]], expected: str) -> None:
    path = stack_copy.root / relative
    text = path.read_text()
    assert old in text, f"mutation target {old!r} not found in {relative}: update the test"
    path.write_text(text.replace(old, new, 1))
    problems = check(stack_copy)
    assert any(expected in problem for problem in problems), problems
