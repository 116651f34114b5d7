"""Classifiers family: train (mlp, cnn) -> evaluate -> register; the steps are declared
in :mod:`pipelines.configs.classifiers`."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines import tracking
from pipelines.configs.classifiers import FAMILY, MODELS
from pipelines.kit import StepContext, Training, builder_kwargs, say, step_of

METRIC = "test_accuracy"


@step_of(FAMILY)
def train(step: StepContext) -> dict[str, Any]:
    """Train ``step["model"]`` (``mlp`` or ``cnn``) on the prepared data; the CNN's run
    also gets its first-layer filters. See :func:`pipelines.kit.run_training` for reuse,
    resume and what every run logs."""
    from models import build_model
    from pipelines import plots

    typed, data, name = step.config, step.data, step.get("model")
    if name not in MODELS:
        raise ValueError(f"model={name!r}: expected one of {', '.join(MODELS)}")
    (train_x, train_y), (val_x, val_y) = data.split("train"), data.split("val")

    def filters(run: Any, model: Any, history: Any) -> None:
        if name == "cnn":
            tracking.log_figure(run.run_id, plots.conv_filters(model.get_layer("conv_1_1").get_weights()[0],
                                                               "CNN first-layer filters"),
                                "plots/first_layer_filters.png")

    return step.train(Training(
        name, data=data, run_name=f"{name}-{typed.profile_label}", examples=len(train_y), after=filters,
        build=lambda: build_model(name, input_shape=data.image_shape, num_classes=data.num_classes,
                                  **builder_kwargs(getattr(typed, name))),
        arrays=((train_x, train_y), (val_x, val_y))))


def dry_run_models(typed: Any, examples: dict[str, int]) -> list[Any]:
    """What :func:`train` trains, for ``nnzoo run classifiers --dry-run``."""
    from models import build_model
    from pipelines.data.registry import get_dataset
    from pipelines.dryrun import ModelPlan, steps, training_examples

    dataset = get_dataset(typed.data.dataset)
    train_examples = training_examples(typed.data, examples)
    total_steps = steps(train_examples, typed.train.batch_size, typed.train.epochs)
    classes = 10
    return [ModelPlan(name, lambda name=name: build_model(name, input_shape=dataset.shape, num_classes=classes,
                                                          **builder_kwargs(getattr(typed, name))),
                      [(dataset.shape, "float32")], typed.train.batch_size, total_steps,
                      note=f"{train_examples:,} training images x {typed.train.epochs} epochs (early stopping may end "
                           "it sooner)") for name in MODELS]


@step_of(FAMILY)
def evaluate(step: StepContext) -> dict[str, Any]:
    """Score every trained model (``step["train"]``) on the held-out test split, in its
    own run: ``test_accuracy`` / ``test_loss``, the confusion matrix and the
    misclassified examples. Returns ``{"metrics": {model: {...}}}``."""
    from pipelines import plots
    from pipelines.train import classification_scores

    data = step.data
    test_x, test_y = data.split("test")
    metrics: dict[str, dict[str, float]] = {}
    for name, trained in sorted(step["train"].items()):

        def measure(run: Any, name: str = name, trained: dict = trained) -> dict[str, float]:
            scores, predicted = classification_scores(tracking.load_keras_model(trained["model_uri"]), test_x, test_y)
            values = {METRIC: scores["accuracy"], "test_loss": scores["loss"]}
            matrix = np.zeros((data.num_classes, data.num_classes), dtype=np.int64)
            np.add.at(matrix, (test_y, predicted), 1)
            tracking.log_figure(run.run_id, plots.confusion_matrix(
                matrix, data.class_names, f"{name}: test accuracy {values[METRIC]:.4f}"),
                "plots/confusion_matrix.png")
            tracking.log_dict(run.run_id, {"class_names": list(data.class_names), "matrix": matrix.tolist()},
                              "evaluation/confusion_matrix.json")
            wrong = np.flatnonzero(predicted != test_y)[:40]
            if len(wrong):
                titles = [f"{data.class_names[test_y[i]]}→{data.class_names[predicted[i]]}" for i in wrong]
                tracking.log_figure(run.run_id, plots.image_grid(
                    test_x[wrong], titles, f"{name}: misclassified (true→predicted)"), "plots/misclassified.png")
            return values

        values = metrics[name] = step.evaluate_into(trained["run_id"], (METRIC, "test_loss"), measure)
        say(f"{name}: {METRIC}={values[METRIC]:.4f} test_loss={values['test_loss']:.4f}")
    return {"metrics": metrics}


@step_of(FAMILY)
def register(step: StepContext) -> dict[str, Any]:
    """Register each model (once per run) and move ``champion`` only on no regression."""
    scores = step["evaluate"]["metrics"]
    return {"versions": {name: step.register(name, trained, METRIC, scores[name][METRIC])
                         for name, trained in sorted(step["train"].items())}}
