"""DAG files: cheap to parse (no TensorFlow/Keras/MLflow at import), load in Airflow's
DagBag without errors, and have the declared structure, pools, queues and params."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipelines.config import PROFILES
from pipelines.families import all_families
from pipelines.localrun import family_dag_ids
from pipelines.orchestration import EMBEDDED_TRAINING_POOL
from tests.conftest import REPO_ROOT, run_python

# The bag is loaded as the embedded mode and docker/compose.yaml run it: with a named pool.
TRAINING_POOL = EMBEDDED_TRAINING_POOL
FAMILIES = all_families()

DAGS = REPO_ROOT / "dags"
DAG_FILES = sorted(DAGS.glob("*.py"))
HEAVY = ("tensorflow", "keras", "mlflow")

IMPORT_ONE = """
import importlib.util, json, sys, time
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
seconds = time.perf_counter() - start
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"tensorflow", "keras", "mlflow"})
print(json.dumps({"seconds": seconds, "heavy": heavy}))
"""

LOAD_BAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
bag = DagBag(dag_folder=sys.argv[1])
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    out["dags"][dag_id] = {
        "tasks": {t.task_id: {"upstream": sorted(t.upstream_task_ids), "pool": t.pool, "queue": t.queue,
                              "retries": t.retries, "trigger_dag_id": getattr(t, "trigger_dag_id", None),
                              "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule), "mapped": "MappedOperator" in type(t).__name__,
                              "outlets": [type(o).__name__ + ":" + o.name for o in t.outlets],
                              "doc": t.doc_md, "label": getattr(t, "map_index_template", None),
                              "on_failure": [getattr(c, "__name__", str(c)) for c in (
                                  t.on_failure_callback if isinstance(t.on_failure_callback, list)
                                  else [t.on_failure_callback] if t.on_failure_callback else [])]}
                  for t in dag.tasks},
        "params": {k: restored.params.get_param(k).schema for k in restored.params},
        "defaults": dict(restored.params.dump()),
        "timetable": type(dag.timetable).__name__,
        "max_active_runs": dag.max_active_runs,
        "schedule_assets": sorted(a.name for a in getattr(getattr(dag.timetable, "asset_condition", None),
                                                          "objects", [])),
        "heavy": sorted({name.split(".")[0] for name in sys.modules} & {"tensorflow", "keras", "mlflow"}),
    }
print(json.dumps(out, default=str))
"""


def _bag(tmp_path: Path, **env: str) -> dict:
    full_env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(REPO_ROOT), **env}
    result = run_python(LOAD_BAG.replace("sys.argv[1]", repr(str(DAGS))), env=full_env, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return _bag(tmp_path_factory.mktemp("dagbag"), NNZOO_TRAINING_POOL=TRAINING_POOL)


def test_every_dag_file_is_found():
    assert {path.stem for path in DAG_FILES} >= {"zoo_classifiers", "zoo_unsupervised", "zoo_all"}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda path: path.name)
