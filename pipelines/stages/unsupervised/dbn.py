"""RBMs pretrained greedily into a DBN (claims C5, C6): one step per RBM layer, then
fine-tuning of the unrolled stack against the same net from random weights with a
share of the labels."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipelines import tracking
from pipelines.configs.unsupervised import FAMILY, INITS
from pipelines.data.prepared import batches
from pipelines.kit import StepContext, Training, say, step_of
from pipelines.stages.unsupervised.autoencoder import pixels

EVAL_POINTS = 20
"""A fine-tuning's steps are cut into this many "epochs", each ending with validation (and
a checkpoint), but no "epoch" has fewer than ``MIN_EVAL_STEPS`` steps."""
MIN_EVAL_STEPS = 10


def visible(images: np.ndarray, mode: str) -> np.ndarray:
    """First-layer input: grey levels as probabilities, or binarised at 0.5."""
    values = pixels(images)
    return (values > 0.5).astype(np.float32) if mode == "binary" else values


def _load_stack(stack: list[dict[str, Any]]) -> list[Any]:
    import models.rbm  # noqa: F401 - registers the RBM class for deserialisation

    return [tracking.load_keras_model(layer["model_uri"]) for layer in stack]


@step_of(FAMILY)
def pretrain_rbm_layer(step: StepContext) -> dict[str, Any]:
    """Train RBM layer ``step["layer"]`` (1-based) on the hidden probabilities of the
    layers below (``step["pretrain_rbm_layer"]["stack"]``, their model URIs), with CD-k
    or PCD. Returns ``{"stack": stack + [this layer]}``; a layer beyond ``rbm.layers``
    passes the stack on untouched (the DAG has a fixed number of layer tasks). Logs the
    filters and, for the first layer, Gibbs samples and ``gibbs_chain_disagreement`` (C5)
    by Gibbs step."""
    from models.dbn import propagate
    from models.rbm import RBM
    from pipelines import plots

    typed = step.config
    layer = int(step["layer"])
    stack = list((step.get("pretrain_rbm_layer") or {}).get("stack") or [])
    sizes, rbm_config = typed.rbm.layers, typed.rbm
    if layer > len(sizes):
        say(f"rbm layer {layer}: not in this run (rbm.layers={','.join(map(str, sizes))}); nothing to do")
        return {"stack": stack}
    if len(stack) != layer - 1:
        raise ValueError(f"rbm layer {layer} needs the {layer - 1} layer(s) below it; got {len(stack)}")
    data = step.data
    below = _load_stack(stack)
    train_v = propagate(below, visible(data.split("train")[0], rbm_config.visible))
    val_v = propagate(below, visible(data.split("val")[0], rbm_config.visible))
    n_visible, n_hidden, seed = train_v.shape[1], sizes[layer - 1], typed.train.seed + layer

    def pictures(run: Any, rbm: Any, history: Any) -> None:
        # Filters: each hidden unit's weights seen from the pixels (through the layers below).
        projection = np.asarray(rbm.kernel)
        for lower in reversed(below):
            projection = np.asarray(lower.kernel) @ projection
        shown = min(n_hidden, 100)
        tiles = projection[:, :shown].T.reshape(shown, *data.image_shape[:2], -1).mean(axis=-1)
        tracking.log_figure(run.run_id, plots.image_grid(
            tiles, title=f"RBM layer {layer}: weights of {shown} hidden units"
            + (" (projected to pixels through the layers below)" if below else ""), columns=10,
            normalize_each=True), "plots/filters.png")
        if layer == 1:
            figure, disagreement = gibbs_samples(rbm, data, typed)
            tracking.log_figure(run.run_id, figure, "plots/gibbs_samples.png")
            # One value per column of the figure, the Gibbs step as the metric's step: the
            # run's value is the last one, at the end of the chains (claim C5).
            for step, value in disagreement.items():
                run.log_metrics({"gibbs_chain_disagreement": value}, step=step)
            say(f"rbm layer 1: two Gibbs chains from the same digit disagree on {value:.1%} of the pixels "
                f"after {step} steps")

    trained = step.train(Training(
        f"rbm_layer_{layer}", data=data, run_name=f"rbm-layer-{layer}", stage="pretrain", seed=seed, float32=True,
        params={"layer": layer, "n_visible": n_visible, "n_hidden": n_hidden}, examples=len(train_v),
        build=lambda: RBM(n_visible, n_hidden, k=rbm_config.k, persistent=rbm_config.persistent,
                          n_chains=rbm_config.batch_size, seed=seed, name=f"rbm_layer_{layer}"),
        arrays=(train_v, val_v), normalize=False,
        train=typed.train.replace(epochs=rbm_config.epochs, batch_size=rbm_config.batch_size,
                                  learning_rate=rbm_config.learning_rate, optimizer="sgd", lr_schedule="constant",
                                  early_stopping_patience=0),
        fit={"loss": None, "metrics": ()}, after=pictures))
    return {"stack": [*stack, {"layer": layer, "run_id": trained["run_id"], "model_uri": trained["model_uri"]}]}


def gibbs_samples(rbm: Any, data: Any, typed: Any) -> tuple[Any, dict[int, float]]:
    """Independent Gibbs chains, two from each of (up to) five test digits, run for
    ``rbm.gibbs_steps`` steps: the figure of their visible probabilities along the way,
    and the chains' disagreement (:func:`models.rbm.chain_disagreement`) at each of its columns
    ``{Gibbs step: value}``, the last one at the end of the chains."""
    import keras

    from models.rbm import chain_disagreement
    from pipelines import plots

    test_x, test_y = data.split("test")
    starts = [int(np.flatnonzero(test_y == label)[0]) for label in range(min(data.num_classes, 5))
              if (test_y == label).any()]
    chains = np.repeat(visible(test_x[starts], typed.rbm.visible), 2, axis=0)
    keras.utils.set_random_seed(typed.train.seed)
    total = typed.rbm.gibbs_steps
    marks = sorted({1, 10, 100, total} & set(range(1, total + 1)) | {total})
    snapshots, current, done = [chains], keras.ops.convert_to_tensor(chains), 0
    for mark in marks:
        probabilities = rbm.gibbs_chain(current, mark - done)
        done = mark
        current = rbm.sample(probabilities)
        snapshots.append(np.asarray(probabilities))
    disagreement = {mark: chain_disagreement(snapshot) for mark, snapshot in zip(marks, snapshots[1:], strict=True)}
    rows = {f"digit {test_y[starts[i // 2]]}, chain {i % 2 + 1}": np.stack(
        [snap[i].reshape(data.image_shape) for snap in snapshots]) for i in range(len(chains))}
    figure = plots.image_rows(rows, "Gibbs sampling from RBM layer 1: two chains per start\nunder each step: "
                                    "share of pixels where the two chains differ by more than 0.5",
                              ["start"] + [f"{mark} step{'s' if mark > 1 else ''}\n{disagreement[mark]:.3f}"
                                           for mark in marks])
    return figure, disagreement


@step_of(FAMILY)
def plan_finetuning(step: StepContext) -> list[dict[str, Any]]:
    """One job per (label fraction, init, seed); the DAG maps ``finetune`` over them."""
    typed = step.config
    stack = list((step.get("pretrain_rbm_layer") or {}).get("stack") or [])
    if len(stack) != len(typed.rbm.layers):
        raise ValueError(f"fine-tuning needs all {len(typed.rbm.layers)} pretrained RBM layers; got {len(stack)}")
    return [{"fraction": fraction, "init": init, "seed": seed}
            for fraction in sorted(typed.finetune.label_fractions) for init in INITS
            for seed in range(typed.finetune.seeds)]


@step_of(FAMILY)
def finetune(step: StepContext) -> dict[str, Any]:
    """Fine-tune the unrolled DBN (``init="dbn"``) or the same net from random weights
    (``init="random"``) on ``fraction`` of the training labels, for ``finetune.steps``
    steps; score it on the test split. The model is kept for DBN-initialised runs on the
    largest fraction (the ones ``register`` chooses from)."""
    from models.dbn import build_dbn_classifier
    from pipelines.data.prepared import normalize_images, stratified_subset
    from pipelines.train import classification_scores

    typed = step.config
    fraction, init, seed = float(step["fraction"]), step["init"], int(step["seed"])
    if init not in INITS:
        raise ValueError(f"init={init!r}: expected one of {', '.join(INITS)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction}: expected a share in (0, 1]")
    data = step.data
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (data.split(s) for s in ("train", "val", "test"))
    chosen = stratified_subset(train_y, fraction, seed)
    finetune_config = typed.finetune
    batch = min(finetune_config.batch_size, len(chosen))
    steps_per_epoch = max(MIN_EVAL_STEPS, math.ceil(finetune_config.steps / EVAL_POINTS))
    epochs = max(1, math.ceil(finetune_config.steps / steps_per_epoch))
    stack = step["pretrain_rbm_layer"]["stack"]

    def score(run: Any, model: Any, history: Any) -> dict[str, float]:
        scores = classification_scores(model, test_x, test_y)[0]
        return {"test_accuracy": scores["accuracy"], "test_loss": scores["loss"], "labelled_examples": len(chosen)}

    name = f"finetune_{init}_{fraction:g}_seed{seed}"
    trained = step.train(Training(
        name, data=data, run_name=name.replace("_", "-"), model_tag="dbn", stage="finetune",
        seed=typed.train.seed * 1000 + seed, after=score, progress=False, example=normalize_images(test_x[:4]),
        keep_model=init == "dbn" and fraction == max(finetune_config.label_fractions),
        tags={"init": init, "label_fraction": fraction, "seed": seed},
        params={"init": init, "label_fraction": fraction, "seed": seed, "labelled_examples": len(chosen),
                "batch": batch, "epochs": epochs, "steps_per_epoch": steps_per_epoch},
        build=lambda: build_dbn_classifier(
            data.image_shape, data.num_classes, typed.rbm.layers, rbms=_load_stack(stack) if init == "dbn" else None,
            dropout_rate=finetune_config.dropout_rate, seed=typed.train.seed * 1000 + seed),
        datasets=lambda: (batches((train_x[chosen], train_y[chosen]), batch, shuffle=True, seed=seed, repeat=True),
                          batches((val_x, val_y), 512) if len(val_y) else None),
        train=typed.train.replace(epochs=epochs, batch_size=batch, learning_rate=finetune_config.learning_rate,
                                  optimizer="adam", lr_schedule="constant", early_stopping_patience=0),
        fit={"steps_per_epoch": steps_per_epoch}))
    metrics = trained["metrics"]
    say(f"fine-tune {init:6s} {fraction:>6.1%} labels ({len(chosen):5d}) seed {seed}: "
        f"test accuracy {metrics['test_accuracy']:.4f}")
    return {"fraction": fraction, "init": init, "seed": seed, "run_id": trained["run_id"],
            "model_uri": trained["model_uri"], "test_accuracy": float(metrics["test_accuracy"]),
            "labelled_examples": int(metrics.get("labelled_examples", 0))}
