"""Builds a family's Airflow DAG from its pipeline declaration (:mod:`pipelines.pipeline`).

Imported by the DAG files at parse time: Airflow's SDK only, no TensorFlow, Keras or
MLflow. Every task body is the same small function that decodes the run's params and
calls the step's stage; XCom carries the stages' small JSON outputs (URIs, run ids).
"""

from __future__ import annotations

from typing import Any

from pipelines import orchestration
from pipelines.families import Family, get_family
from pipelines.pipeline import FINISH, FINISH_STEP, PREPARE, PREPARE_STEP, stage_function, step_inputs


def _run_step(family: str, step: str, data: dict | None, needs: dict, item: Any = None, job: dict | None = None,
              outlet_events: Any = None) -> Any:
    """Body of every task: the step's stage with the DAG run's config and its inputs."""
    from airflow.sdk import get_current_context

    fam = get_family(family)
    declared = fam.pipeline.step(step)
    config = orchestration.task_config(family)
    if step == FINISH and not (data or {}).get("parent_run_id"):
        raise RuntimeError(f"{PREPARE} did not complete: no parent run to close")
    if job is not None and declared.label:
        get_current_context()["nnzoo_label"] = declared.label.format(**job)
    run_key = orchestration.task_run_key()
    if step == PREPARE:
        output = stage_function(fam, PREPARE)(config, {"run_key": run_key})
        orchestration.announce_dataset(outlet_events, output)
        return output
    output = stage_function(fam, step)(config, step_inputs(declared, data, run_key, needs, item, job))
    if step == FINISH and output["status"] != "FINISHED":
        raise RuntimeError(f"pipeline failed: {output['reason']}")
    return output


def build_dag(family: Family | str) -> Any:
    """The family's DAG: id ``zoo_<name>``, trigger form from its config, one task per
    step (per item of a fan-out, mapped over a planning step's jobs)."""
    from airflow.sdk import AssetAlias, dag, task

    fam = get_family(family) if isinstance(family, str) else family
    pipeline = fam.pipeline

    def make(step: Any, task_id: str, **kwargs: Any) -> Any:
        if step.trains:
            kwargs.update(orchestration.training_task_kwargs())
        # Outputs are one XCom each, lists included (a `-> dict` hint would split dicts up).
        return task(_run_step, task_id=task_id, doc_md=step.doc, multiple_outputs=False, **kwargs)

    @dag(schedule=orchestration.schedule(fam.name), **orchestration.family_dag_kwargs(fam))
    def family_dag() -> None:
        data = make(PREPARE_STEP, PREPARE, outlets=[AssetAlias(orchestration.DATASETS_ALIAS)])(fam.name, PREPARE,
                                                                                               None, {})
        outputs: dict[str, Any] = {}
        for step in pipeline.steps:
            needs = {name: outputs[name] for name in step.needs}
            retries = {} if step.trains else {"retries": 1}
            if step.over:
                fanned: dict[Any, Any] = {}
                for item, task_id in zip(step.over, step.task_ids(), strict=True):
                    chained = {step.name: fanned[step.over[len(fanned) - 1]] if fanned else None} if step.chain else {}
                    fanned[item] = make(step, task_id, **retries)(fam.name, step.name, data, {**needs, **chained}, item)
                outputs[step.name] = fanned[step.over[-1]] if step.chain else fanned
            elif step.expand:
                mapped = make(step, step.name, map_index_template="{{ nnzoo_label }}", **retries)
                outputs[step.name] = mapped.partial(family=fam.name, step=step.name, data=data, needs=needs).expand(
                    job=outputs[step.expand])
            else:
                outputs[step.name] = make(step, step.name, **retries)(fam.name, step.name, data, needs)
        if pipeline.parent_run:
            leaves = {name: outputs[name] for name in pipeline.leaves()}
            make(FINISH_STEP, FINISH, trigger_rule="all_done")(fam.name, FINISH, data, leaves)

    return family_dag()
