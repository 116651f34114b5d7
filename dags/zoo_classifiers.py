"""Classifiers: an MLP and a CNN on handwritten digits, tracked in MLflow.

prepare_data -> train_mlp, train_cnn (in parallel) -> evaluate -> register.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from pipelines.params import form_specs

FAMILY = "classifiers"
TRAINING_QUEUE = os.environ.get("NNZOO_TRAINING_QUEUE", "default")
TRAINING_POOL = os.environ.get("NNZOO_TRAINING_POOL", "nnzoo_training")


def _config() -> dict:
    from pipelines.params import config_from_params

    return config_from_params(FAMILY, get_current_context()["params"])


def _run_key() -> str:
    context = get_current_context()
    return f"{context['dag'].dag_id}/{context['run_id']}"


@dag(
    dag_id="zoo_classifiers",
    description="MLP vs CNN digit classifiers: train, evaluate, register, promote",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["nnzoo", "classifiers"],
    params={name: Param(**spec) for name, spec in form_specs(FAMILY).items()},
    doc_md=__doc__,
)
def zoo_classifiers():
    @task
    def prepare_data() -> dict:
        """### Prepare data
        Loads the dataset, makes the deterministic train/val/test split and stores it
        under the data dir. Returns its URI and content fingerprint."""
        from pipelines.stages import classifiers

        return classifiers.prepare_data(_config(), {})

    def train_task(model: str):
        @task(task_id=f"train_{model}", queue=TRAINING_QUEUE, pool=TRAINING_POOL, retries=1)
        def train(data: dict) -> dict:
            """### Train
            Trains the model with per-epoch metrics in MLflow. Returns the MLflow run id
            and model URI (never the model itself)."""
            from pipelines.stages import classifiers

            return classifiers.train(_config(), {**data, "model": model, "run_key": _run_key()})

        return train

    @task
    def evaluate(data: dict, mlp: dict, cnn: dict) -> dict:
        """### Evaluate
        Test accuracy, confusion matrix and misclassified examples for each model."""
        from pipelines.stages import classifiers

        return {"runs": {"mlp": mlp, "cnn": cnn},
                **classifiers.evaluate(_config(), {**data, "runs": {"mlp": mlp, "cnn": cnn}})}

    @task
    def register(evaluation: dict) -> dict:
        """### Register
        Registers each model once per DAG run; `champion` moves only if the test
        accuracy is not worse than the current champion's."""
        from pipelines.stages import classifiers

        return classifiers.register(_config(), evaluation)

    data = prepare_data()
    register(evaluate(data, train_task("mlp")(data), train_task("cnn")(data)))


zoo_classifiers()
