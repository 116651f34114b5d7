"""A family's pipeline, declared once: its steps in order, what each consumes, which
are fanned out or mapped and over what, which train.

It only declares. One traversal of it, :func:`walk`, builds the Airflow DAG
(:mod:`pipelines.dagbuilder`) and runs the stages in-process (:mod:`pipelines.runner`,
behind ``nnzoo run``); ``nnzoo list`` and the tests' stage chains read it too. It stays
light (no Airflow, TensorFlow or MLflow, no stage module): DAG files read it at parse
time.

Every pipeline starts with the kit's ``prepare_data`` (the data reference it returns is
merged into every later step's inputs) and, with ``parent_run=True``, ends with the
kit's ``finish``, which closes the pipeline's MLflow parent run whatever happened
upstream. A step ``s`` of family ``f`` calls ``pipelines.stages.<f>.<s>(config,
inputs)``; ``inputs`` holds the data reference, ``run_key``, and the output of each step
it ``needs`` under that step's name.
"""

from __future__ import annotations

import dataclasses
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


def walk(pipeline: Pipeline, call: Callable[..., Any], call_mapped: Callable[..., Any]) -> dict[str, Any]:
    """The one traversal of a declaration, shared by the DAG builder (``call`` makes a
    task and returns its XCom reference) and the in-process runner (``call`` runs the
    stage and returns its output); returns ``{step name: output}``.

    ``call(step, data, needs, item=None, index=0)``: one task (``item``/``index``: which
    of a fan-out's items); ``data`` is ``prepare_data``'s output (None for that step);
    ``needs``: ``{step name: output}`` of what it reads (a chained fan-out also gets its
    previous item's output under its own name). ``call_mapped(step, data, needs, jobs)``:
    the step mapped over the output of the step it ``expand``s. A fan-out's
    output is ``{item: output}``, a chain's is its last item's, a mapping's the list.
    ``finish``, with ``parent_run``, reads the leaves.
    """
    outputs: dict[str, Any] = {}
    data = outputs[PREPARE] = call(PREPARE_STEP, None, {})
    for step in pipeline.steps:
        needs = {name: outputs[name] for name in step.needs}
        if step.over:
            fanned: dict[Any, Any] = {}
            for index, item in enumerate(step.over):
                chained = {step.name: fanned[step.over[index - 1]] if index else None} if step.chain else {}
                fanned[item] = call(step, data, {**needs, **chained}, item=item, index=index)
            outputs[step.name] = fanned[step.over[-1]] if step.chain else fanned
        elif step.expand:
            outputs[step.name] = call_mapped(step, data, needs, outputs[step.expand])
        else:
            outputs[step.name] = call(step, data, needs)
    if pipeline.parent_run:
        finish = dataclasses.replace(FINISH_STEP, needs=pipeline.leaves())
        outputs[FINISH] = call(finish, data, {name: outputs[name] for name in finish.needs})
    return outputs
