"""Links between the two UIs, both ways.

Airflow → MLflow: every task that made an MLflow run records it in the XCom
``nnzoo_mlflow_run`` (run id, experiment id, and the run's URL if the worker knew the
MLflow UI's address). The "MLflow run" link on the task instance page is a *global
extra link* of nnzoo's Airflow plugin (:mod:`pipelines.airflow_plugin`, registered as
the ``airflow.plugins`` entry point), which the api-server evaluates each time the page
is viewed: it builds the URL from the run it finds in that XCom and the MLflow UI
address the api-server is configured with now (``NNZOO_MLFLOW_UI_URL``), so runs made
without any UI (``make run``) get a working link once ``make ui`` serves one. Without
an address at view time it falls back to the URL the worker stored, else no link.

MLflow → Airflow: :func:`origin_tags` gives every MLflow run and model version a task
makes its DAG id, DAG run id, task id, map index, try number and the task instance's
URL in the Airflow UI (built by Airflow from ``[api] base_url``), plus MLflow's own
source and user tags; a pipeline's parent run links to the DAG run instead.

Imported by DAG files at parse time: Airflow's SDK only, no MLflow.
"""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import BaseOperatorLink

from pipelines.settings import MLFLOW_UI_VARIABLE, mlflow_experiment_url, mlflow_run_url, mlflow_ui_url

__all__ = ["MLFLOW_RUN_XCOM", "MLFLOW_UI_VARIABLE", "MlflowRunLink", "link_for",
           "mlflow_experiment_url", "mlflow_run_url", "mlflow_ui_url", "origin_tags", "record_run", "run_of"]

MLFLOW_RUN_XCOM = "nnzoo_mlflow_run"
"""XCom key under which a task records the MLflow run it made."""


def record_run(ti: Any, run_id: str, experiment_id: str, url: str | None) -> None:
    """From inside a task: remember the run it made for the "MLflow run" link."""
    ti.xcom_push(key=MLFLOW_RUN_XCOM, value={"run_id": run_id, "experiment_id": experiment_id, "url": url})


def link_for(recorded: Any, env: Any = None) -> str | None:
    """The URL of a recorded run (:func:`record_run`'s value, or its JSON text): built
    from the MLflow UI address configured now, else the one the task knew, else None."""
    if isinstance(recorded, (str, bytes)):
        try:
            recorded = json.loads(recorded)
        except ValueError:
            return None
    if not isinstance(recorded, dict) or not recorded.get("run_id") or not recorded.get("experiment_id"):
        return None
    return mlflow_run_url(str(recorded["experiment_id"]), str(recorded["run_id"]), env) or recorded.get("url") or None


class MlflowRunLink(BaseOperatorLink):
    """"MLflow run": the run the task instance recorded, as a URL of the MLflow UI that
    the api-server knows at view time (no link when the task recorded none)."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return link_for(_recorded_run(ti_key)) or ""


def _recorded_run(ti_key: Any) -> Any:
    """The task instance's ``nnzoo_mlflow_run`` XCom, read from the metadata DB (the
    api-server's side of Airflow), or None."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(XComModel.get_many(
            key=MLFLOW_RUN_XCOM, run_id=ti_key.run_id, dag_ids=ti_key.dag_id, task_ids=ti_key.task_id,
            map_indexes=ti_key.map_index).with_only_columns(XComModel.value)).first()
    return None if row is None else row.value


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
        if user and user != "dag_test":  # `airflow dags test` (make run) names no person
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
