"""Adding a family touches only its own new files: the toy family in tests/toy_family/
is dropped into a copy of the repository, and with no other edit it gets a CLI run,
`nnzoo list` steps, a DAG with a trigger form (and a place in `zoo_all`), MLflow runs,
a registered model and a row in the `make run` summary (docs/adding-a-family.md). Its
steps use the kit's step kinds: a training, an evaluation into the training run, a
parent report, and a model it declares it takes from the classifiers family, which
the kit resolves (here the champion the test registered, so no classifier trains)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, new_store

pytestmark = pytest.mark.slow

TOY = Path(__file__).parent / "toy_family"
TOY_FILES = sorted(str(path.relative_to(TOY)) for path in TOY.rglob("*.py"))

LOAD_BAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
toy = bag.dags["zoo_toy"]
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "tasks": {t.task_id: sorted(t.upstream_task_ids) for t in toy.tasks},
                  "params": sorted(toy.params), "examples": toy.params.get_param("examples").schema,
                  "zoo_all": sorted(t.trigger_dag_id for t in bag.dags["zoo_all"].tasks)}))
"""


@pytest.fixture(scope="module")
def toy_repo(tmp_path_factory):
    """(copy of the repository with the toy family's files added, its store, env)."""
    root = tmp_path_factory.mktemp("toy")
    copy = root / "repo"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "pipelines", "models",
                             "dags"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split()
    for relative in listed:
        if (REPO_ROOT / relative).is_file():
            (copy / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / relative, copy / relative)
    for relative in TOY_FILES:
        assert not (copy / relative).exists(), f"{relative} would overwrite a file of the repository"
        shutil.copy2(TOY / relative, copy / relative)
    store = new_store(root / "store")
    with pytest.MonkeyPatch.context() as patch:
        store.activate(patch)
        _register_reference(store)
    return copy, store, store.env(PYTHONPATH=str(copy))


REFERENCE_PARAMS = 3 * 5 + 5
"""Parameters of the stand-in for the classifiers' MLP (3 inputs, 5 units)."""


def _register_reference(store) -> None:
    """A smoke-profile nnzoo-classifiers-mlp champion, the model the toy family takes."""
    import keras
    import numpy as np

    from pipelines import tracking

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    with tracking.run("nnzoo-classifiers", "mlp", tags={tracking.TAG_PROFILE: "smoke"}) as run:
        uri = tracking.log_keras_model(run.run_id, model, np.zeros((1, 3), np.float32))
    version = tracking.register_model_version(uri, "nnzoo-classifiers-mlp", run.run_id)
    store.client().set_registered_model_alias("nnzoo-classifiers-mlp", tracking.CHAMPION, version.version)


def _cli(copy: Path, env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=copy, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_toy_family_is_only_new_files():
    assert TOY_FILES == ["dags/zoo_toy.py", "models/toy.py", "pipelines/configs/toy.py", "pipelines/data/source_toy.py",
                         "pipelines/stages/toy.py"]
    assert not any((REPO_ROOT / relative).exists() for relative in TOY_FILES)


def test_list_shows_the_toy_familys_declared_steps(toy_repo):
    copy, _store, env = toy_repo
    result = _cli(copy, env, "list", "-v")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DAG zoo_toy, stages: prepare_data -> train -> evaluate -> report -> register -> finish" in result.stdout
    assert "toy_blobs" in result.stdout


def test_the_toy_family_gets_a_dag_with_a_trigger_form_and_a_place_in_zoo_all(toy_repo):
    copy, store, env = toy_repo
    code = LOAD_BAG.replace("sys.argv[1]", repr(str(copy / "dags")))
    result = subprocess.run([sys.executable, "-c", code], cwd=copy, env={**env, "AIRFLOW_HOME": str(store.home / "af")},
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    bag = json.loads(result.stdout.strip().splitlines()[-1])
    assert bag["errors"] == {}
    assert bag["tasks"] == {"prepare_data": [], "train": ["prepare_data"], "evaluate": ["prepare_data", "train"],
                            "report": ["evaluate", "prepare_data", "train"],
                            "register": ["evaluate", "prepare_data", "train"], "finish": ["prepare_data", "register", "report"]}
    assert {"profile", "examples", "epochs", "cache"} <= set(bag["params"])
    assert bag["examples"]["minimum"] == 20
    assert "zoo_toy" in bag["zoo_all"]


def test_nnzoo_run_trains_tracks_and_registers_the_toy_family(toy_repo):
    copy, store, env = toy_repo
    result = _cli(copy, env, "run", "toy", "--profile", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["family"] == "toy" and set(summary["runs"]) == {"logistic"}
    client = store.client()
    run = client.get_run(summary["runs"]["logistic"])
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset.source"] == "generated:toy_blobs"
    assert run.data.metrics["test_accuracy"] == summary["metrics"]["logistic"]["test_accuracy"] > 0.9
    assert run.data.tags["nnzoo.evaluated_on"]  # the evaluation step kind marked it
    champion = client.get_model_version_by_alias("nnzoo-toy-logistic", "champion")
    assert champion.run_id == run.info.run_id
    # The parent report: the kit put the step's metrics, table and data on the parent run.
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["reference_params"] == REFERENCE_PARAMS
    assert parent.data.metrics["test_accuracy"] == run.data.metrics["test_accuracy"]
    with open(client.download_artifacts(parent.info.run_id, "comparison/toy.md")) as handle:
        assert f"| nnzoo-classifiers-mlp v1 | {REFERENCE_PARAMS} |" in handle.read()
    with open(client.download_artifacts(parent.info.run_id, "comparison/toy.json")) as handle:
        reference = json.load(handle)["reference"]
    assert (reference["version"], reference["trained_here"]) == ("1", False)  # the champion, nothing trained


def test_make_runs_summary_has_a_row_for_the_toy_family(toy_repo):
    copy, _store, env = toy_repo
    result = _cli(copy, env, "zoo", "--profile", "smoke", "--family", "toy", timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert re.search(r"^toy\s+logistic\s+FINISHED\s+[0-9a-f]{32}\s+test_accuracy=\d\.\d{4}", result.stdout, re.M), \
        result.stdout[-3000:]
