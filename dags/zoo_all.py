"""The whole zoo: triggers every registered family's DAG, one after another, and waits
for each, then the zoo report (``zoo_report``), which judges the talk's claims. Families come from the family registry, so a new family joins without an
edit here. The profile chosen in the form is passed on to every family.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, chain, dag

from pipelines.config import PROFILES
from pipelines.families import all_families


@dag(
    dag_id="zoo_all",
    description="Run every nnzoo family DAG, one after another",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["nnzoo"],
    params={"profile": Param("quick", type="string", enum=list(PROFILES), title="Profile",
                             description="Profile passed to every family DAG.")},
    doc_md=__doc__,
)
def zoo_all():
    families = [TriggerDagRunOperator(
        task_id=f"run_{family.dag_id}",
        trigger_dag_id=family.dag_id,
        conf={"profile": "{{ params.profile }}"},
        wait_for_completion=True,
        poke_interval=15,
        failed_states=["failed"],
    ) for family in all_families().values()]
    # The report comes last, whatever happened: a failed family's claims read NOT RUN.
    run_zoo_report = TriggerDagRunOperator(task_id="run_zoo_report", trigger_dag_id="zoo_report",
                                   conf={"profile": "{{ params.profile }}"}, wait_for_completion=True,
                                   poke_interval=15, failed_states=["failed"], trigger_rule="all_done")
    chain(*families, run_zoo_report)


zoo_all()
