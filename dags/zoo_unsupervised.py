"""Unsupervised: autoencoder vs PCA; RBMs stacked into a DBN, fine-tuned with few labels.

```
prepare_data ─┬─ train_autoencoder ── evaluate_autoencoder ───────────────────────────┐
              ├─ pretrain_rbm_layer_1 ── … ── _4 ── plan_finetuning ── finetune [mapped] ── compare ── register ── finish
              └─ evaluate_rbm_features ────────────────────────────────────────────────┘
```

* **RBM layers**: one task per layer; the `layers` param (e.g. `500,500`) says how many
  are used (up to 4) and their sizes. Layer tasks beyond it pass the stack on and do
  nothing. Each layer trains on the hidden probabilities of the layers below, loaded
  from their MLflow model URIs.
* **Fine-tuning**: mapped over `label_fractions` × init (`dbn`, `random`) × `seeds`.
* **MLflow**: one parent run per DAG run in experiment `nnzoo-unsupervised`, every
  training nested under it; `compare` puts the table and the accuracy-vs-labels plot
  on the parent; `finish` ends it, FAILED with the failed steps named if any failed.
* **Training tasks** run on queue `NNZOO_TRAINING_QUEUE` in pool `NNZOO_TRAINING_POOL`;
  a retry resumes the same MLflow run from its last completed epoch.
"""

from __future__ import annotations

from airflow.sdk import AssetAlias, dag, get_current_context, task

from pipelines import orchestration
from pipelines.configs.unsupervised import MAX_RBM_LAYERS
from pipelines.orchestration import task_config, task_run_key

FAMILY = "unsupervised"


def _training(**kwargs):
    return task(**orchestration.training_task_kwargs(), **kwargs)


@dag(
    schedule=orchestration.schedule(FAMILY),
    **orchestration.family_dag_kwargs(
        FAMILY, "Autoencoder vs PCA; RBM/DBN greedy pretraining vs random init with few labels", __doc__),
)
def zoo_unsupervised():
    @task(outlets=[AssetAlias(orchestration.DATASETS_ALIAS)])
    def prepare_data(*, outlet_events=None) -> dict:
        """### Prepare data
        Deterministic split stored under the data dir; opens the MLflow parent run."""
        from pipelines.stages import unsupervised

        data = unsupervised.prepare_data(task_config(FAMILY), {"run_key": task_run_key()})
        orchestration.announce_dataset(outlet_events, data)
        return data

    @_training()
    def train_autoencoder(data: dict) -> dict:
        """### Train the autoencoder
        Image → bottleneck code → image, trained on reconstruction error."""
        from pipelines.stages import unsupervised

        return unsupervised.train_autoencoder(task_config(FAMILY), {**data, "run_key": task_run_key()})

    @task(retries=1)
    def evaluate_autoencoder(data: dict, autoencoder: dict) -> dict:
        """### Evaluate the autoencoder
        Test MSE per pixel against PCA with as many components; reconstructions; code map."""
        from pipelines.stages import unsupervised

        result = unsupervised.evaluate_autoencoder(task_config(FAMILY), {**data, "autoencoder": autoencoder})
        return {"autoencoder": autoencoder, **result}

    def pretrain_layer(layer: int):
        @_training(task_id=f"pretrain_rbm_layer_{layer}")
        def pretrain(data: dict, below: dict | None = None) -> dict:
            """### Pretrain one RBM layer
            CD-k (or PCD) on the hidden probabilities of the layers below; passes the
            stack of layer model URIs on. Layers beyond the `layers` param do nothing."""
            from pipelines.stages import unsupervised

            stack = (below or {}).get("stack", [])
            return unsupervised.pretrain_rbm_layer(
                task_config(FAMILY), {**data, "layer": layer, "stack": stack, "run_key": task_run_key()})

        return pretrain

    @_training()
    def evaluate_rbm_features(data: dict) -> dict:
        """### RBM features + logistic regression
        scikit-learn's example protocol on nudged digits; logs the accuracy."""
        from pipelines.stages import unsupervised

        return unsupervised.evaluate_rbm_features(task_config(FAMILY), {**data, "run_key": task_run_key()})

    @task
    def plan_finetuning(data: dict, pretrained: dict) -> list[dict]:
        """### Plan fine-tuning
        One job per label fraction × init × seed."""
        from pipelines.stages import unsupervised

        jobs = unsupervised.plan_finetuning(task_config(FAMILY), pretrained)
        return [{**data, "stack": pretrained["stack"], **job} for job in jobs]

    @_training(map_index_template="{{ finetune_label }}")
    def finetune(job: dict) -> dict:
        """### Fine-tune
        The unrolled DBN or the same net from random weights, on a share of the labels."""
        from pipelines.stages import unsupervised

        get_current_context()["finetune_label"] = f"{job['init']} {job['fraction']:.0%} seed {job['seed']}"
        return unsupervised.finetune(task_config(FAMILY), {**job, "run_key": task_run_key()})

    @task(retries=1)
    def compare(data: dict, results: list[dict], autoencoder: dict, features: dict) -> dict:
        """### Compare
        Mean and spread of test accuracy by label share and init; table and plot on the parent run."""
        from pipelines.stages import unsupervised

        inputs = {**data, "results": list(results), "autoencoder_metrics": autoencoder["metrics"],
                  "rbm_features_metrics": features.get("metrics", {})}
        comparison = unsupervised.compare(task_config(FAMILY), inputs)
        return {"rows": comparison["rows"], "results": list(results), "autoencoder": autoencoder["autoencoder"],
                "autoencoder_metrics": autoencoder["metrics"]}

    @task(retries=1)
    def register(comparison: dict, pretrained: dict) -> dict:
        """### Register
        Autoencoder, best DBN classifier and each RBM layer, once per DAG run;
        `champion` moves only when the metric does not regress."""
        from pipelines.stages import unsupervised

        return unsupervised.register(task_config(FAMILY), {**comparison, "stack": pretrained["stack"]})

    @task(trigger_rule="all_done")
    def finish(data: dict | None, registered: dict | None) -> dict:
        """### Finish
        Ends the MLflow parent run: FINISHED, or FAILED naming the failed steps (and
        then this task fails too, so the DAG run shows it)."""
        from pipelines.stages import unsupervised

        if not data or not data.get("parent_run_id"):
            raise RuntimeError("prepare_data did not complete: no parent run to close")
        outcome = unsupervised.finish(task_config(FAMILY), {
            "parent_run_id": data["parent_run_id"],
            "registered": (registered or {}).get("versions")})
        if outcome["status"] != "FINISHED":
            raise RuntimeError(f"pipeline failed: {outcome['reason']}")
        return outcome

    data = prepare_data()
    autoencoder = evaluate_autoencoder(data, train_autoencoder(data))
    stack = None
    for layer in range(1, MAX_RBM_LAYERS + 1):
        stack = pretrain_layer(layer)(data, stack)
    features = evaluate_rbm_features(data)
    results = finetune.expand(job=plan_finetuning(data, stack))
    registered = register(compare(data, results, autoencoder, features), stack)
    finish(data, registered)


zoo_unsupervised()