def test_dag_file_imports_fast_without_heavy_libraries(path, tmp_path):
    code = IMPORT_ONE.replace("sys.argv[1]", repr(str(path)))
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "PYTHONPATH": str(REPO_ROOT)}
    result = run_python(code, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["heavy"] == [], f"{path.name} imports {outcome['heavy']} at parse time"
    # The limit that matters to Airflow is its DAG-file import timeout (30 s by default);
    # the import takes 3-5 s here (mostly Airflow itself), more on a busy machine, so a
    # tighter bound would time the machine, not the file. Heavy imports are caught above.
    assert outcome["seconds"] < 30, f"{path.name} took {outcome['seconds']:.1f}s to import (Airflow's limit: 30 s)"


def test_dagbag_loads_without_import_errors(bag):
    assert bag["import_errors"] == {}
    assert {family.dag_id for family in FAMILIES.values()} | {"zoo_all", "zoo_report", "nnzoo_retrain"} == \
        set(bag["dags"])
    for family in FAMILIES.values():
        assert bag["dags"][family.dag_id]["heavy"] == [], family.name


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_dag_is_its_pipeline_declaration(bag, name):
    """Same tasks, same dependencies as the declaration the in-process run walks
    (tests/pipelines/test_pipeline.py checks the in-process side against the same graph);
    training steps on the training pool and queue; each task shows its step's doc."""
    family = FAMILIES[name]
    tasks = bag["dags"][family.dag_id]["tasks"]
    assert {task: info["upstream"] for task, info in tasks.items()} == family.pipeline.task_graph()
    for step in family.pipeline.all_steps:
        for task_id in step.task_ids():
            assert tasks[task_id]["doc"] == step.doc, task_id
            assert (tasks[task_id]["pool"] == TRAINING_POOL) == step.trains, task_id
            assert tasks[task_id]["mapped"] == bool(step.expand), task_id
            if step.trains:
                assert tasks[task_id]["retries"] >= 1, task_id
            assert "_say_failure" in tasks[task_id]["on_failure"], task_id
            if step.expand:
                assert tasks[task_id]["label"] == "{{ nnzoo_label }}"


def test_a_failed_task_log_ends_with_the_users_error_in_one_line(capsys):
    """The failure callback every family task has: an error meant for the user is the
    log's last line, also when the task body raised AirflowFailException in place of a
    bad value (so it is not retried); any other failure keeps Airflow's own record."""
    from pipelines.dagbuilder import _say_failure
    from pipelines.errors import BadValueError, StoreUnavailableError

    class Fail(Exception):  # stands for AirflowFailException: no Airflow import in the test process
        pass

    def in_place_of(error):
        try:
            raise error
        except BadValueError as bad:
            try:
                raise Fail(str(bad)) from None
            except Fail as replaced:
                return replaced

    for error in (in_place_of(BadValueError("canvas 30x112 is smaller than the largest digit")),
                  StoreUnavailableError("canvas 30x112 is smaller than the largest digit")):
        _say_failure({"exception": error})
        assert capsys.readouterr().out == "nnzoo: error: canvas 30x112 is smaller than the largest digit\n"
    _say_failure({"exception": RuntimeError("a bug")})
    assert capsys.readouterr().out == ""


def test_zoo_classifiers_task_graph(bag):
    tasks = bag["dags"]["zoo_classifiers"]["tasks"]
    assert {task: info["upstream"] for task, info in tasks.items()} == {
        "prepare_data": [],
        "train_mlp": ["prepare_data"],
        "train_cnn": ["prepare_data"],
        "evaluate": ["prepare_data", "train_cnn", "train_mlp"],
        "register": ["evaluate", "prepare_data", "train_cnn", "train_mlp"],
    }


def test_training_tasks_use_the_configured_pool_else_the_default_pool(bag, tmp_path):
    tasks = bag["dags"]["zoo_classifiers"]["tasks"]
    for task in ("train_mlp", "train_cnn"):
        assert tasks[task]["pool"] == TRAINING_POOL == "nnzoo_training"
        assert tasks[task]["queue"] == "default"
        assert tasks[task]["retries"] >= 1
    for task in ("prepare_data", "evaluate", "register"):
        assert tasks[task]["pool"] != TRAINING_POOL
    # Without NNZOO_TRAINING_POOL (a stock Airflow): every task in Airflow's default_pool.
    plain = _bag(tmp_path, NNZOO_TRAINING_POOL="")["dags"]
    for dag_id in (family.dag_id for family in FAMILIES.values()):
        assert {info["pool"] for info in plain[dag_id]["tasks"].values()} == {"default_pool"}, dag_id


def test_training_queue_and_concurrent_runs_come_from_the_environment(tmp_path, bag):
    dags = _bag(tmp_path, NNZOO_TRAINING_QUEUE="gpu", NNZOO_MAX_ACTIVE_RUNS="3")["dags"]
    tasks = dags["zoo_classifiers"]["tasks"]
    assert tasks["train_mlp"]["queue"] == tasks["train_cnn"]["queue"] == "gpu"
    assert tasks["prepare_data"]["queue"] == tasks["evaluate"]["queue"] == "default"
    # Runs of one family overlap (a schedule, new data, a person): Airflow's default 16.
    for family in FAMILIES.values():
        assert dags[family.dag_id]["max_active_runs"] == 3
        assert bag["dags"][family.dag_id]["max_active_runs"] == 16


def test_zoo_classifiers_params_render_with_the_profile_enum(bag):
    dag = bag["dags"]["zoo_classifiers"]
    assert dag["params"]["profile"]["enum"] == list(PROFILES)
    assert dag["defaults"]["profile"] == "quick"
    assert {"epochs", "batch_size", "learning_rate", "dataset", "seed"} <= set(dag["params"])
    assert dag["params"]["epochs"]["minimum"] == 1
    assert all(dag["defaults"][name] is None for name in dag["params"] if name != "profile")


def test_zoo_all_triggers_every_family_dag_in_order_then_the_report_whatever_happened(bag):
    dag = bag["dags"]["zoo_all"]
    triggers = {info["trigger_dag_id"]: task for task, info in dag["tasks"].items()}
    # From the family registry, not a file glob: every id it triggers is a DAG that exists.
    assert sorted(set(triggers) - {"zoo_report"}) == family_dag_ids() == [f"zoo_{name}" for name in sorted(FAMILIES)]
    assert set(triggers) <= set(bag["dags"])
    assert dag["params"]["profile"]["enum"] == list(PROFILES)
    report = dag["tasks"][triggers["zoo_report"]]
    assert report["upstream"] == [triggers[family_dag_ids()[-1]]]
    assert report["trigger_rule"] == "all_done"


def test_zoo_report_is_one_task_that_never_trains(bag):
    dag = bag["dags"]["zoo_report"]
    assert set(dag["tasks"]) == {"report"}
    assert dag["tasks"]["report"]["pool"] == "default_pool"
    assert dag["params"]["profile"]["enum"] == list(PROFILES)


def test_dags_are_manual_only(bag):
    for dag_id in (*family_dag_ids(), "zoo_all", "zoo_report"):
        assert bag["dags"][dag_id]["timetable"] == "NullTimetable", dag_id


def test_retraining_schedule_comes_from_the_environment(tmp_path):
    dag = _bag(tmp_path, NNZOO_SCHEDULE_CLASSIFIERS="0 3 * * 0")["dags"]["zoo_classifiers"]
    assert dag["timetable"] != "NullTimetable"
    assert "Cron" in dag["timetable"]


def test_prepare_data_announces_datasets_through_the_alias(bag):
    from pipelines.orchestration import DATASETS_ALIAS

    assert bag["dags"]["zoo_classifiers"]["tasks"]["prepare_data"]["outlets"] == [f"AssetAlias:{DATASETS_ALIAS}"]


def test_retrain_dag_is_scheduled_on_every_dataset_asset(bag):
    from pipelines.orchestration import all_datasets

    dag = bag["dags"]["nnzoo_retrain"]
    assert dag["timetable"] == "AssetTriggeredTimetable"
    assert dag["schedule_assets"] == sorted(f"nnzoo-dataset-{name}" for name in all_datasets())
    assert set(dag["tasks"]) == {"plan", "retrain"}


def test_zoo_unsupervised_task_graph(bag):
    from pipelines.configs.unsupervised import MAX_RBM_LAYERS

    tasks = bag["dags"]["zoo_unsupervised"]["tasks"]
    layers = [f"pretrain_rbm_layer_{n}" for n in range(1, MAX_RBM_LAYERS + 1)]
    assert {task: info["upstream"] for task, info in tasks.items()} == {
        "prepare_data": [],
        "train_autoencoder": ["prepare_data"],
        "evaluate_autoencoder": ["prepare_data", "train_autoencoder"],
        layers[0]: ["prepare_data"],
        **{layer: ["prepare_data", below] for below, layer in zip(layers, layers[1:], strict=False)},
        "evaluate_rbm_features": ["prepare_data"],
        "plan_finetuning": sorted(["prepare_data", layers[-1]]),
        "finetune": sorted(["plan_finetuning", "prepare_data", layers[-1]]),
        "compare": ["evaluate_autoencoder", "evaluate_rbm_features", "finetune", "prepare_data"],
        "register": sorted(["compare", "evaluate_autoencoder", "finetune", "prepare_data", layers[-1],
                            "train_autoencoder"]),
        "finish": ["prepare_data", "register"],
    }
    assert tasks["finetune"]["mapped"] and not tasks["compare"]["mapped"]
    # The parent MLflow run is closed whatever happened upstream.
    assert tasks["finish"]["trigger_rule"] == "all_done"


def test_zoo_unsupervised_training_tasks_use_the_pool_queue_and_retries(bag, tmp_path):
    from pipelines.configs.unsupervised import MAX_RBM_LAYERS

    training = ["train_autoencoder", "evaluate_rbm_features", "finetune",
                *[f"pretrain_rbm_layer_{n}" for n in range(1, MAX_RBM_LAYERS + 1)]]
    tasks = bag["dags"]["zoo_unsupervised"]["tasks"]
    for task in training:
        assert tasks[task]["pool"] == TRAINING_POOL, task
        assert tasks[task]["retries"] >= 1, task
    for task in ("prepare_data", "plan_finetuning", "compare", "register", "finish"):
        assert tasks[task]["pool"] != TRAINING_POOL, task
    on_gpu = _bag(tmp_path, NNZOO_TRAINING_QUEUE="gpu")["dags"]["zoo_unsupervised"]["tasks"]
    assert {task for task, info in on_gpu.items() if info["queue"] == "gpu"} == set(training)


def test_zoo_unsupervised_form_offers_layers_and_label_fractions_as_text(bag):
    dag = bag["dags"]["zoo_unsupervised"]
    params = dag["params"]
    assert {"layers", "label_fractions", "seeds", "bottleneck", "rbm.epochs", "dataset", "cache"} <= set(params)
    for name in ("layers", "label_fractions"):
        assert params[name]["type"] == ["null", "string"]
        assert "pattern" in params[name]
    assert params["bottleneck"]["minimum"] == 1
    assert all(dag["defaults"][name] is None for name in params if name != "profile")
