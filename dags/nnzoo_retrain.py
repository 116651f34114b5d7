"""Data-aware retraining: runs when a dataset's Asset gets an event, i.e. when some
DAG's `prepare_data` materialised new content of that dataset, and triggers every
family DAG that trains on it (except the DAG that produced the data, which has just
trained on it).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Asset, AssetAny, dag, get_current_context, task

from pipelines import orchestration


@dag(
    dag_id="nnzoo_retrain",
    description="Retrain the families whose dataset changed",
    schedule=AssetAny(*(Asset(**orchestration.dataset_asset(name)) for name in orchestration.all_datasets())),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["nnzoo", "retraining"],
    doc_md=__doc__,
)
def nnzoo_retrain():
    # Retries: a run queued before the api-server answers (Airflow starting up) must not
    # stay failed for it.
    @task(retries=2, retry_delay=timedelta(seconds=15))
    def plan() -> list[dict]:
        """### Plan
        Reads the triggering dataset events and lists the family DAGs to run."""
        events = []
        for asset_events in get_current_context()["triggering_asset_events"].values():
            for event in asset_events:
                events.append({"extra": dict(event.extra or {}), "source_dag_id": event.source_dag_id})
        targets = orchestration.plan_retraining(events)
        print(f"[nnzoo] retraining {[t['trigger_dag_id'] for t in targets] or 'nothing'} for {len(events)} event(s)")
        return targets

    TriggerDagRunOperator.partial(task_id="retrain", wait_for_completion=False).expand_kwargs(plan())


nnzoo_retrain()
