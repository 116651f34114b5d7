"""Links between the two UIs, both ways.

Airflow → MLflow: every nnzoo task carries an *extra link*, "MLflow run", to the run it
made (the task instance page shows it as a button). TaskFlow tasks have no extra links
of their own, so nnzoo's tasks use a subclass of the ``@task`` operator that declares
one. Airflow 3 evaluates an operator's links on the worker when the task ends and keeps
the URL as an XCom (``_link_MlflowRunLink``); the api-server reads that XCom, so it
needs neither nnzoo nor MLflow to show the link, and no plugin is involved.

MLflow → Airflow: :func:`origin_tags` gives every MLflow run and model version a task
makes its DAG id, DAG run id, task id, map index, try number and the task instance's
URL in the Airflow UI (built by Airflow from ``[api] base_url``), plus MLflow's own
source and user tags.

Imported by DAG files at parse time: Airflow's SDK only, no MLflow.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.decorators.python import _PythonDecoratedOperator
from airflow.sdk import BaseOperatorLink

from pipelines.settings import MLFLOW_UI_VARIABLE, mlflow_experiment_url, mlflow_run_url, mlflow_ui_url

__all__ = ["MLFLOW_UI_VARIABLE", "MlflowRunLink", "NnzooTaskOperator", "mlflow_experiment_url", "mlflow_run_url",
           "mlflow_ui_url", "origin_tags", "remember_run_url", "run_of"]

# URL of the MLflow run each task instance of this process made, by task-instance key;
# set by the task body, read when Airflow evaluates the link at the end of the task.
_RUN_URLS: dict[tuple[str, str, str, int], str] = {}


def _key(dag_id: str, task_id: str, run_id: str, map_index: int | None) -> tuple[str, str, str, int]:
    return dag_id, task_id, run_id, -1 if map_index is None else int(map_index)


class MlflowRunLink(BaseOperatorLink):
    """"MLflow run": the run this task instance made (empty when MLflow has no UI URL)."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return _RUN_URLS.get(_key(ti_key.dag_id, ti_key.task_id, ti_key.run_id, ti_key.map_index), "")


class NnzooTaskOperator(_PythonDecoratedOperator):
    """The ``@task`` operator with the "MLflow run" link."""

    operator_extra_links = (MlflowRunLink(),)
    custom_operator_name = "@task"


def remember_run_url(ti: Any, url: str | None) -> None:
    if url:
        _RUN_URLS[_key(ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1))] = url


def origin_tags(ti: Any) -> dict[str, str]:
    """Tags that lead from an MLflow run back to the Airflow task instance ``ti``."""
    map_index = getattr(ti, "map_index", -1)
    map_index = -1 if map_index is None else map_index
    tags = {
        "airflow.dag_id": ti.dag_id,
        "airflow.dag_run_id": ti.run_id,
        "airflow.task_id": ti.task_id,
        "airflow.map_index": str(map_index),
        "airflow.try_number": str(ti.try_number),
        "airflow.url": ti.log_url,
        "mlflow.source.type": "JOB",
        "mlflow.source.name": f"airflow:{ti.dag_id}.{ti.task_id}" + (f"[{map_index}]" if map_index >= 0 else ""),
    }
    user = _triggering_user()
    if user:
        tags["mlflow.user"] = user
    return tags


def _triggering_user() -> str | None:
    """Who triggered the DAG run (the UI or API user), else the worker's OS user."""
    import getpass

    try:
        from airflow.sdk import get_current_context

        dag_run = get_current_context().get("dag_run")
        user = getattr(dag_run, "triggering_user_name", None)
        if user:
            return str(user)
    except Exception:  # noqa: BLE001 - outside a task, or an Airflow without the field
        pass
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def run_of(output: Any) -> str | None:
    """The MLflow run a step's output names: its ``run_id``, else the first nested one,
    else the pipeline's parent run."""
    if isinstance(output, dict):
        if isinstance(output.get("run_id"), str):
            return output["run_id"]
        for value in output.values():
            found = run_of(value) if isinstance(value, (dict, list)) else None
            if found:
                return found
        if isinstance(output.get("parent_run_id"), str):
            return output["parent_run_id"]
    if isinstance(output, list):
        for value in output:
            found = run_of(value)
            if found:
                return found
    return None
