"""Classifiers family: prepare_data -> train (mlp, cnn) -> evaluate -> register."""

from __future__ import annotations

import time
from typing import Any

from pipelines import tracking
from pipelines.config import to_dict
from pipelines.stages import register_runner
from pipelines.stages.common import (
    TAG_EVALUATED_ON,
    TAG_MODEL_URI,
    checkpoint_dir,
    load_config,
    plan_training,
    register_and_promote,
    run_params,
    training_run,
)
from pipelines.stages.common import prepare_data as _prepare_common

FAMILY = "classifiers"
MODELS = ("mlp", "cnn")
METRIC = "test_accuracy"


def prepare_data(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Split the image dataset and store it; returns ``data_uri`` and its fingerprint."""
    return _prepare_common(FAMILY, config, inputs)


def _builder_kwargs(typed: Any, model: str) -> dict[str, Any]:
    section = to_dict(getattr(typed, model))
    return {key: tuple(value) if isinstance(value, list) else value for key, value in section.items()}


def train(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Train ``inputs["model"]`` (``mlp`` or ``cnn``) on ``inputs["data_uri"]``.

    Logs params, per-epoch curves, the training-curve plot, the CNN's first-layer
    filters and the model with its signature. Returns ``run_id``, ``model_uri`` and
    ``cached``. A retry of the same orchestrated task reuses its finished run or resumes
    its unfinished one from the last completed epoch; with ``cache`` an identical
    earlier run is reused (see :func:`pipelines.stages.common.plan_training`).
    """
    from models import build_model
    from pipelines import plots
    from pipelines import train as trainer
    from pipelines.data.prepared import load_prepared, normalize_images, tf_dataset

    fam, typed = load_config(FAMILY, config)
    model_name = inputs.get("model")
    if model_name not in MODELS:
        raise ValueError(f"model={model_name!r}: expected one of {', '.join(MODELS)}")
    data = load_prepared(inputs["data_uri"])
    plan = plan_training(fam, typed, model_name, inputs, data.fingerprint)
    if plan.reuse is not None:
        return plan.reuse
    tags = {tracking.TAG_FAMILY: FAMILY, tracking.TAG_MODEL: model_name, tracking.TAG_PROFILE: typed.profile,
            tracking.TAG_STAGE: "train"}
    with training_run(fam, plan, f"{model_name}-{typed.profile}", tags) as run:
        trainer.configure_devices()
        trainer.configure_precision(typed.train.mixed_precision)
        trainer.set_seed(typed.train.seed)
        train_x, train_y = data.split("train")
        val_x, val_y = data.split("val")
        with trainer.distribution_scope(typed.train.distribute):
            model = build_model(model_name, input_shape=data.image_shape, num_classes=data.num_classes,
                                **_builder_kwargs(typed, model_name))
            run.log_params(run_params(typed, data, model=model_name, parameters=model.count_params()))
            started = time.perf_counter()
            history = trainer.fit(
                model,
                tf_dataset(train_x, train_y, typed.train.batch_size, shuffle=True, seed=typed.train.seed),
                tf_dataset(val_x, val_y, 512, shuffle=False) if len(val_y) else None,
                typed.train,
                checkpoint_dir=checkpoint_dir(run.run_id),
                callbacks=[tracking.keras_epoch_logger(run.run_id, skip_through=plan.logged_epochs)],
                progress_label=model_name,
            )
        seconds = time.perf_counter() - started
        epochs = len(history.history["loss"])
        run.log_metrics({"train_seconds": seconds, "epochs_trained": epochs,
                         "examples_per_second": epochs * len(train_y) / max(seconds, 1e-9)})
        tracking.log_figure(run.run_id, plots.training_curves(history.history, f"{model_name} on {data.name}"),
                            "plots/training_curves.png")
        if model_name == "cnn":
            kernel = model.get_layer("conv_1_1").get_weights()[0]
            tracking.log_figure(run.run_id, plots.conv_filters(kernel, "CNN first-layer filters"),
                                "plots/first_layer_filters.png")
        summary: list[str] = []
        model.summary(print_fn=summary.append)
        tracking.log_bytes(run.run_id, "\n".join(summary).encode(), "model_summary.txt")
        model_uri = tracking.log_keras_model(run.run_id, model, normalize_images(train_x[:4]))
        run.set_tags({TAG_MODEL_URI: model_uri})
    return {"model": model_name, "run_id": run.run_id, "model_uri": model_uri, "cached": False}


def evaluate(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Score every trained model on the held-out test split, in its own run.

    ``inputs``: ``data_uri`` and ``runs`` (model -> output of :func:`train`). Logs
    ``test_accuracy`` / ``test_loss``, the confusion matrix and the misclassified
    examples. Returns ``metrics`` (model -> {metric: value}).
    """
    import numpy as np

    from pipelines import plots
    from pipelines.data.prepared import load_prepared, normalize_images

    fam, typed = load_config(FAMILY, config)
    data = load_prepared(inputs["data_uri"])
    test_x, test_y = data.split("test")
    images = normalize_images(test_x)
    metrics: dict[str, dict[str, float]] = {}
    for model_name, trained in sorted(inputs["runs"].items()):
        earlier = tracking.get_run(trained["run_id"])
        if earlier.data.tags.get(TAG_EVALUATED_ON) == data.fingerprint and METRIC in earlier.data.metrics:
            # A retry, or a cached run: its test metrics for this data are already logged.
            metrics[model_name] = {key: earlier.data.metrics[key] for key in (METRIC, "test_loss")
                                   if key in earlier.data.metrics}
            print(f"[nnzoo] {model_name}: already evaluated on {data.fingerprint}: "
                  f"{METRIC}={metrics[model_name][METRIC]:.4f}")
            continue
        with tracking.run(fam.experiment_name, model_name, resume_run_id=trained["run_id"]) as run:
            model = tracking.load_keras_model(trained["model_uri"])
            probabilities = model.predict(images, batch_size=512, verbose=0)
            predicted = probabilities.argmax(axis=1)
            picked = probabilities[np.arange(len(test_y)), test_y]
            values = {
                METRIC: float((predicted == test_y).mean()),
                "test_loss": float(-np.log(np.clip(picked, 1e-7, 1.0)).mean()),
            }
            run.log_metrics(values)
            matrix = np.zeros((data.num_classes, data.num_classes), dtype=np.int64)
            np.add.at(matrix, (test_y, predicted), 1)
            tracking.log_figure(run.run_id, plots.confusion_matrix(
                matrix, data.class_names, f"{model_name}: test accuracy {values[METRIC]:.4f}"),
                "plots/confusion_matrix.png")
            tracking.log_dict(run.run_id, {"class_names": list(data.class_names), "matrix": matrix.tolist()},
                              "evaluation/confusion_matrix.json")
            wrong = np.flatnonzero(predicted != test_y)[:40]
            if len(wrong):
                titles = [f"{data.class_names[test_y[i]]}→{data.class_names[predicted[i]]}" for i in wrong]
                tracking.log_figure(run.run_id, plots.image_grid(
                    test_x[wrong], titles, f"{model_name}: misclassified (true→predicted)"),
                    "plots/misclassified.png")
            run.set_tags({TAG_EVALUATED_ON: data.fingerprint})
            metrics[model_name] = values
            print(f"[nnzoo] {model_name}: {METRIC}={values[METRIC]:.4f} test_loss={values['test_loss']:.4f}")
    return {"metrics": metrics}


def register(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Register each model (once per run) and move ``champion`` only on no regression.

    ``inputs``: ``runs`` (from :func:`train`) and ``metrics`` (from :func:`evaluate`).
    """
    fam, typed = load_config(FAMILY, config)
    decisions = {}
    for model_name, trained in sorted(inputs["runs"].items()):
        value = inputs["metrics"][model_name][METRIC]
        decisions[model_name] = register_and_promote(
            fam, model_name, trained["run_id"], trained["model_uri"], METRIC, value,
            tolerance=typed.promotion_tolerance)
        print(f"[nnzoo] registered {decisions[model_name]['name']} v{decisions[model_name]['version']}: "
              f"{decisions[model_name]['reason']}")
    return {"versions": decisions}


@register_runner(FAMILY)
def run(config: dict[str, Any]) -> dict[str, Any]:
    """All stages in-process, as the DAG runs them."""
    data = prepare_data(config, {})
    runs = {model: train(config, {**data, "model": model}) for model in MODELS}
    evaluation = evaluate(config, {**data, "runs": runs})
    registered = register(config, {"runs": runs, "metrics": evaluation["metrics"]})
    return {
        "runs": {model: trained["run_id"] for model, trained in runs.items()},
        "metrics": evaluation["metrics"],
        "versions": {model: decision["version"] for model, decision in registered["versions"].items()},
        "data": data,
    }
