"""A family's pipeline, declared once: its steps in order, what each consumes, which
are fanned out or mapped and over what, which train.

From this one declaration come the Airflow DAG (:mod:`pipelines.dagbuilder`), the
in-process run (:func:`run_pipeline`, behind ``nnzoo run``), ``nnzoo list`` and the
tests' stage chains. It stays light (no Airflow, TensorFlow or MLflow): DAG files read
it at parse time.

Every pipeline starts with the kit's ``prepare_data`` (the data reference it returns is
merged into every later step's inputs) and, with ``parent_run=True``, ends with the
kit's ``finish``, which closes the pipeline's MLflow parent run whatever happened
upstream. A step ``s`` of family ``f`` calls ``pipelines.stages.<f>.<s>(config,
inputs)``; ``inputs`` holds the data reference, ``run_key``, and the output of each step
it ``needs`` under that step's name.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

PREPARE = "prepare_data"
FINISH = "finish"


@dataclasses.dataclass(frozen=True)
class Step:
    """One step; ``doc`` is Markdown (the Airflow UI shows it on the task)."""

    name: str
    doc: str
    needs: tuple[str, ...] = ()
    """Earlier steps whose outputs this one reads (``inputs[name]``)."""
    over: tuple[Any, ...] = ()
    """Static fan-out: one task per item (task id ``<name>_<item>``), the item in ``inputs[item]``.
    Downstream steps get ``{item: output}``."""
    item: str = "item"
    chain: bool = False
    """With ``over``: the items run one after another, each getting the previous item's
    output as ``inputs[name]`` (None for the first); downstream steps get the last output."""
    expand: str | None = None
    """Dynamic mapping over the list of jobs (small dicts) that this earlier step returns;
    each job is merged into the inputs. Downstream steps get the list of outputs."""
    label: str | None = None
    """Label of each mapped task, formatted from its job, e.g. ``"{init} seed {seed}"``."""
    trains: bool = False
    """Training step: training queue, pool and retries (a retry resumes its MLflow run)."""

    def task_ids(self) -> list[str]:
        return [f"{self.name}_{item}" for item in self.over] if self.over else [self.name]

    @property
    def title(self) -> str:
        return self.doc.strip().splitlines()[0].lstrip("# ").strip()


PREPARE_STEP = Step(PREPARE, "### Prepare data\nLoads the dataset, makes the deterministic train/val/test split and "
                             "stores it under the data dir; returns its URI and content fingerprint. New content is "
                             "announced on the dataset's Asset.")
FINISH_STEP = Step(FINISH, "### Finish\nEnds the pipeline's MLflow parent run: FINISHED, or FAILED naming the failed "
                           "steps (and then this task fails too, so the DAG run shows it).")


@dataclasses.dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]
    parent_run: bool = False
    """Open one MLflow parent run in ``prepare_data`` and nest every training under it."""

    def __post_init__(self) -> None:
        seen = {PREPARE}
        for step in self.steps:
            if step.name in seen or step.name == FINISH:
                raise ValueError(f"step {step.name!r} is declared twice or reuses a kit step's name")
            for upstream in (*step.needs, *([step.expand] if step.expand else [])):
                if upstream not in seen:
                    raise ValueError(f"step {step.name!r} needs {upstream!r}, which is not an earlier step")
            if step.chain and not step.over:
                raise ValueError(f"step {step.name!r}: chain=True needs items in over")
            if step.over and step.expand:
                raise ValueError(f"step {step.name!r}: over and expand exclude each other")
            seen.add(step.name)

    @property
    def all_steps(self) -> tuple[Step, ...]:
        return (PREPARE_STEP, *self.steps, *([FINISH_STEP] if self.parent_run else []))

    def step(self, name: str) -> Step:
        for step in self.all_steps:
            if step.name == name:
                return step
        raise KeyError(f"no step {name!r}; steps: {', '.join(s.name for s in self.all_steps)}")

    def leaves(self) -> tuple[str, ...]:
        """Steps no other step reads: ``finish`` waits for them."""
        used = {n for s in self.steps for n in (*s.needs, *([s.expand] if s.expand else []))}
        return tuple(s.name for s in self.steps if s.name not in used)

    def task_graph(self) -> dict[str, list[str]]:
        """``{task id: sorted upstream task ids}``: the DAG's shape, and the order the
        in-process run follows."""
        def ends(name: str) -> list[str]:
            step = self.step(name)
            return step.task_ids()[-1:] if step.chain else step.task_ids()

        graph: dict[str, list[str]] = {PREPARE: []}
        for step in self.all_steps[1:]:
            upstream = {PREPARE} | {t for n in step.needs for t in ends(n)}
            if step.expand:
                upstream |= set(ends(step.expand))
            if step.name == FINISH:
                upstream |= {t for n in self.leaves() for t in ends(n)}
            for index, task_id in enumerate(step.task_ids()):
                chained = {step.task_ids()[index - 1]} if step.chain and index else set()
                graph[task_id] = sorted(upstream | chained)
        return graph


def stage_function(family: Any, step: str) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]:
    """The stage a step calls: the kit's for ``prepare_data`` and ``finish``, else
    ``pipelines.stages.<family>.<step>``."""
    import functools

    if step in (PREPARE, FINISH):
        from pipelines.stages import common

        return functools.partial(getattr(common, step), family)
    module = importlib.import_module(f"pipelines.stages.{family.name}")
    if not hasattr(module, step):
        raise ValueError(f"family {family.name!r} declares step {step!r} but {module.__name__} has no such function")
    return getattr(module, step)


def step_inputs(step: Step, data: dict[str, Any] | None, run_key: str | None, needs: dict[str, Any],
                item: Any = None, job: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a step's stage receives; the DAG's tasks and the in-process run build it alike."""
    inputs = {**(data or {}), "run_key": run_key, **needs, **(job or {})}
    if step.over:
        inputs[step.item] = item
    return inputs


