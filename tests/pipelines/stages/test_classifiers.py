"""One in-process smoke run of the classifiers pipeline (prepare_data -> train mlp, cnn ->
evaluate -> register, as its declaration chains them) into a temporary MLflow store,
inspected from many angles."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipelines import tracking
from pipelines.config import flatten, to_dict
from pipelines.configs.classifiers import FAMILY, MODELS
from pipelines.kit import TAG_MODEL_URI
from pipelines.runner import run_pipeline
from pipelines.stages import classifiers
from tests.conftest import REPO_ROOT, new_store

pytestmark = pytest.mark.slow

RUN_KEY = "zoo_classifiers/test-run"
CURVES = ("loss", "val_loss", "accuracy", "val_accuracy")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The pipeline runs once, in-process as ``nnzoo run`` runs it, with a DAG-style run key."""
    shared = new_store(tmp_path_factory.mktemp("smoke"))
    config = to_dict(FAMILY.config("smoke"))
    with pytest.MonkeyPatch.context() as patch:
        shared.activate(patch)
        out = run_pipeline(FAMILY, config, run_key=RUN_KEY)
    return {"store": shared, "config": config, "out": out}


@pytest.fixture
def client(smoke, monkeypatch):
    smoke["store"].activate(monkeypatch)
    return smoke["store"].client()


def _trained(smoke, model):
    return smoke["out"]["train"][model]


def _metrics(smoke, model):
    return smoke["out"]["evaluate"]["metrics"][model]


def _run(client, smoke, model):
    return client.get_run(_trained(smoke, model)["run_id"])


def test_pipeline_outputs_one_entry_per_declared_step(smoke):
    assert list(smoke["out"]) == list(FAMILY.stages)
    assert set(smoke["out"]["train"]) == set(MODELS)
    assert set(smoke["out"]["evaluate"]["metrics"]) == set(MODELS)
    assert set(smoke["out"]["register"]["versions"]) == set(MODELS)


def test_prepare_data_returns_a_reference_not_arrays(smoke):
    data = smoke["out"]["prepare_data"]
    assert set(data) == {"data_uri", "dataset", "fingerprint", "sizes", "profile", "changed"}
    assert data["data_uri"].startswith((smoke["store"].home / "data" / "mnist_subset").as_uri())
    assert sum(data["sizes"].values()) == smoke["config"]["data"]["max_examples"]


@pytest.mark.parametrize("model", MODELS)
def test_train_run_is_finished_and_tagged(client, smoke, model):
    run = _run(client, smoke, model)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == client.get_experiment_by_name("nnzoo-classifiers").experiment_id
    tags = run.data.tags
    assert tags[tracking.TAG_FAMILY] == "classifiers"
    assert tags[tracking.TAG_MODEL] == model
    assert tags[tracking.TAG_PROFILE] == "smoke"
    assert tags[tracking.TAG_STAGE] == "train"
    assert tags[tracking.TAG_RUN_KEY] == f"{RUN_KEY}/{model}"
    assert tags[TAG_MODEL_URI] == _trained(smoke, model)["model_uri"]


