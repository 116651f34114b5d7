"""pipelines.tracking against a temporary SQLite MLflow store: run status, store
re-pointing, params/metrics, registration idempotency, promotion, experiment races."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pytest

from pipelines import tracking
from tests.conftest import REPO_ROOT, new_store

NAME = "nnzoo-test-model"


def test_configure_follows_the_environment_per_test(tmp_path, monkeypatch):
    first, second = new_store(tmp_path / "a"), new_store(tmp_path / "b")
    first.activate(monkeypatch)
    assert tracking.configure() == first.uri
    assert mlflow.get_tracking_uri() == first.uri
    with tracking.run("nnzoo-a", "in-a") as run_a:
        pass
    second.activate(monkeypatch)
    assert tracking.configure() == second.uri
    assert mlflow.get_tracking_uri() == second.uri
    assert mlflow.get_registry_uri() == second.uri
    with tracking.run("nnzoo-b", "in-b") as run_b:
        pass
    assert first.client().get_run(run_a.run_id).info.status == "FINISHED"
    assert second.client().get_experiment_by_name("nnzoo-a") is None
    assert first.client().get_experiment_by_name("nnzoo-b") is None
    assert second.client().get_run(run_b.run_id).info.run_name == "in-b"


def test_new_experiments_keep_artifacts_under_nnzoo_home(store):
    experiment_id = tracking.ensure_experiment("nnzoo-where")
    location = store.client().get_experiment(experiment_id).artifact_location
    assert location == (store.home / "mlflow" / "artifacts" / "nnzoo-where").as_uri()


def test_run_ends_finished_with_tags(store):
    with tracking.run("nnzoo-x", "ok", tags={"nnzoo.model": "mlp", "n": 3}, run_key="dag/run1/mlp") as run:
        run.log_params({"a": 1})
    finished = store.client().get_run(run.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.tags["nnzoo.model"] == "mlp"
    assert finished.data.tags["n"] == "3"
    assert tracking.find_run(run.experiment_id, "dag/run1/mlp").info.run_id == run.run_id
    assert tracking.find_run(run.experiment_id, "dag/run2/mlp") is None


def test_run_that_raises_ends_failed_with_reason_and_traceback(store):
    with pytest.raises(ValueError, match="boom"), tracking.run("nnzoo-x", "bad") as run:
        raise ValueError("boom")
    failed = store.client().get_run(run.run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags[tracking.TAG_FAILURE] == "ValueError: boom"
    assert "failure/traceback.txt" in tracking.list_artifacts(run.run_id, "failure")


def test_interrupted_run_ends_killed(store):
    with pytest.raises(KeyboardInterrupt), tracking.run("nnzoo-x", "interrupted") as run:
        raise KeyboardInterrupt
    assert store.client().get_run(run.run_id).info.status == "KILLED"


def test_resumed_run_keeps_its_id_and_finishes_again(store):
    with tracking.run("nnzoo-x", "train") as first:
        first.log_metrics({"loss": 1.0}, step=1)
    with tracking.run("nnzoo-x", "evaluate", resume_run_id=first.run_id) as again:
        again.log_metrics({"test_accuracy": 0.5})
    assert again.resumed and again.run_id == first.run_id
    run = store.client().get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"loss": 1.0, "test_accuracy": 0.5}


def test_params_are_batched_and_relogging_the_same_values_is_harmless(store):
    params = {f"p{i}": i for i in range(150)} | {"hidden": (64, 32), "long": "x" * 7000}
    with tracking.run("nnzoo-x", "params") as run:
        run.log_params(params)
        run.log_params(params)  # a retry
    logged = store.client().get_run(run.run_id).data.params
    assert len(logged) == 152
    assert logged["p149"] == "149"
    assert logged["hidden"] == "[64, 32]"
    assert len(logged["long"]) == 6000


def test_non_finite_metrics_are_dropped_and_steps_kept(store):
    with tracking.run("nnzoo-x", "metrics") as run:
        run.log_metrics({"loss": 0.5, "bad": math.nan, "worse": math.inf, "none": None}, step=3)
    assert tracking.metric_history(run.run_id, "loss") == [(3, 0.5)]
    assert set(store.client().get_run(run.run_id).data.metrics) == {"loss"}


# --- registry and promotion --------------------------------------------------------


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory):
    """A tiny Keras model logged once to a module-wide store: (store, model_uri)."""
    import keras

    from models import build_model

    shared = new_store(tmp_path_factory.mktemp("registry"))
    with pytest.MonkeyPatch.context() as patch:
        shared.activate(patch)
        keras.utils.set_random_seed(0)
        model = build_model("mlp", input_shape=(4, 4, 1), num_classes=3, hidden_units=(4,))
        with tracking.run("nnzoo-registry-test", "source") as source:
            model_uri = tracking.log_keras_model(source.run_id, model, np.zeros((2, 4, 4, 1), np.float32))
    return shared, model_uri


@pytest.fixture
def registry(logged_model, monkeypatch, request):
    """(new_version, client, name): each test registers versions under its own name."""
    shared, model_uri = logged_model
    shared.activate(monkeypatch)
    name = f"{NAME}-{request.node.name}".replace("[", "-").replace("]", "")

    def new_version() -> str:
        with tracking.run("nnzoo-registry-test", "candidate") as run:
            pass
        return str(tracking.register_model_version(model_uri, name, run.run_id).version)

    return new_version, shared.client(), name


def _champion(client, name) -> str:
    return str(client.get_model_version_by_alias(name, tracking.CHAMPION).version)


def _challenger(client, name) -> str:
    return str(client.get_model_version_by_alias(name, tracking.CHALLENGER).version)


def test_logged_model_loads_back_and_predicts(logged_model, monkeypatch):
    shared, model_uri = logged_model
    shared.activate(monkeypatch)
    model = tracking.load_keras_model(model_uri)
    assert model.predict(np.zeros((3, 4, 4, 1), np.float32), verbose=0).shape == (3, 3)


def test_logged_model_states_the_keras_and_backend_versions_it_needs(logged_model, monkeypatch):
    from importlib import metadata

    import mlflow

    shared, model_uri = logged_model
    shared.activate(monkeypatch)
    tracking.configure()
    requirements = (Path(mlflow.artifacts.download_artifacts(model_uri)) / "requirements.txt").read_text().split()
    assert f"keras=={metadata.version('keras')}" in requirements
    assert any(line.startswith(("tensorflow==", "tensorflow-cpu==")) for line in requirements), requirements


def test_register_twice_for_the_same_run_returns_the_same_version(registry, logged_model):
    _new_version, client, name = registry
    _shared, model_uri = logged_model
    with tracking.run("nnzoo-registry-test", "once") as run:
        pass
    first = tracking.register_model_version(model_uri, name, run.run_id, tags={"nnzoo.test_accuracy": 0.5})
    again = tracking.register_model_version(model_uri, name, run.run_id)
    assert again.version == first.version
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    assert client.get_model_version(name, first.version).tags["nnzoo.test_accuracy"] == "0.5"
    with tracking.run("nnzoo-registry-test", "other") as other:
        pass
    assert tracking.register_model_version(model_uri, name, other.run_id).version != first.version


def test_first_version_becomes_champion(registry):
    new_version, client, name = registry
    v1 = new_version()
    decision = tracking.promote(name, v1, "test_accuracy", 0.8)
    assert decision["promoted"] and decision["champion_version"] is None
    assert _champion(client, name) == _challenger(client, name) == v1
    version = client.get_model_version(name, v1)
    assert version.tags["nnzoo.promotion.decision"] == "champion"
    assert version.tags["nnzoo.test_accuracy"] == "0.8"
    run_tags = client.get_run(version.run_id).data.tags
    assert run_tags["nnzoo.promotion.decision"] == "champion"


def test_better_version_takes_champion(registry):
    new_version, client, name = registry
    v1, v2 = new_version(), new_version()
    tracking.promote(name, v1, "test_accuracy", 0.8)
    decision = tracking.promote(name, v2, "test_accuracy", 0.9)
    assert decision["promoted"] and decision["champion_version"] == v1 and decision["champion_value"] == 0.8
    assert _champion(client, name) == v2
    assert client.get_model_version(name, v2).tags["nnzoo.promotion.decision"] == "champion"


def test_worse_version_only_becomes_challenger(registry):
    new_version, client, name = registry
    v1, v2 = new_version(), new_version()
    tracking.promote(name, v1, "test_accuracy", 0.8)
    decision = tracking.promote(name, v2, "test_accuracy", 0.7)
    assert not decision["promoted"]
    assert "worse" in decision["reason"]
    assert _champion(client, name) == v1
    assert _challenger(client, name) == v2
    version = client.get_model_version(name, v2)
    assert version.tags["nnzoo.promotion.decision"] == "challenger"
    assert client.get_run(version.run_id).data.tags["nnzoo.promotion.decision"] == "challenger"
    assert client.get_model_version(name, v1).tags["nnzoo.promotion.decision"] == "champion"


def test_equal_metric_is_not_worse(registry):
    new_version, client, name = registry
    v1, v2 = new_version(), new_version()
    tracking.promote(name, v1, "test_accuracy", 0.8)
    assert tracking.promote(name, v2, "test_accuracy", 0.8)["promoted"]
    assert _champion(client, name) == v2


@pytest.mark.parametrize("value, promoted", [(0.795, True), (0.78, False)])
def test_tolerance_allows_small_regressions_only(registry, value, promoted):
    new_version, client, name = registry
    v1, v2 = new_version(), new_version()
    tracking.promote(name, v1, "test_accuracy", 0.8)
    decision = tracking.promote(name, v2, "test_accuracy", value, tolerance=0.01)
    assert decision["promoted"] is promoted
    assert _champion(client, name) == (v2 if promoted else v1)
    assert "tolerance 0.01" in decision["reason"]


def test_lower_is_better_metrics(registry):
    new_version, client, name = registry
    v1, v2, v3 = new_version(), new_version(), new_version()
    tracking.promote(name, v1, "test_loss", 0.5, higher_is_better=False)
    assert not tracking.promote(name, v2, "test_loss", 0.6, higher_is_better=False)["promoted"]
    assert tracking.promote(name, v3, "test_loss", 0.4, higher_is_better=False)["promoted"]
    assert _champion(client, name) == v3


def test_promoting_the_champion_again_keeps_it(registry):
    new_version, client, name = registry
    v1 = new_version()
    tracking.promote(name, v1, "test_accuracy", 0.8)
    decision = tracking.promote(name, v1, "test_accuracy", 0.8)
    assert decision["promoted"] and decision["reason"] == "already champion"
    assert _champion(client, name) == v1


def test_only_finished_runs_are_registered(store):
    from pipelines.families import get_family
    from pipelines.stages.common import register_and_promote

    with pytest.raises(RuntimeError), tracking.run("nnzoo-classifiers", "failed") as run:
        raise RuntimeError("diverged")
    with pytest.raises(RuntimeError, match="ended FAILED; only finished runs are registered"):
        register_and_promote(get_family("classifiers"), "mlp", run.run_id, "models:/m-none", "test_accuracy", 0.9,
                             tolerance=0.0)
    assert store.client().search_registered_models() == []


# --- concurrent experiment creation ----------------------------------------------


def test_ensure_experiment_from_many_threads_gets_one_id(store):
    barrier = threading.Barrier(8)

    def create(_):
        barrier.wait()
        return tracking.ensure_experiment("nnzoo-race-threads")

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(create, range(8)))
    assert len(set(ids)) == 1
    assert [e.name for e in store.client().search_experiments()].count("nnzoo-race-threads") == 1


WORKER = """
import os, sys, time
from pathlib import Path
from pipelines import tracking
ready, count = Path(sys.argv[1]), int(sys.argv[2])
ready.joinpath(str(os.getpid())).touch()
deadline = time.time() + 60
while len(list(ready.iterdir())) < count and time.time() < deadline:
    time.sleep(0.01)
print(tracking.ensure_experiment("nnzoo-race-processes"))
"""


def test_ensure_experiment_from_many_processes_on_a_fresh_store_gets_one_id(tmp_path):
    fresh = new_store(tmp_path / "race")
    ready = tmp_path / "ready"
    ready.mkdir()
    count = 4
    env = fresh.env()
    processes = [subprocess.Popen([sys.executable, "-c", WORKER, str(ready), str(count)], cwd=REPO_ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]
    results = [process.communicate(timeout=180) for process in processes]
    codes = [process.returncode for process in processes]
    assert codes == [0] * count, "\n".join(err[-2000:] for _, err in results)
    ids = {out.strip().splitlines()[-1] for out, _ in results}
    assert len(ids) == 1
    assert os.path.exists(Path(fresh.uri.removeprefix("sqlite:///")))
    assert [e.name for e in fresh.client().search_experiments()].count("nnzoo-race-processes") == 1
