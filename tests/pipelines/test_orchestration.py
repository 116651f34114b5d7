"""Deployment settings read by DAG files, dataset assets and the retraining plan."""

from __future__ import annotations

import pytest

from pipelines import orchestration
from pipelines.config import apply_overrides
from pipelines.data.prepared import latest_path, record_latest
from pipelines.families import all_families, get_family


def test_queue_pool_and_retries_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("NNZOO_TRAINING_QUEUE", raising=False)
    assert orchestration.training_queue() == "default"
    monkeypatch.setenv("NNZOO_TRAINING_QUEUE", "gpu")
    monkeypatch.setenv("NNZOO_TRAINING_POOL", "gpus")
    monkeypatch.setenv("NNZOO_TRAINING_RETRIES", "5")
    assert (orchestration.training_queue(), orchestration.training_pool(), orchestration.training_retries()) == (
        "gpu", "gpus", 5)


def test_no_named_pool_unless_configured(monkeypatch):
    """A plain Airflow has only default_pool: without NNZOO_TRAINING_POOL no task names a pool."""
    monkeypatch.delenv("NNZOO_TRAINING_POOL", raising=False)
    assert orchestration.training_pool() is None
    assert "pool" not in orchestration.training_task_kwargs()
    assert orchestration.training_pool({"NNZOO_TRAINING_POOL": "  "}) is None
    monkeypatch.setenv("NNZOO_TRAINING_POOL", "nnzoo_training")
    assert orchestration.training_task_kwargs()["pool"] == "nnzoo_training"
    assert orchestration.training_pool({}) is None  # an explicit environment is read, not os.environ


def test_pool_notice_names_the_pool_and_the_command_that_creates_it():
    assert orchestration.pool_notice({}) is None
    notice = orchestration.pool_notice({"NNZOO_TRAINING_POOL": "gpu slots"})
    assert "\n" not in notice
    assert "'gpu slots'" in notice and "does not exist" in notice
    assert notice.endswith("airflow pools set 'gpu slots' 1 'nnzoo training tasks'")
    assert orchestration.pool_notice({"NNZOO_TRAINING_POOL": "nnzoo_training"}).endswith(
        "airflow pools set nnzoo_training 1 'nnzoo training tasks'")


def test_bad_retries_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("NNZOO_TRAINING_RETRIES", "many")
    with pytest.raises(ValueError, match="NNZOO_TRAINING_RETRIES='many'"):
        orchestration.training_retries()


def test_training_retry_delay_comes_from_the_environment(monkeypatch):
    assert orchestration.training_task_kwargs()["retry_delay"].total_seconds() == 20
    monkeypatch.setenv("NNZOO_TRAINING_RETRY_DELAY_S", "2.5")
    assert orchestration.training_task_kwargs()["retry_delay"].total_seconds() == 2.5
    for bad in ("soon", "-1"):
        monkeypatch.setenv("NNZOO_TRAINING_RETRY_DELAY_S", bad)
        with pytest.raises(ValueError, match=f"NNZOO_TRAINING_RETRY_DELAY_S='{bad}'"):
            orchestration.training_task_kwargs()


@pytest.mark.parametrize("value", ["0", "many", "-2"])
def test_bad_max_active_runs_setting_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("NNZOO_MAX_ACTIVE_RUNS", value)
    with pytest.raises(ValueError, match=f"NNZOO_MAX_ACTIVE_RUNS='{value}': expected a whole number >= 1"):
        orchestration.max_active_runs()


def test_schedule_is_off_unless_configured(monkeypatch):
    monkeypatch.delenv("NNZOO_SCHEDULE_CLASSIFIERS", raising=False)
    assert orchestration.schedule("classifiers") is None
    monkeypatch.setenv("NNZOO_SCHEDULE_CLASSIFIERS", "0 3 * * 0")
    assert orchestration.schedule("classifiers") == "0 3 * * 0"


def test_bad_schedule_names_the_variable(monkeypatch):
    monkeypatch.setenv("NNZOO_SCHEDULE_CLASSIFIERS", "every tuesday")
    with pytest.raises(ValueError, match="NNZOO_SCHEDULE_CLASSIFIERS='every tuesday': not a cron expression"):
        orchestration.schedule("classifiers")
    monkeypatch.setenv("NNZOO_SCHEDULE_CLASSIFIERS", "@daily")
    assert orchestration.schedule("classifiers") == "@daily"


def test_every_dataset_of_every_family_has_an_asset_in_the_data_dir(store):
    datasets = orchestration.all_datasets()
    assert {"mnist_subset", "mnist"} <= set(datasets)
    asset = orchestration.dataset_asset("mnist_subset")
    assert asset["name"] == "nnzoo-dataset-mnist_subset"
    assert asset["uri"] == latest_path("mnist_subset").as_uri()
    assert str(store.home) in asset["uri"]


def test_record_latest_reports_new_content_once(store):
    data = get_family("classifiers").config("smoke").data
    assert record_latest(data, "aaaa") is True
    assert record_latest(data, "aaaa") is False
    assert record_latest(data, "bbbb") is True  # the dataset changed
    other_split = apply_overrides(data, {"max_examples": 300})
    assert record_latest(other_split, "bbbb") is True  # a different split of it is its own entry
    assert record_latest(data, "bbbb") is False


def _trains_on(dataset: str, profile: str) -> list[str]:
    """DAG ids of the registered families whose ``profile`` config trains on ``dataset``."""
    return sorted(f.dag_id for f in all_families().values() if f.config(profile).data.dataset == dataset)


def test_retraining_plan_triggers_families_using_the_dataset_but_not_the_source():
    event = {"extra": {"dataset": "mnist_subset", "profile": "quick"}, "source_dag_id": "somewhere_else"}
    users = _trains_on("mnist_subset", "quick")
    assert {"zoo_classifiers", "zoo_unsupervised"} <= set(users)  # both train on the bundled subset under quick
    assert orchestration.plan_retraining([event]) == [
        {"trigger_dag_id": dag_id, "conf": {"profile": "quick"}} for dag_id in users]
    from_itself = {**event, "source_dag_id": "zoo_classifiers"}
    assert orchestration.plan_retraining([from_itself]) == [
        {"trigger_dag_id": dag_id, "conf": {"profile": "quick"}} for dag_id in users if dag_id != "zoo_classifiers"]


def test_retraining_plan_ignores_datasets_no_family_uses_with_that_profile():
    # quick trains on mnist_subset; an mnist event under quick concerns nobody
    event = {"extra": {"dataset": "mnist", "profile": "quick"}, "source_dag_id": "x"}
    assert orchestration.plan_retraining([event]) == []
    full = {"extra": {"dataset": "mnist", "profile": "full"}, "source_dag_id": "x"}
    assert [t["trigger_dag_id"] for t in orchestration.plan_retraining([full])] == _trains_on("mnist", "full")
    assert {"zoo_classifiers", "zoo_unsupervised"} <= set(_trains_on("mnist", "full"))
    fashion = {"extra": {"dataset": "fashion_mnist", "profile": "full"}, "source_dag_id": "x"}
    assert orchestration.plan_retraining([fashion]) == []
    assert orchestration.plan_retraining([{"extra": {}}, {"extra": None}]) == []


def test_duplicate_events_trigger_each_family_once():
    event = {"extra": {"dataset": "mnist_subset", "profile": "quick"}, "source_dag_id": "x"}
    planned = [t["trigger_dag_id"] for t in orchestration.plan_retraining([event, event])]
    assert planned == _trains_on("mnist_subset", "quick")