@pytest.mark.parametrize("model", MODELS)
def test_train_run_logs_config_dataset_code_and_device(client, smoke, model):
    params = _run(client, smoke, model).data.params
    for key, value in flatten(smoke["config"]).items():
        assert params[key] == tracking._param_value(value), key
    assert params["dataset.fingerprint"] == smoke["out"]["prepare_data"]["fingerprint"]
    assert params["dataset.name"] == "mnist_subset"
    assert int(params["dataset.train_size"]) == smoke["out"]["prepare_data"]["sizes"]["train"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    assert params["code.git_commit"].startswith(head)
    assert params["device"].startswith(("CPU", "GPU"))
    assert params["model"] == model
    assert int(params["parameters"]) > 0
    # size and compute of every trained model: the accuracy-vs-FLOPs chart reads them
    metrics = _run(client, smoke, model).data.metrics
    assert metrics["params"] == int(params["parameters"])
    assert metrics["flops"] > 2 * 784  # more than one multiply-add per pixel


@pytest.mark.parametrize("model", MODELS)
def test_per_epoch_curves_have_one_point_per_epoch(client, smoke, model):
    run_id = _trained(smoke, model)["run_id"]
    epochs = smoke["config"]["train"]["epochs"]
    for key in CURVES:
        history = tracking.metric_history(run_id, key)
        assert [step for step, _ in history] == list(range(1, epochs + 1)), key
        assert all(np.isfinite(value) for _, value in history)
    metrics = _run(client, smoke, model).data.metrics
    assert metrics["epochs_trained"] == epochs
    assert metrics["train_seconds"] > 0 and metrics["examples_per_second"] > 0


@pytest.mark.parametrize("model", MODELS)
def test_plots_and_summary_are_logged(client, smoke, model):
    run_id = _trained(smoke, model)["run_id"]
    plots = set(tracking.list_artifacts(run_id, "plots"))
    assert {"plots/training_curves.png", "plots/confusion_matrix.png"} <= plots
    assert ("plots/first_layer_filters.png" in plots) is (model == "cnn")
    mistakes = _metrics(smoke, model)["test_accuracy"] < 1.0
    assert ("plots/misclassified.png" in plots) is mistakes
    assert "model_summary.txt" in tracking.list_artifacts(run_id)
    local = client.download_artifacts(run_id, "plots/training_curves.png")
    with open(local, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("model", MODELS)
def test_logged_model_reproduces_the_logged_test_accuracy(client, smoke, model):
    from pipelines.data.prepared import load_prepared, normalize_images

    keras_model = tracking.load_keras_model(_trained(smoke, model)["model_uri"])
    test_x, test_y = load_prepared(smoke["out"]["prepare_data"]["data_uri"]).split("test")
    predicted = keras_model.predict(normalize_images(test_x), verbose=0).argmax(axis=1)
    logged = _run(client, smoke, model).data.metrics
    assert logged["test_accuracy"] == pytest.approx(float((predicted == test_y).mean()), abs=1e-9)
    assert logged["test_accuracy"] == _metrics(smoke, model)["test_accuracy"]
    assert 0 < logged["test_loss"] < 10


@pytest.mark.parametrize("model", MODELS)
def test_confusion_matrix_json_matches_the_metric(client, smoke, model):
    local = client.download_artifacts(_trained(smoke, model)["run_id"], "evaluation/confusion_matrix.json")
    matrix = np.array(json.loads(Path(local).read_text())["matrix"])
    assert matrix.shape == (10, 10)
    assert matrix.sum() == smoke["out"]["prepare_data"]["sizes"]["test"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(_metrics(smoke, model)["test_accuracy"])


@pytest.mark.parametrize("model", MODELS)
def test_each_model_is_registered_as_champion(client, smoke, model):
    name = f"nnzoo-classifiers-{model}"
    champion = client.get_model_version_by_alias(name, tracking.CHAMPION)
    assert champion.run_id == _trained(smoke, model)["run_id"]
    assert str(champion.version) == str(smoke["out"]["register"]["versions"][model]["version"])
    assert float(champion.tags["nnzoo.test_accuracy"]) == _metrics(smoke, model)["test_accuracy"]
    assert champion.tags["nnzoo.promotion.decision"] == "champion"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1


def test_a_retried_train_task_reuses_its_finished_run(client, smoke):
    first = _trained(smoke, "mlp")
    again = classifiers.train(smoke["config"], {**smoke["out"]["prepare_data"], "model": "mlp", "run_key": RUN_KEY})
    assert {k: v for k, v in again.items() if k != "metrics"} == {k: v for k, v in first.items() if k != "metrics"}
    assert again["cached"] is False
    # A reused run reports every metric its run holds: the training's and the evaluation's.
    assert again["metrics"].items() >= first["metrics"].items()
    assert again["metrics"]["test_accuracy"] == _metrics(smoke, "mlp")["test_accuracy"]
    experiment = client.get_experiment_by_name("nnzoo-classifiers")
    keyed = client.search_runs([experiment.experiment_id], f"tags.`{tracking.TAG_RUN_KEY}` = '{RUN_KEY}/mlp'")
    assert len(keyed) == 1


def test_registering_the_same_runs_again_adds_no_version(client, smoke):
    again = classifiers.register(smoke["config"], {"train": smoke["out"]["train"],
                                                   "evaluate": smoke["out"]["evaluate"]})
    for model in MODELS:
        assert str(again["versions"][model]["version"]) == str(smoke["out"]["register"]["versions"][model]["version"])
        assert len(client.search_model_versions(f"name = 'nnzoo-classifiers-{model}'")) == 1


def test_train_rejects_an_unknown_model(smoke, monkeypatch):
    smoke["store"].activate(monkeypatch)
    with pytest.raises(ValueError, match=r"model='rnn': expected one of mlp, cnn"):
        classifiers.train(smoke["config"], {**smoke["out"]["prepare_data"], "model": "rnn"})


def test_the_result_contract_holds_on_the_smoke_run(smoke):
    from tests.claims_check import assert_result_contract

    assert_result_contract(FAMILY, smoke["store"], RUN_KEY)

