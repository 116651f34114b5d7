"""Builds a family's Airflow DAG from its pipeline declaration (:mod:`pipelines.pipeline`).

Imported by the DAG files at parse time: Airflow's SDK only, no TensorFlow, Keras or
MLflow. Every task body is the same small function that decodes the run's params and
calls the step's stage; XCom carries the stages' small JSON outputs (URIs, run ids).
"""

from __future__ import annotations

from typing import Any

from pipelines import orchestration
from pipelines.errors import BadValueError, NnzooError
from pipelines.families import Family, get_family
from pipelines.pipeline import FINISH, PREPARE, walk
from pipelines.runner import stage_function, step_inputs


def _run_step(family: str, step: str, data: dict | None, needs: dict, item: Any = None, job: dict | None = None,
              outlet_events: Any = None) -> Any:
    """Body of every task: the step's stage with the DAG run's config and its inputs;
    the MLflow runs it makes point back to this task instance, and its "MLflow run"
    link to the run it made."""
    from airflow.sdk import get_current_context

    from pipelines import airflow_links, tasklog, tracking

    tasklog.route_native_stderr()
    context = get_current_context()
    ti = context["ti"]
    tracking.set_origin(airflow_links.origin_tags(ti))
    fam = get_family(family)
    declared = fam.pipeline.step(step)
    config = orchestration.task_config(family)
    if step == FINISH and not (data or {}).get("parent_run_id"):
        raise RuntimeError(f"{PREPARE} did not complete: no parent run to close")
    if job is not None and declared.label:
        context["nnzoo_label"] = declared.label.format(**job)
    run_key = orchestration.task_run_key()
    try:
        if step == PREPARE:
            notice = orchestration.pool_notice()
            if notice:
                print(f"[nnzoo] {notice}", flush=True)
            output = stage_function(fam, PREPARE)(config, {"run_key": run_key})
            orchestration.announce_dataset(outlet_events, output)
        else:
            output = stage_function(fam, step)(config, step_inputs(declared, data, run_key, needs, item, job))
    except BadValueError as error:
        # A value the user chose: no retry can fix it, and where it was raised is no news.
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(error)) from None
    _link_to_run(ti, airflow_links.run_of(output) or (data or {}).get("parent_run_id"))
    if step == FINISH and output["status"] != "FINISHED":
        raise RuntimeError(f"pipeline failed: {output['reason']}")
    return output


def _say_failure(context: Any) -> None:
    """A failed task's last log line: an error meant for the user, in its own words
    (Airflow logs the exception with its traceback before the failure callbacks). A bad
    value arrives as the AirflowFailException raised in its place: its context holds it."""
    error = context.get("exception")
    for candidate in (error, getattr(error, "__context__", None)):
        if isinstance(candidate, NnzooError):
            print(f"nnzoo: error: {candidate}", flush=True)
            return


def _link_to_run(ti: Any, run_id: str | None) -> None:
    """Record the run for the task's "MLflow run" link and say where it is."""
    from pipelines import airflow_links, tracking

    if not run_id:
        return
    try:
        experiment_id = tracking.get_run(run_id).info.experiment_id
    except Exception as error:  # noqa: BLE001 - a link is not worth failing a finished step
        print(f"[nnzoo] no link to MLflow run {run_id}: {error}", flush=True)
        return
    url = airflow_links.mlflow_run_url(experiment_id, run_id)
    airflow_links.record_run(ti, run_id, experiment_id, url)
    if url:
        print(f"[nnzoo] MLflow run {run_id}: {url}", flush=True)
    else:  # in the task log only: `make run` (no MLflow UI) does not repeat it for every task
        print(f"MLflow run {run_id} (the task page's \"MLflow run\" link opens it once an MLflow UI is "
              f"configured: make ui, or {airflow_links.MLFLOW_UI_VARIABLE})", flush=True)


def build_dag(family: Family | str) -> Any:
    """The family's DAG: id ``zoo_<name>``, trigger form from its config, one task per
    step (per item of a fan-out, mapped over a planning step's jobs)."""
    from airflow.sdk import AssetAlias, dag, task

    fam = get_family(family) if isinstance(family, str) else family
    pipeline = fam.pipeline

    def make(step: Any, task_id: str, **kwargs: Any) -> Any:
        if step.trains:
            kwargs.update(orchestration.training_task_kwargs())
        kwargs.setdefault("on_failure_callback", _say_failure)
        # `@task`. Outputs are one XCom each, lists included (a `-> dict` hint would split dicts up).
        return task(python_callable=_run_step, multiple_outputs=False, task_id=task_id, doc_md=step.doc, **kwargs)

    def call(step: Any, data: Any, needs: dict[str, Any], item: Any = None, index: int = 0) -> Any:
        if step.name == PREPARE:
            return make(step, PREPARE, outlets=[AssetAlias(orchestration.DATASETS_ALIAS)])(fam.name, PREPARE, None, {})
        if step.name == FINISH:
            return make(step, FINISH, trigger_rule="all_done")(fam.name, FINISH, data, needs)
        retries = {} if step.trains else {"retries": 1}
        if step.over:
            return make(step, step.task_ids()[index], **retries)(fam.name, step.name, data, needs, item)
        return make(step, step.name, **retries)(fam.name, step.name, data, needs)

    def call_mapped(step: Any, data: Any, needs: dict[str, Any], jobs: Any) -> Any:
        retries = {} if step.trains else {"retries": 1}
        mapped = make(step, step.name, map_index_template="{{ nnzoo_label }}", **retries)
        return mapped.partial(family=fam.name, step=step.name, data=data, needs=needs).expand(job=jobs)

    @dag(schedule=orchestration.schedule(fam.name), **orchestration.family_dag_kwargs(fam))
    def family_dag() -> None:
        walk(pipeline, call, call_mapped)

    return family_dag()
