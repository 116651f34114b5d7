"""Classifiers: an MLP and a CNN on handwritten digits, tracked in MLflow.

`prepare_data` → `train_mlp` ‖ `train_cnn` → `evaluate` → `register`

* **Trigger form**: profile and the main knobs; empty fields take the profile's defaults.
* **Retraining**: set `NNZOO_SCHEDULE_CLASSIFIERS` (cron) for a schedule; new dataset
  content announced by any DAG's `prepare_data` retrains it through `nnzoo_retrain`.
* **Training tasks** run on queue `NNZOO_TRAINING_QUEUE` in pool `NNZOO_TRAINING_POOL`;
  a retry resumes the same MLflow run from its last completed epoch.
"""

from __future__ import annotations

from airflow.sdk import AssetAlias, dag, task

from pipelines import orchestration
from pipelines.orchestration import task_config, task_run_key

FAMILY = "classifiers"


@dag(
    schedule=orchestration.schedule(FAMILY),
    **orchestration.family_dag_kwargs(
        FAMILY, "MLP vs CNN digit classifiers: train, evaluate, register, promote", __doc__),
)
def zoo_classifiers():
    @task(outlets=[AssetAlias(orchestration.DATASETS_ALIAS)])
    def prepare_data(*, outlet_events=None) -> dict:
        """### Prepare data
        Loads the dataset, makes the deterministic train/val/test split and stores it
        under the data dir. Returns its URI and content fingerprint; new content is
        announced on the dataset's Asset."""
        from pipelines.stages import classifiers

        data = classifiers.prepare_data(task_config(FAMILY), {})
        orchestration.announce_dataset(outlet_events, data)
        return data

    def train_task(model: str):
        @task(task_id=f"train_{model}", **orchestration.training_task_kwargs())
        def train(data: dict) -> dict:
            """### Train
            Trains the model with per-epoch metrics in MLflow. Returns the MLflow run id
            and model URI (never the model itself). A retry resumes from the last
            completed epoch in the same MLflow run."""
            from pipelines.stages import classifiers

            return classifiers.train(task_config(FAMILY), {**data, "model": model, "run_key": task_run_key()})

        return train

    @task(retries=1)
    def evaluate(data: dict, mlp: dict, cnn: dict) -> dict:
        """### Evaluate
        Test accuracy, confusion matrix and misclassified examples for each model."""
        from pipelines.stages import classifiers

        runs = {"mlp": mlp, "cnn": cnn}
        return {"runs": runs, **classifiers.evaluate(task_config(FAMILY), {**data, "runs": runs})}

    @task(retries=1)
    def register(evaluation: dict) -> dict:
        """### Register
        Registers each model once per DAG run as `challenger`; it becomes `champion`
        only if its test accuracy is not worse than the champion's beyond the tolerance."""
        from pipelines.stages import classifiers

        return classifiers.register(task_config(FAMILY), evaluation)

    data = prepare_data()
    register(evaluate(data, train_task("mlp")(data), train_task("cnn")(data)))


zoo_classifiers()
