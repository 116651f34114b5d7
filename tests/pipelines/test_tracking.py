"""pipelines.tracking against a temporary SQLite MLflow store: run status, store
re-pointing, params/metrics, registration idempotency, promotion, experiment races."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
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
    assert second.client().get_run(run_b.run_id).info.run_name.startswith("in-b ")


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


def test_a_model_trained_under_mixed_precision_loads_for_inference_without_an_optimizer_warning(store):
    """Its saved optimizer is a loss-scale optimizer; a compiled load would rebuild a plain
    one and drop the saved state with a warning about a variable count."""
    import warnings

    import keras

    from pipelines import train

    train.configure_precision(True)
    try:
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", dtype="float32")(
            keras.layers.Dense(8, activation="relu")(inputs)))
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        assert type(model.optimizer).__name__ == "LossScaleOptimizer"
        x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
        model.fit(x, np.arange(16) % 2, epochs=1, verbose=0)
        with tracking.run("nnzoo-loading-test", "mixed") as run:
            uri = tracking.log_keras_model(run.run_id, model, x[:2])
        expected = model.predict(x, verbose=0)
    finally:
        train.configure_precision(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = tracking.load_keras_model(uri)
    assert not [w for w in caught if "optimizer" in str(w.message)], [str(w.message) for w in caught]
    assert getattr(loaded, "optimizer", None) is None  # not compiled
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-2, atol=1e-3)


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


# --- promotion between like and like ----------------------------------------------


def _lineage_version(registry, profile: str, dataset: str = "digits") -> str:
    new_version, client, name = registry
    version = new_version()
    client.set_model_version_tag(name, version, tracking.TAG_PROFILE, profile)
    client.set_model_version_tag(name, version, tracking.TAG_DATASET, dataset)
    return version


def test_a_smoke_challenger_never_takes_the_quick_champion(registry):
    _new, client, name = registry
    quick = _lineage_version(registry, "quick")
    assert tracking.promote(name, quick, "test_accuracy", 0.90)["promoted"]
    smoke = _lineage_version(registry, "smoke")
    decision = tracking.promote(name, smoke, "test_accuracy", 0.99)  # better, but not comparable
    assert not decision["promoted"] and decision["lineage_champion"]
    assert "smaller profile" in decision["reason"], decision["reason"]
    assert _champion(client, name) == quick
    assert str(client.get_model_version_by_alias(name, "champion-smoke-digits").version) == smoke
    assert str(client.get_model_version_by_alias(name, "champion-quick-digits").version) == quick
    assert client.get_model_version(name, smoke).tags["nnzoo.promotion.decision"] == "champion-smoke-digits"


def test_a_quick_model_displaces_a_smoke_champion_and_is_then_compared_with_quick_only(registry):
    _new, client, name = registry
    smoke = _lineage_version(registry, "smoke")
    tracking.promote(name, smoke, "test_accuracy", 0.99)
    assert _champion(client, name) == smoke
    quick = _lineage_version(registry, "quick")
    decision = tracking.promote(name, quick, "test_accuracy", 0.5)  # worse than smoke's, yet it serves
    assert decision["promoted"] and "larger profile" in decision["reason"]
    assert _champion(client, name) == quick
    worse = _lineage_version(registry, "quick")
    assert not tracking.promote(name, worse, "test_accuracy", 0.4)["promoted"]
    better = _lineage_version(registry, "quick")
    decision = tracking.promote(name, better, "test_accuracy", 0.6)
    assert decision["promoted"] and f"quick/digits champion v{quick}" in decision["reason"]
    assert _champion(client, name) == better


def test_another_dataset_is_not_compared_with_the_champion(registry):
    _new, client, name = registry
    digits = _lineage_version(registry, "quick", "digits")
    tracking.promote(name, digits, "test_accuracy", 0.8)
    fashion = _lineage_version(registry, "quick", "fashion_mnist")
    decision = tracking.promote(name, fashion, "test_accuracy", 0.95)
    assert not decision["promoted"] and "another dataset" in decision["reason"]
    assert _champion(client, name) == digits
    assert str(client.get_model_version_by_alias(name, "champion-quick-fashion_mnist").version) == fashion


def test_register_and_promote_takes_the_lineage_from_the_run(registry, logged_model):
    from pipelines.families import get_family
    from pipelines.kit import register_and_promote

    _new, client, name = registry
    _shared, model_uri = logged_model
    decisions = {}
    for profile, accuracy in (("quick", 0.9), ("smoke", 0.95)):
        with tracking.run("nnzoo-classifiers", f"cnn-{profile}", tags={tracking.TAG_PROFILE: profile}) as run:
            run.log_params({"dataset.name": "digits"})
        decisions[profile] = register_and_promote(get_family("classifiers"), "promotion-test", run.run_id, model_uri,
                                                  "test_accuracy", accuracy, tolerance=0.0)
    registered = "nnzoo-classifiers-promotion-test"
    assert decisions["quick"]["promoted"] and not decisions["smoke"]["promoted"]
    champion = client.get_model_version_by_alias(registered, tracking.CHAMPION)
    assert str(champion.version) == decisions["quick"]["version"]
    assert champion.tags[tracking.TAG_PROFILE] == "quick" and champion.tags[tracking.TAG_DATASET] == "digits"


# --- MLflow's own conventions: origin, names, datasets, experiment kind ------------


def test_runs_and_versions_carry_their_origin(registry, logged_model):
    _new, client, name = registry
    _shared, model_uri = logged_model
    with tracking.run("nnzoo-origin-test", "local") as local:
        pass
    tags = client.get_run(local.run_id).data.tags
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"] and tags["mlflow.source.name"]
    origin = {"airflow.dag_id": "zoo_x", "airflow.dag_run_id": "manual__1", "airflow.task_id": "train_cnn",
              "airflow.try_number": "1", "airflow.url": "http://airflow/dags/zoo_x/runs/manual__1/tasks/train_cnn",
              "mlflow.source.type": "JOB", "mlflow.source.name": "airflow:zoo_x.train_cnn", "mlflow.user": "alice"}
    tracking.set_origin(origin)
    try:
        with pytest.raises(RuntimeError), tracking.run("nnzoo-origin-test", "task") as run:
            raise RuntimeError("killed")
        assert origin.items() <= client.get_run(run.run_id).data.tags.items()
        version = tracking.register_model_version(model_uri, name, run.run_id)
        assert origin.items() <= client.get_model_version(name, version.version).tags.items()
        # The retry that resumes the run is the one its link leads back to.
        tracking.set_origin({**origin, "airflow.try_number": "2"})
        with tracking.run("nnzoo-origin-test", "task", resume_run_id=run.run_id):
            pass
        assert client.get_run(run.run_id).data.tags["airflow.try_number"] == "2"
    finally:
        tracking.set_origin(None)
    assert tracking.origin_tags()["mlflow.source.type"] == "LOCAL"


def test_top_level_runs_get_distinct_names_nested_runs_keep_theirs(store):
    with tracking.run("nnzoo-names", "cnn-smoke") as first:
        pass
    with tracking.run("nnzoo-names", "cnn-smoke", parent_run_id=first.run_id) as child:
        pass
    import time

    time.sleep(1.1)
    with tracking.run("nnzoo-names", "cnn-smoke") as second:
        pass
    names = [store.client().get_run(run.run_id).info.run_name for run in (first, second, child)]
    assert names[0] != names[1] and all(name.startswith("cnn-smoke ") for name in names[:2]), names
    assert names[2] == "cnn-smoke"


def test_experiments_open_in_the_model_training_view_with_a_description(store):
    experiment_id = tracking.ensure_experiment("nnzoo-kind", "What this family shows")
    tags = store.client().get_experiment(experiment_id).tags
    assert tags[tracking.TAG_EXPERIMENT_KIND] == "custom_model_development"
    assert tags[tracking.TAG_NOTE] == "What this family shows"
    # An experiment made before (without the tags) gets them; one set by hand is kept.
    old = store.client().create_experiment("nnzoo-old")
    store.client().set_experiment_tag(old, tracking.TAG_NOTE, "written by a user")
    tracking.ensure_experiment("nnzoo-old", "default text")
    tags = store.client().get_experiment(old).tags
    assert tags[tracking.TAG_EXPERIMENT_KIND] == "custom_model_development"
    assert tags[tracking.TAG_NOTE] == "written by a user"


def test_the_dataset_is_a_run_input_once(store):
    with tracking.run("nnzoo-inputs", "train") as run:
        for _ in range(2):  # a retry logs it again
            tracking.log_dataset(run.run_id, "digits", "0123456789abcdef", "file:///data/digits/abc.npz",
                                 sizes={"train": 100, "test": 20})
    inputs = store.client().get_run(run.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert (dataset.name, dataset.digest, dataset.source_type) == ("digits", "0123456789abcdef", "local")
    assert "file:///data/digits/abc.npz" in dataset.source
    assert {tag.key: tag.value for tag in inputs[0].tags}["mlflow.data.context"] == "training"


def test_only_finished_runs_are_registered(store):
    from pipelines.families import get_family
    from pipelines.kit import register_and_promote

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


# --- the decision alone, without a registry ------------------------------------------------

QUICK = {"profile": "quick", "dataset": "digits"}


@pytest.mark.parametrize("candidate, best, served, lineage, promoted", [
    (0.90, None, None, True, True),  # first of everything
    (0.95, 0.90, 0.90, True, True),  # better than the champion of its own lineage
    (0.85, 0.90, 0.90, False, False),  # worse
    (0.95, 0.90, ("smoke", 0.99), True, True),  # a larger profile displaces a smoke champion
    (0.95, None, ("full", 0.50), True, False),  # never a full one
    (0.95, None, ("quick", 0.50, "mnist"), True, False),  # nor one of another dataset
])
def test_the_promotion_decision_compares_like_with_like(candidate, best, served, lineage, promoted):
    me = tracking.Standing("9", candidate, **QUICK)
    lineage_best = None if best is None else tracking.Standing("2", best, **QUICK)
    if isinstance(served, tuple):
        profile, value, *dataset = served
        serving = tracking.Standing("3", value, profile, dataset[0] if dataset else "digits")
    else:
        serving = None if served is None else tracking.Standing("2", served, **QUICK)
    decided = tracking.decide_promotion(me, "test_accuracy", best=lineage_best, served=serving)
    assert (decided["lineage_champion"], decided["promoted"]) == (lineage, promoted), decided["reason"]
    assert decided["champion_version"] == (None if serving is None else serving.version)


def test_the_decision_takes_lower_is_better_metrics_and_a_tolerance():
    me = tracking.Standing("9", 0.101, **QUICK)
    best = tracking.Standing("2", 0.100, **QUICK)
    assert not tracking.decide_promotion(me, "test_mse", best=best, served=best, higher_is_better=False)["promoted"]
    assert tracking.decide_promotion(me, "test_mse", best=best, served=best, higher_is_better=False,
                                     tolerance=0.01)["promoted"]


# --- promotions at the same instant ---------------------------------------------------------


def test_two_challengers_promoted_at_once_from_two_processes_leave_the_better_one_champion(store, monkeypatch):
    """bench/promotion_race.py's race, a few rounds on the embedded mode's SQLite store:
    without the promotion lock about half the rounds end with the worse version holding
    champion (or an alias insert failing), see docs/distributed.md."""
    import importlib

    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))  # its workers import it by name
    race = importlib.import_module("promotion_race")
    result = race.race(store.uri, rounds=8, seed=1)
    assert result["errors"] == [] and result["wrong_rounds"] == 0, result


def test_a_promotion_waits_for_the_lock_and_breaks_one_left_by_a_dead_promoter(store, monkeypatch):
    import threading

    client = tracking.client()
    lock = "nnzoo-held" + tracking.PROMOTION_LOCK_SUFFIX
    client.create_registered_model(lock, tags={"nnzoo.lock.owner": "elsewhere:1", "nnzoo.lock.since": f"{time.time()}"})
    entered = threading.Event()

    def promote_meanwhile():
        with tracking.promotion_lock("nnzoo-held", timeout=30):
            entered.set()

    waiter = threading.Thread(target=promote_meanwhile)
    waiter.start()
    assert not entered.wait(1.0)  # held: it waits
    client.delete_registered_model(lock)  # released
    assert entered.wait(10.0)
    waiter.join(10)
    assert not client.search_registered_models(f"name = '{lock}'")  # released again after use

    # A lock whose holder died long ago is broken, with a line saying so.
    client.create_registered_model(lock, tags={"nnzoo.lock.owner": "gone:7",
                                               "nnzoo.lock.since": f"{time.time() - 3600}"})
    with tracking.promotion_lock("nnzoo-held", timeout=10):
        assert client.get_registered_model(lock).tags["nnzoo.lock.owner"] != "gone:7"
    # A live holder that never lets go: the waiter gives up with a message naming it.
    client.create_registered_model(lock, tags={"nnzoo.lock.owner": "busy:9", "nnzoo.lock.since": f"{time.time()}"})
    with pytest.raises(TimeoutError, match="held by busy:9"):
        with tracking.promotion_lock("nnzoo-held", timeout=0.5):
            pass
