"""An RBM layer task killed mid-training resumes its MLflow run when it is retried.

The layer is pretrained in a child process, SIGKILLed after its first completed epoch,
and run again with the same inputs (those the DAG's ``pretrain_rbm_layer_1`` task gets),
as an Airflow retry would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from pipelines import kit, tracking
from pipelines.config import to_dict
from pipelines.configs.unsupervised import FAMILY
from pipelines.kit import TAG_MODEL_URI, TAG_RESUMED, checkpoint_dir
from pipelines.runner import step_inputs
from pipelines.stages import unsupervised
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

RUN_KEY = "zoo_unsupervised/kill-test"
LAYER_KEY = f"{RUN_KEY}/rbm_layer_1"
EPOCHS = 6

PRETRAIN_SCRIPT = """
import json, sys
from pipelines.stages import unsupervised
out = unsupervised.pretrain_rbm_layer(json.loads(sys.argv[1]), json.loads(sys.argv[2]))
print("RESULT " + json.dumps(out))
"""


def _pretrain_process(config: dict, inputs: dict, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PRETRAIN_SCRIPT, json.dumps(config), json.dumps(inputs)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_first_epoch(client, experiment_id: str, process: subprocess.Popen, timeout: float = 120) -> str:
    """The layer run's id once epoch 1 is logged and its checkpoint is on disk."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, f"pretraining ended before it could be killed:\n{process.stdout.read()}"
        runs = client.search_runs([experiment_id], f"tags.`{tracking.TAG_RUN_KEY}` = '{LAYER_KEY}'")
        if runs:
            run_id = runs[0].info.run_id
            if client.get_metric_history(run_id, "loss") and (
                    checkpoint_dir(run_id) / "training_metadata.json").exists():
                return run_id
        time.sleep(0.1)
    raise AssertionError("no completed epoch within the timeout")


def test_killed_rbm_layer_resumes_the_same_run_and_registers_once(store):
    # 1,000 quick-profile images; tiny batches and CD-5 make an epoch take most of a
    # second, so the kill lands between the first epoch and the end. One autoencoder
    # epoch: register needs an autoencoder next to the layer.
    config = to_dict(FAMILY.config("quick", {"data.max_examples": 1000, "rbm.layers": "500", "rbm.batch_size": 4,
                                             "rbm.k": 5, "rbm.epochs": EPOCHS, "rbm.gibbs_steps": 10,
                                             "train.epochs": 1}))
    data = kit.prepare_data(FAMILY, config, {"run_key": RUN_KEY})
    # Layer 1 is the first of the chain: nothing below it.
    inputs = step_inputs(FAMILY.pipeline.step("pretrain_rbm_layer"), data, RUN_KEY, {"pretrain_rbm_layer": None},
                         item=1)
    assert inputs["layer"] == 1 and inputs["pretrain_rbm_layer"] is None
    client = store.client()
    experiment_id = client.get_experiment_by_name(FAMILY.experiment_name).experiment_id
    env = store.env()

    first = _pretrain_process(config, inputs, env)
    try:
        run_id = _wait_for_first_epoch(client, experiment_id, first)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    killed = client.get_run(run_id)
    assert killed.info.status == "RUNNING"  # a killed worker cannot end its run
    assert TAG_MODEL_URI not in killed.data.tags
    logged_before_kill = max(m.step for m in client.get_metric_history(run_id, "loss"))
    assert 1 <= logged_before_kill < EPOCHS

    second = _pretrain_process(config, inputs, env)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output
    result = json.loads(output.rsplit("RESULT ", 1)[1].splitlines()[0])

    [layer] = result["stack"]
    assert layer["layer"] == 1 and layer["run_id"] == run_id
    assert f"resuming run {run_id}" in output
    assert f"epoch 1/{EPOCHS}" not in output  # it went on from the checkpoint, not from scratch
    assert f"epoch {EPOCHS}/{EPOCHS}" in output
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_RESUMED].startswith("after ")
    assert run.data.tags[TAG_MODEL_URI] == layer["model_uri"]
    assert run.data.tags["mlflow.parentRunId"] == data["parent_run_id"]
    assert "nnzoo.param_conflicts" not in run.data.tags
    for key in ("loss", "pseudo_likelihood", "val_loss", "val_pseudo_likelihood"):
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert steps == list(range(1, EPOCHS + 1)), (key, steps)
    keyed = client.search_runs([experiment_id], f"tags.`{tracking.TAG_RUN_KEY}` = '{LAYER_KEY}'")
    assert [r.info.run_id for r in keyed] == [run_id]  # no second run for the retry
    assert {"plots/filters.png", "plots/gibbs_samples.png"} <= set(tracking.list_artifacts(run_id, "plots"))
    assert not checkpoint_dir(run_id).joinpath("training_metadata.json").exists()

    # register: the autoencoder (trained and evaluated here), the best DBN classifier of
    # the fine-tunings (a random-init one gives none) and each RBM layer; once per run.
    task_inputs = {**data, "run_key": RUN_KEY}
    autoencoder = unsupervised.train_autoencoder(config, task_inputs)
    evaluation = unsupervised.evaluate_autoencoder(config, {**task_inputs, "train_autoencoder": autoencoder})
    register_inputs = {**task_inputs, "train_autoencoder": autoencoder, "evaluate_autoencoder": evaluation,
                       "pretrain_rbm_layer": result, "finetune": [
                           {"fraction": 1.0, "init": "random", "seed": 0, "test_accuracy": 0.5, "model_uri": ""}]}
    decision = unsupervised.register(config, register_inputs)
    again = unsupervised.register(config, register_inputs)
    assert set(decision["versions"]) == {"autoencoder", "rbm-layer-1"}
    for model, run_of_model in (("rbm-layer-1", run_id), ("autoencoder", autoencoder["run_id"])):
        assert again["versions"][model]["version"] == decision["versions"][model]["version"], model
        versions = client.search_model_versions(f"name = 'nnzoo-unsupervised-{model}'")
        assert [(v.run_id, str(v.version)) for v in versions] == [
            (run_of_model, str(decision["versions"][model]["version"]))], model
    [layer_version] = client.search_model_versions("name = 'nnzoo-unsupervised-rbm-layer-1'")
    assert float(layer_version.tags["nnzoo.val_pseudo_likelihood"]) == pytest.approx(
        run.data.metrics["val_pseudo_likelihood"])