def run_pipeline(family: Any, config: dict[str, Any], run_key: str | None = None) -> dict[str, Any]:
    """Every step in-process, in declaration order; returns ``{step name: output}``.

    A failure ends the parent run (if any) FAILED with the reason, then raises
    the error, which :func:`failed_at` marks with the step and the steps that finished.
    """
    pipeline = family.pipeline
    outputs: dict[str, Any] = {}

    def call(step: Step, **kwargs: Any) -> Any:
        needs = {name: outputs[name] for name in step.needs}
        if step.chain:
            needs[step.name] = outputs.get(step.name)
        return stage_function(family, step.name)(config, step_inputs(step, data, run_key, needs, **kwargs))

    try:
        data = outputs[PREPARE] = stage_function(family, PREPARE)(config, {"run_key": run_key})
    except Exception as error:
        failed_at(error, PREPARE, [])
        raise
    current = PREPARE
    try:
        for step in pipeline.steps:
            current = step.name
            if step.chain:
                for item in step.over:
                    outputs[step.name] = call(step, item=item)
            elif step.over:
                outputs[step.name] = {item: call(step, item=item) for item in step.over}
            elif step.expand:
                outputs[step.name] = [call(step, job=job) for job in outputs[step.expand]]
            else:
                outputs[step.name] = call(step)
    except BaseException as error:
        if pipeline.parent_run:
            call(FINISH_STEP, job={"reason": f"{type(error).__name__}: {error}"})
        if isinstance(error, Exception):  # not KeyboardInterrupt or SystemExit
            failed_at(error, current, list(outputs))
        raise
    if pipeline.parent_run:
        outputs[FINISH] = call(dataclasses.replace(FINISH_STEP, needs=pipeline.leaves()))
    return outputs


def failed_at(error: Exception, step: str, finished: list[str]) -> Exception:
    """Mark ``error`` with the step that raised it (``error.nnzoo_step``) and the steps
    that finished before it (``error.nnzoo_finished``): ``nnzoo run`` reports both."""
    if getattr(error, "nnzoo_step", None) is None:
        error.nnzoo_step, error.nnzoo_finished = step, finished  # type: ignore[attr-defined]
    return error
