"""The trigger forms' params as Airflow's api-server enforces them: a conf value that
breaks a field's JSON schema is refused with HTTP 400 when the DAG is triggered
(``POST /api/v2/dags/{dag_id}/dagRuns``), and no DAG run is created.

Airflow 3.3's trigger route (``airflow/api_fastapi/core_api/routes/public/dag_run.py``,
``trigger_dag_run``) calls ``dag.create_dagrun``, which merges the conf into the DAG's
params and validates every one with ``jsonschema`` before it writes the run
(``airflow/serialization/definitions/dag.py``, ``create_dagrun``:
``self.params.deep_merge(conf).validate()``); a ``ParamValidationError`` becomes 400.
The UI's Trigger button posts to the same route, so the same values get its red banner."""

from __future__ import annotations

import pytest

from pipelines.families import all_families
from pipelines.params import form_specs
from tests.service.conftest import DAG_ID, STARTUP_TIMEOUT_S, Stack, wait_until

pytestmark = [pytest.mark.service, pytest.mark.slow]

# Bad values for every field of the zoo_classifiers form. The config refuses them too,
# except the text "3" (it parses CLI text) and a null profile (read as quick): the
# schema is stricter there. ``nnzoo_retrain`` may trigger family DAGs meanwhile, so
# runs are told apart by their conf, not only counted.
CLASSIFIERS_BAD = {
    "profile": ["bogus", None],
    "dataset": ["cifar10", 3],
    "epochs": [0, 1001, 2.5, "3"],
    "batch_size": [0, 4097],
    "learning_rate": [0, -1, 2e6],
    "seed": [-1, 2**31],
    "cache": [1, "yes"],
    "mock_data": [-1, 10001, 2.5],
}
# At least one field per other family DAG: list patterns (item range, parity, count,
# names), a multipleOf, a non-blank text and plain ranges.
OTHER_BAD = {
    "zoo_cnn_depth": {"depths": "8,7", "depth": 9, "variants": "max_pool,bogus", "activation": "swish"},
    "zoo_fcn_deconv": {"canvas_height": 20, "score_threshold": 0},
    "zoo_sequences": {"lengths": "1,20", "adding.cells": "lstm,transformer", "tasks": "adding;sentiment"},
    "zoo_style_transfer": {"style_image": "   ", "iterations": 0},
    "zoo_unsupervised": {"layers": "1,2,3,4,5", "label_fractions": "0.5,1.5", "rbm.epochs": 0},
}


@pytest.fixture(scope="module")
def parsed(stack: Stack) -> Stack:
    """The stack once every family DAG is parsed (it waits only for zoo_classifiers)."""
    for family in all_families().values():
        wait_until(f"DAG {family.dag_id} parsed",
                   lambda dag_id=family.dag_id: stack.api("GET", f"/api/v2/dags/{dag_id}").status_code == 200,
                   STARTUP_TIMEOUT_S, stack, interval=2)
    return stack


def runs(stack: Stack, dag_id: str) -> tuple[int, dict[str, dict]]:
    """(total_entries, {run id: run}) of the DAG's newest runs."""
    response = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "-run_after"})
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    return body["total_entries"], {run["dag_run_id"]: run for run in body["dag_runs"]}


def assert_refused(stack: Stack, dag_id: str, name: str, value) -> str:
    """POST a run whose conf sets ``name`` to ``value``; assert 400 and no run with that conf."""
    conf = {"profile": "smoke", name: value} if name != "profile" else {"profile": value}
    count_before, before = runs(stack, dag_id)
    response = stack.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
    count_after, after = runs(stack, dag_id)
    new = {run_id: run for run_id, run in after.items() if run_id not in before}
    # Runs that others started meanwhile carry other confs; ours must not be among them.
    assert not [run for run in new.values() if run.get("conf") == conf], f"{dag_id} {conf}: a run was created"
    if not new:
        assert count_after == count_before, f"{dag_id}: {count_before} runs before, {count_after} after"
    assert response.status_code == 400, f"{dag_id} {conf}: {response.status_code} {response.text[:500]}"
    return response.json()["detail"]


def test_every_family_dag_has_the_form_params_defined_in_pipelines(parsed: Stack):
    for family in all_families().values():
        response = parsed.api("GET", f"/api/v2/dags/{family.dag_id}/details")
        assert response.status_code == 200, response.text[:500]
        params = response.json()["params"]
        specs = form_specs(family.name)
        assert list(params) == list(specs), family.dag_id
        for name, spec in specs.items():
            assert params[name]["description"] == spec["description"], (family.dag_id, name)
            schema = params[name]["schema"]
            for key in ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "multipleOf", "pattern"):
                assert schema.get(key) == spec.get(key), (family.dag_id, name, key)


@pytest.mark.parametrize("name, value", [(name, value) for name, values in CLASSIFIERS_BAD.items()
                                         for value in values])
def test_classifiers_bad_value_is_refused_with_400_and_creates_no_run(parsed: Stack, name, value):
    assert set(CLASSIFIERS_BAD) == set(form_specs("classifiers"))  # every field of the form
    detail = assert_refused(parsed, DAG_ID, name, value)
    assert f"Invalid input for param {name}" in detail, detail


@pytest.mark.parametrize("dag_id, name, value", [(dag_id, name, value) for dag_id, fields in OTHER_BAD.items()
                                                 for name, value in fields.items()])
def test_other_family_bad_value_is_refused_with_400_and_creates_no_run(parsed: Stack, dag_id, name, value):
    families = {family.dag_id: family.name for family in all_families().values()}
    assert set(families) == {DAG_ID, *OTHER_BAD}
    assert name in form_specs(families[dag_id])  # a key that is no param would be accepted (and ignored)
    detail = assert_refused(parsed, dag_id, name, value)
    assert f"Invalid input for param {name}" in detail, detail


def test_nan_is_not_refused_by_the_schema_but_no_run_is_written(parsed: Stack):
    stack = parsed
    # Python's json module (Starlette's request.json) reads the non-standard NaN, and
    # jsonschema's range checks are comparisons, all false for NaN: the params pass.
    # PostgreSQL's JSONB then refuses the token when the run's conf is written; the
    # api-server turns that DataError into 422 "Value rejected by database"
    # (airflow/api_fastapi/common/exceptions.py, DataErrorHandler) and no run exists.
    # (On SQLite, the embedded mode's database, the conf can be stored; the run's first
    # task would refuse it: ConfigError "expected a finite number".) A paused DAG, so
    # nothing could start either way.
    dag_id = "zoo_fcn_deconv"
    count_before, before = runs(stack, dag_id)
    response = stack.api("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                         data='{"logical_date": null, "conf": {"profile": "smoke", "score_threshold": NaN}}',
                         headers={"Content-Type": "application/json"})
    count_after, after = runs(stack, dag_id)
    assert response.status_code == 422, response.text[:500]
    assert response.json()["detail"]["reason"] == "Value rejected by database"
    new = [run for run_id, run in after.items() if run_id not in before]
    assert not [run for run in new if "score_threshold" in (run.get("conf") or {})], new
    if not new:  # runs others started meanwhile (nnzoo_retrain) carry other confs
        assert count_after == count_before
