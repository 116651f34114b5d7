"""nnzoo's Airflow plugin: the "MLflow run" link on every task instance page that
recorded an MLflow run (:class:`pipelines.airflow_links.MlflowRunLink`).

Registered as the ``airflow.plugins`` entry point ``nnzoo`` (pyproject.toml), so any
Airflow 3 with nnzoo installed loads it; nothing to copy into a plugins folder. A
*global* extra link is the one kind Airflow 3's api-server evaluates when the page is
viewed (an operator's own links are evaluated on the worker when the task ends), which
lets the link use the MLflow UI address known then.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from pipelines.airflow_links import MlflowRunLink


class NnzooPlugin(AirflowPlugin):
    name = "nnzoo"
    global_operator_extra_links = [MlflowRunLink()]
