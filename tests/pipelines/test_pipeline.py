"""The one pipeline declaration: its checks, its task graph, and the in-process run,
which must execute the same stages with the same dependencies as the DAG built from it
(tests/dags/test_dag_integrity.py compares each DAG with the same task graph)."""

from __future__ import annotations

import pytest

from pipelines import runner
from pipelines.families import all_families
from pipelines.pipeline import FINISH, PREPARE, Pipeline, Step
from pipelines.runner import run_pipeline

FAMILIES = all_families()


def test_a_step_may_only_need_earlier_steps():
    with pytest.raises(ValueError, match="'b' needs 'c', which is not an earlier step"):
        Pipeline(steps=(Step("b", "### B", needs=("c",)), Step("c", "### C")))
    with pytest.raises(ValueError, match="'b' needs 'plan'"):
        Pipeline(steps=(Step("b", "### B", expand="plan"),))


@pytest.mark.parametrize("steps, message", [
    ((Step("a", "### A"), Step("a", "### A")), "declared twice"),
    ((Step(PREPARE, "### P"),), "declared twice or reuses a kit step"),
    ((Step(FINISH, "### F"),), "reuses a kit step"),
    ((Step("a", "### A", chain=True),), "chain=True needs items"),
    ((Step("p", "### P"), Step("a", "### A", over=(1,), expand="p")), "exclude each other"),
])
def test_malformed_declarations_are_refused_naming_the_step(steps, message):
    with pytest.raises(ValueError, match=message):
        Pipeline(steps=steps)


def test_task_graph_of_fan_out_chain_mapping_and_finish():
    declared = Pipeline(parent_run=True, steps=(
        Step("fan", "### Fan", over=("x", "y"), item="model"),
        Step("chain", "### Chain", over=(1, 2), item="layer", chain=True),
        Step("plan", "### Plan", needs=("chain",)),
        Step("mapped", "### Mapped", needs=("fan",), expand="plan"),
    ))
    assert declared.leaves() == ("mapped",)
    assert declared.task_graph() == {
        "prepare_data": [], "fan_x": ["prepare_data"], "fan_y": ["prepare_data"],
        "chain_1": ["prepare_data"], "chain_2": ["chain_1", "prepare_data"],
        "plan": ["chain_2", "prepare_data"], "mapped": ["fan_x", "fan_y", "plan", "prepare_data"],
        "finish": ["mapped", "prepare_data"],
    }


def _recorded_run(family, monkeypatch, fail_at: str | None = None):
    """Run ``family``'s pipeline in-process with every stage replaced by a recorder;
    each output names the task that made it, so the tasks a call saw are its upstream."""
    pipeline = family.pipeline
    sources = {step.expand for step in pipeline.steps if step.expand}
    calls: list[tuple[str, set[str]]] = []

    def seen(value) -> set[str]:
        found: set[str] = set()
        if isinstance(value, dict):
            found |= {value[k] for k in ("produced_by", "planned_by") if k in value}
            for item in value.values():
                found |= seen(item)
        elif isinstance(value, list):
            for item in value:
                found |= seen(item)
        return found

    def fake_stage(fam, name):
        step = pipeline.step(name)

        def stage(config, inputs):
            task_id = f"{name}_{inputs[step.item]}" if step.over else name
            calls.append((task_id, seen(inputs)))
            if name == fail_at:
                raise RuntimeError(f"{name} broke")
            if name in sources:
                return [{"job": n, "planned_by": task_id} for n in range(2)]
            return {"produced_by": task_id, "status": "FINISHED"}

        return stage

    monkeypatch.setattr(runner, "stage_function", fake_stage)
    return calls, run_pipeline(family, {"profile": "smoke"}, run_key="dag/run")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_in_process_run_executes_the_dags_stages_with_the_dags_dependencies(name, monkeypatch):
    family = FAMILIES[name]
    graph = family.pipeline.task_graph()
    calls, outputs = _recorded_run(family, monkeypatch)
    assert {task_id for task_id, _ in calls} == set(graph)
    order = [task_id for task_id, _ in calls]
    for task_id, upstream in calls:
        assert upstream == set(graph[task_id]), task_id
        assert all(order.index(before) < order.index(task_id) for before in upstream), task_id
    assert list(outputs) == list(family.stages)
    for step in family.pipeline.steps:
        if step.expand:  # one call per planned job
            assert [task_id for task_id, _ in calls].count(step.name) == 2


def test_a_failing_step_closes_the_parent_run_with_the_reason_and_re_raises(monkeypatch):
    family = FAMILIES["unsupervised"]
    failing = family.pipeline.steps[0].name
    finished = []
    original = runner.step_inputs

    def spy(step, *args, **kwargs):
        inputs = original(step, *args, **kwargs)
        if step.name == FINISH:
            finished.append(inputs.get("reason"))
        return inputs

    monkeypatch.setattr(runner, "step_inputs", spy)
    with pytest.raises(RuntimeError, match=f"{failing} broke"):
        _recorded_run(family, monkeypatch, fail_at=failing)
    assert finished == [f"RuntimeError: {failing} broke"]


def test_a_failure_names_the_step_and_the_steps_finished_before_it(monkeypatch):
    family = FAMILIES["cnn_depth"]
    failing = family.pipeline.steps[2].name
    with pytest.raises(RuntimeError) as raised:
        _recorded_run(family, monkeypatch, fail_at=failing)
    assert raised.value.nnzoo_step == failing
    assert raised.value.nnzoo_finished == [PREPARE, *(step.name for step in family.pipeline.steps[:2])]


def test_the_pipeline_module_only_declares():
    """No stage is found or run from the declaration: DAG files and configs import it,
    and the kit's stages import the families that import it (no circle)."""
    import ast
    import inspect

    from pipelines import pipeline

    tree = ast.parse(inspect.getsource(pipeline))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not [name for name in imported if name and name.startswith("pipelines")]
    assert not hasattr(pipeline, "run_pipeline") and not hasattr(pipeline, "stage_function")


def test_a_step_without_its_stage_function_is_named():
    family = FAMILIES["classifiers"]
    with pytest.raises(ValueError, match="declares step 'nope' but pipelines.stages.classifiers has no such function"):
        runner.stage_function(family, "nope")
