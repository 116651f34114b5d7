"""The zoo report: every claim of the talk with its measured value and verdict, every
trained model with its cost, and the accuracy-vs-FLOPs chart, read from the MLflow store
(it never trains). Writes one self-contained HTML page and Markdown under
``$NNZOO_HOME/reports/`` and logs them in the MLflow experiment ``nnzoo-report``.
``zoo_all`` triggers it last; trigger it by hand after any family's run.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from pipelines.config import PROFILES


@dag(
    dag_id="zoo_report",
    description="Judge every claim of the talk from the MLflow store: HTML + Markdown report",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["nnzoo"],
    params={"profile": Param("quick", type="string", enum=list(PROFILES), title="Profile",
                             description="Report on the runs of this profile.")},
    doc_md=__doc__,
)
def zoo_report():
    @task(retries=1, doc_md="### Report\nReads the store, judges every declared claim, writes and logs the report; "
                            "returns the paths and the report run's id.")
    def report(params: dict | None = None) -> dict:
        from pipelines.report import make_report

        result = make_report((params or {}).get("profile") or None)
        lines = [f"claims ({result['profile']} profile):", *result["table"].splitlines()]
        print("\n".join(f"[nnzoo] {line}" for line in lines), flush=True)
        print(f"[nnzoo] report: {result['html']}", flush=True)
        return {key: result[key] for key in ("profile", "html", "markdown", "run_id", "verdicts")}

    report()


zoo_report()
