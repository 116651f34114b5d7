"""Retries that resume and opt-in step caching of the training stage.

The kill test runs the train stage in a child process, SIGKILLs it after its first
completed epoch, and runs the same task again, as an Airflow retry would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import tracking
from pipelines.config import to_dict
from pipelines.configs.classifiers import FAMILY, MODELS
from pipelines.kit import TAG_CACHE_HIT, TAG_RESUMED, checkpoint_dir, prepare_data
from pipelines.runner import run_pipeline
from pipelines.stages import classifiers
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

TRAIN_SCRIPT = """
import json, sys
from pipelines.stages import classifiers
out = classifiers.train(json.loads(sys.argv[1]), json.loads(sys.argv[2]))
print("RESULT " + json.dumps(out))
"""


def _train_process(config: dict, inputs: dict, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, json.dumps(config), json.dumps(inputs)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_first_epoch(client, experiment: str, key: str, process: subprocess.Popen, timeout: float = 180):
    """The run's id once epoch 1 is logged and its checkpoint is on disk."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, f"training ended before it could be killed:\n{process.stdout.read()}"
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            runs = client.search_runs([found.experiment_id], f"tags.`{tracking.TAG_RUN_KEY}` = '{key}'")
            if runs:
                run_id = runs[0].info.run_id
                steps = [m.step for m in client.get_metric_history(run_id, "loss")]
                if steps and (checkpoint_dir(run_id) / "training_metadata.json").exists():
                    return run_id
        time.sleep(0.1)
    raise AssertionError("no completed epoch within the timeout")


def test_killed_training_resumes_the_same_run_without_gaps_or_duplicates(store):
    # Small batches make each epoch take a few seconds, so the kill lands mid-training.
    typed = FAMILY.config("quick", {"mlp.hidden_units": "64", "train.batch_size": 8, "train.epochs": 4,
                                    "train.early_stopping_patience": 0})
    config = to_dict(typed)
    data = prepare_data(FAMILY, config, {})
    inputs = {**data, "model": "mlp", "run_key": "zoo_classifiers/kill-test"}
    client = store.client()
    env = store.env()

    first = _train_process(config, inputs, env)
    try:
        run_id = _wait_for_first_epoch(client, FAMILY.experiment_name, "zoo_classifiers/kill-test/mlp", first)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    assert client.get_run(run_id).info.status == "RUNNING"  # a killed worker cannot end its run

    second = _train_process(config, inputs, env)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output
    result = json.loads(output.rsplit("RESULT ", 1)[1].splitlines()[0])

    assert result["run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert TAG_RESUMED in run.data.tags
    assert "resuming run" in output
    assert "mlp epoch 1/4" not in output  # it started from the checkpoint, not from scratch
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert steps == [1, 2, 3, 4], (key, steps)

    assert result["cached"] is False and result["metrics"]["train_seconds"] > 0
    assert result["metrics"]["epochs_trained"] == 4  # both attempts together, not the last one's epochs
    # A retry after the resumed run finished reuses it, reporting the metrics it holds.
    reused = classifiers.train(config, inputs)
    assert {k: reused[k] for k in ("model", "run_id", "model_uri", "cached")} == \
        {k: result[k] for k in ("model", "run_id", "model_uri", "cached")}
    assert reused["metrics"] == result["metrics"]  # the same metrics, fresh or reused
    assert len(client.search_runs([run.info.experiment_id])) == 1

    register_inputs = {"train": {"mlp": result}, "evaluate": {"metrics": {"mlp": {"test_accuracy": 0.5}}}}
    decision = classifiers.register(config, register_inputs)
    again = classifiers.register(config, {**register_inputs, "train": {"mlp": reused}})
    assert decision["versions"]["mlp"]["version"] == again["versions"]["mlp"]["version"]
    assert len(client.search_model_versions("name = 'nnzoo-classifiers-mlp'")) == 1


def test_second_identical_run_with_cache_trains_nothing(store):
    config = to_dict(FAMILY.config("smoke", {"cache": "true"}))
    first = run_pipeline(FAMILY, config)
    client = store.client()
    experiment_id = client.get_experiment_by_name(FAMILY.experiment_name).experiment_id
    runs_before = len(client.search_runs([experiment_id]))

    second = run_pipeline(FAMILY, config)

    assert set(second["train"]) == set(MODELS)
    assert {m: out["run_id"] for m, out in second["train"].items()} == \
        {m: out["run_id"] for m, out in first["train"].items()}
    assert all(out["cached"] for out in second["train"].values())
    assert not any(out["cached"] for out in first["train"].values())
    assert second["evaluate"] == first["evaluate"]
    assert len(client.search_runs([experiment_id])) == runs_before
    for model, out in second["train"].items():
        assert TAG_CACHE_HIT in client.get_run(out["run_id"]).data.tags, model
        assert out["metrics"]["test_accuracy"] == first["evaluate"]["metrics"][model]["test_accuracy"]
        assert len(client.search_model_versions(f"name = 'nnzoo-classifiers-{model}'")) == 1


def _train_mlp(config: dict) -> dict:
    data = prepare_data(FAMILY, config, {})
    return classifiers.train(config, {**data, "model": "mlp", "run_key": None})


def test_cache_misses_when_the_config_changes(store):
    first = _train_mlp(to_dict(FAMILY.config("smoke", {"cache": "true"})))
    second = _train_mlp(to_dict(FAMILY.config("smoke", {"cache": "true", "seed": "1"})))
    assert first["run_id"] != second["run_id"] and not second["cached"]


def test_without_cache_an_identical_run_trains_again(store):
    config = to_dict(FAMILY.config("smoke"))
    first, second = _train_mlp(config), _train_mlp(config)
    assert first["run_id"] != second["run_id"] and not second["cached"]
    # finished trainings leave no checkpoint behind
    assert not Path(os.environ["NNZOO_HOME"]).joinpath("work", "checkpoints", second["run_id"]).exists()
