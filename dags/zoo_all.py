"""The whole zoo: triggers every family DAG in dags/ and waits for each.

Families are found by file name (`zoo_*.py`), so a new family's DAG joins without an
edit here. The profile chosen in the form is passed on to every family.
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag

FAMILY_DAG_IDS = sorted(p.stem for p in Path(__file__).parent.glob("zoo_*.py") if p.stem != "zoo_all")


@dag(
    dag_id="zoo_all",
    description="Run every nnzoo family DAG, one after another",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["nnzoo"],
    params={"profile": Param("quick", type="string", enum=["smoke", "quick", "full"], title="Profile",
                             description="Profile passed to every family DAG.")},
    doc_md=__doc__,
)
def zoo_all():
    previous = None
    for dag_id in FAMILY_DAG_IDS:
        trigger = TriggerDagRunOperator(
            task_id=f"run_{dag_id}",
            trigger_dag_id=dag_id,
            conf={"profile": "{{ params.profile }}"},
            wait_for_completion=True,
            poke_interval=15,
            failed_states=["failed"],
        )
        if previous is not None:
            previous >> trigger
        previous = trigger


zoo_all()
