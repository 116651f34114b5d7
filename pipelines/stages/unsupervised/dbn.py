"""Unsupervised family: autoencoder vs PCA; RBMs pretrained greedily into a DBN and
fine-tuned with few labels against random init; RBM features on scikit-learn's protocol.

Stages, in DAG order::

    prepare_data ─┬─ train_autoencoder ── evaluate_autoencoder ─────────────────┐
                  ├─ pretrain_rbm_layer (1, 2, ...) ── plan_finetuning ── finetune (mapped) ── compare ── register ── finish
                  └─ evaluate_rbm_features ──────────────────────────────────────┘

MLflow: ``prepare_data`` opens one parent run per pipeline run; every training is a
run nested under it; ``compare`` logs the comparison table and plot on the parent and
``finish`` ends it (FAILED, with the failed steps named, if something failed).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np

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
    run_key,
    run_params,
    training_run,
)
from pipelines.stages.common import prepare_data as _prepare_common

FAMILY = "unsupervised"
INITS = ("dbn", "random")
EVAL_POINTS = 20
"""A fine-tuning's steps are cut into this many "epochs", each ending with validation."""
TAG_PIPELINE = "nnzoo.pipeline_run"
CODE_MAP_POINTS = 1000
"""Test images drawn in the 2-D map of autoencoder codes (t-SNE cost grows quickly)."""


# --- helpers ------------------------------------------------------------------------


def _pixels(images: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W, C] -> float32 [N, H*W*C] in [0, 1]."""
    return (images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0))


def _visible(images: np.ndarray, mode: str) -> np.ndarray:
    pixels = _pixels(images)
    return (pixels > 0.5).astype(np.float32) if mode == "binary" else pixels


def _tags(typed: Any, model: str, stage: str, **extra: Any) -> dict[str, Any]:
    return {tracking.TAG_FAMILY: FAMILY, tracking.TAG_MODEL: model, tracking.TAG_PROFILE: typed.profile,
            tracking.TAG_STAGE: stage, **extra}


def _trainer_config(typed: Any, **changes: Any) -> Any:
    """The family's ``train`` section (device switches, seed) with ``changes``."""
    return dataclasses.replace(typed.train, **changes)


def _nested(inputs: dict[str, Any]) -> str:
    parent = inputs.get("parent_run_id")
    if not parent:
        raise ValueError("inputs lack parent_run_id: run prepare_data first, it opens the pipeline's parent run")
    return parent


def _load_stack(stack: list[dict[str, Any]]) -> list[Any]:
    import models.rbm  # noqa: F401 - registers the RBM class for deserialisation

    return [tracking.load_keras_model(layer["model_uri"]) for layer in stack]


def _log_model(run: Any, model: Any, example: np.ndarray) -> str:
    uri = tracking.log_keras_model(run.run_id, model, example)
    run.set_tags({TAG_MODEL_URI: uri})
    return uri


# --- stages -------------------------------------------------------------------------


def prepare_data(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Split and store the dataset; open the pipeline's parent MLflow run.

    Returns the data reference (``data_uri``, fingerprint, sizes) and ``parent_run_id``.
    A retry of the same orchestrated run gets the same parent run.
    """
    from pipelines.data.prepared import load_prepared

    fam, typed = load_config(FAMILY, config)
    data = _prepare_common(FAMILY, config, inputs)
    key = run_key(inputs, "pipeline")
    parent = tracking.start_run(fam.experiment_name, f"{FAMILY}-{typed.profile}", run_key=key,
                                tags=_tags(typed, "pipeline", "pipeline", **{TAG_PIPELINE: key or "cli"}))
    tracking.log_params(parent, run_params(typed, load_prepared(data["data_uri"])))
    print(f"[nnzoo] {FAMILY}: parent run {parent} for {data['dataset']} {data['fingerprint']} {data['sizes']}")
    return {**data, "parent_run_id": parent}


def train_autoencoder(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Train the autoencoder (``autoencoder`` section) to reproduce its input (MSE).

    Nested under the parent run; per-epoch curves, model with signature. A retry
    reuses the finished run or resumes the unfinished one from its checkpoint.
    """
    import tensorflow as tf

    from models import build_model
    from pipelines import plots
    from pipelines import train as trainer
    from pipelines.data.prepared import load_prepared, normalize_images

    fam, typed = load_config(FAMILY, config)
    data = load_prepared(inputs["data_uri"])
    plan = plan_training(fam, typed, "autoencoder", inputs, data.fingerprint)
    if plan.reuse is not None:
        return plan.reuse
    with training_run(fam, plan, "autoencoder", _tags(typed, "autoencoder", "train"), _nested(inputs)) as run:
        trainer.configure_devices()
        trainer.configure_precision(typed.train.mixed_precision)
        trainer.set_seed(typed.train.seed)
        train_x, _ = data.split("train")
        val_x, _ = data.split("val")

        def images_to_images(images: np.ndarray, shuffle: bool, batch: int) -> Any:
            dataset = tf.data.Dataset.from_tensor_slices(images).cache()
            if shuffle:
                dataset = dataset.shuffle(len(images), seed=typed.train.seed, reshuffle_each_iteration=True)
            dataset = dataset.batch(batch).map(lambda x: (normalize_images(x), normalize_images(x)))
            return dataset.prefetch(tf.data.AUTOTUNE)

        section = {key: tuple(value) if isinstance(value, list) else value
                   for key, value in to_dict(typed.autoencoder).items()}
        with trainer.distribution_scope(typed.train.distribute):
            model = build_model("autoencoder", input_shape=data.image_shape, **section)
            run.log_params(run_params(typed, data, model="autoencoder", parameters=model.count_params()))
            started = time.perf_counter()
            history = trainer.fit(
                model, images_to_images(train_x, True, typed.train.batch_size),
                images_to_images(val_x, False, 512) if len(val_x) else None, typed.train,
                loss="mse", metrics=(), checkpoint_dir=checkpoint_dir(run.run_id),
                callbacks=[tracking.keras_epoch_logger(run.run_id, skip_through=plan.logged_epochs)],
                progress_label="autoencoder")
        run.log_metrics({"train_seconds": time.perf_counter() - started,
                         "epochs_trained": len(history.history["loss"])})
        tracking.log_figure(run.run_id, plots.training_curves(history.history, f"autoencoder on {data.name}"),
                            "plots/training_curves.png")
        model_uri = _log_model(run, model, normalize_images(train_x[:4]))
    return {"model": "autoencoder", "run_id": run.run_id, "model_uri": model_uri, "cached": False}


def evaluate_autoencoder(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Test reconstruction error per pixel of the autoencoder and of PCA with as many
    components as the bottleneck (fitted on the same training split), in the
    autoencoder's run; reconstructions next to originals; a 2-D map of the codes."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from pipelines import plots
    from pipelines.data.prepared import load_prepared

    fam, typed = load_config(FAMILY, config)
    data = load_prepared(inputs["data_uri"])
    trained = inputs["autoencoder"]
    earlier = tracking.get_run(trained["run_id"])
    if earlier.data.tags.get(TAG_EVALUATED_ON) == data.fingerprint and "test_mse" in earlier.data.metrics:
        metrics = {key: earlier.data.metrics[key] for key in ("test_mse", "pca_test_mse", "mse_ratio_vs_pca")}
        print(f"[nnzoo] autoencoder: already evaluated on {data.fingerprint}: {metrics}")
        return {"metrics": metrics}
    train_x, _ = data.split("train")
    test_x, test_y = data.split("test")
    pixels = _pixels(test_x)
    with tracking.run(fam.experiment_name, "autoencoder", resume_run_id=trained["run_id"]) as run:
        model = tracking.load_keras_model(trained["model_uri"])
        images = pixels.reshape(test_x.shape)
        reconstructed = np.asarray(model.predict(images, batch_size=512, verbose=0)).reshape(pixels.shape)
        components = typed.autoencoder.bottleneck
        train_pixels = _pixels(train_x)
        pca = PCA(n_components=min(components, *train_pixels.shape), random_state=0).fit(train_pixels)
        pca_reconstructed = pca.inverse_transform(pca.transform(pixels))
        metrics = {
            "test_mse": float(np.mean((reconstructed - pixels) ** 2)),
            "pca_test_mse": float(np.mean((np.clip(pca_reconstructed, 0, 1) - pixels) ** 2)),
        }
        metrics["mse_ratio_vs_pca"] = metrics["test_mse"] / max(metrics["pca_test_mse"], 1e-12)
        run.log_metrics(metrics)
        run.log_params({"pca.components": components})
        # One test image per class (the first of each), then the next ten.
        firsts = [int(np.flatnonzero(test_y == label)[0]) for label in range(data.num_classes)
                  if (test_y == label).any()]
        chosen = np.array((firsts + [i for i in range(len(test_y)) if i not in firsts])[:20])
        shape = test_x.shape[1:]
        tracking.log_figure(run.run_id, plots.image_rows(
            {"original": pixels[chosen].reshape(-1, *shape),
             f"autoencoder\n{components}-d code": reconstructed[chosen].reshape(-1, *shape),
             f"PCA\n{components} comp.": np.clip(pca_reconstructed[chosen], 0, 1).reshape(-1, *shape)},
            f"Test reconstructions: autoencoder MSE {metrics['test_mse']:.4f}, PCA {metrics['pca_test_mse']:.4f}"),
            "plots/reconstructions.png")
        shown = np.random.default_rng(0).permutation(len(test_y))[:CODE_MAP_POINTS]
        codes = np.asarray(model.get_layer("encoder").predict(images[shown], batch_size=512, verbose=0))
        if codes.shape[1] > 2:
            # t-SNE keeps neighbours together, so clusters of digits show; PCA smears them.
            flat = TSNE(n_components=2, init="pca", perplexity=min(30.0, (len(codes) - 1) / 3), max_iter=500,
                        random_state=0).fit_transform(codes)
            axes, how = ("t-SNE 1", "t-SNE 2"), "t-SNE map"
        elif codes.shape[1] == 2:
            flat, axes, how = codes, ("code 1", "code 2"), "the codes themselves"
        else:
            flat, axes, how = np.column_stack([codes[:, 0], np.zeros(len(codes))]), ("code", ""), "the code"
        tracking.log_figure(run.run_id, plots.code_map(
            flat, test_y[shown], data.class_names, f"Autoencoder codes of {len(shown)} test images "
            f"({codes.shape[1]}-d; {how})", *axes), "plots/code_map.png")
        run.set_tags({TAG_EVALUATED_ON: data.fingerprint})
    print(f"[nnzoo] autoencoder: test MSE/pixel {metrics['test_mse']:.4f} vs PCA-{components} "
          f"{metrics['pca_test_mse']:.4f} (ratio {metrics['mse_ratio_vs_pca']:.3f})")
    return {"metrics": metrics}


def pretrain_rbm_layer(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Train RBM layer ``inputs["layer"]`` (1-based) on the hidden probabilities of the
    layers in ``inputs["stack"]`` (their model URIs), with CD-k or PCD.

    Returns ``{"stack": stack + [this layer]}``. A layer beyond ``rbm.layers`` passes the
    stack on untouched (the DAG has a fixed number of layer tasks). Logs per-epoch
    reconstruction error and pseudo-likelihood, the filters, Gibbs samples (first
    layer) and the RBM. A retry reuses the finished run or resumes it.
    """
    import tensorflow as tf

    from models.dbn import propagate
    from models.rbm import RBM
    from pipelines import plots
    from pipelines import train as trainer
    from pipelines.data.prepared import load_prepared

    fam, typed = load_config(FAMILY, config)
    layer = int(inputs["layer"])
    stack = list(inputs.get("stack") or [])
    sizes = typed.rbm.layers
    if layer > len(sizes):
        print(f"[nnzoo] rbm layer {layer}: not in this run (rbm.layers={','.join(map(str, sizes))}); nothing to do")
        return {"stack": stack}
    if len(stack) != layer - 1:
        raise ValueError(f"rbm layer {layer} needs the {layer - 1} layer(s) below it; got {len(stack)}")
    data = load_prepared(inputs["data_uri"])
    name = f"rbm_layer_{layer}"
    plan = plan_training(fam, typed, name, inputs, data.fingerprint)
    if plan.reuse is not None:
        return {"stack": [*stack, _layer_ref(layer, plan.reuse)]}
    below = _load_stack(stack)
    train_v = propagate(below, _visible(data.split("train")[0], typed.rbm.visible))
    val_v = propagate(below, _visible(data.split("val")[0], typed.rbm.visible))
    n_visible, n_hidden = train_v.shape[1], sizes[layer - 1]
    with training_run(fam, plan, f"rbm-layer-{layer}", _tags(typed, name, "pretrain"), _nested(inputs)) as run:
        trainer.configure_devices()
        trainer.configure_precision(False)  # CD statistics in float32 (see UnsupervisedConfig)
        trainer.set_seed(typed.train.seed + layer)
        batch = typed.rbm.batch_size
        rbm = RBM(n_visible, n_hidden, k=typed.rbm.k, persistent=typed.rbm.persistent, n_chains=batch,
                  seed=typed.train.seed + layer, name=name)
        run.log_params(run_params(typed, data, model=name, layer=layer, n_visible=n_visible, n_hidden=n_hidden,
                                  parameters=rbm.count_params()))
        train_data = tf.data.Dataset.from_tensor_slices(train_v).shuffle(
            len(train_v), seed=typed.train.seed + layer, reshuffle_each_iteration=True).batch(batch)
        val_data = tf.data.Dataset.from_tensor_slices(val_v).batch(512) if len(val_v) else None
        started = time.perf_counter()
        history = trainer.fit(
            rbm, train_data, val_data,
            _trainer_config(typed, epochs=typed.rbm.epochs, batch_size=batch, learning_rate=typed.rbm.learning_rate,
                            optimizer="sgd", lr_schedule="constant", early_stopping_patience=0),
            loss=None, metrics=(), checkpoint_dir=checkpoint_dir(run.run_id),
            callbacks=[tracking.keras_epoch_logger(run.run_id, skip_through=plan.logged_epochs)],
            progress_label=f"rbm layer {layer} ({n_visible}->{n_hidden}, "
                           f"{'PCD' if typed.rbm.persistent else 'CD'}-{typed.rbm.k})")
        run.log_metrics({"train_seconds": time.perf_counter() - started})
        tracking.log_figure(run.run_id, plots.training_curves(history.history, f"RBM layer {layer}"),
                            "plots/training_curves.png")
        image_shape = data.image_shape
        # Filters: each hidden unit's weights seen from the pixels (through the layers below).
        projection = np.asarray(rbm.kernel)
        for lower in reversed(below):
            projection = np.asarray(lower.kernel) @ projection
        shown = min(n_hidden, 100)
        tiles = projection[:, :shown].T.reshape(shown, *image_shape[:2], -1).mean(axis=-1)
        tracking.log_figure(run.run_id, plots.image_grid(
            tiles, title=f"RBM layer {layer}: weights of {shown} hidden units"
            + (" (projected to pixels through the layers below)" if below else ""), columns=10,
            normalize_each=True), "plots/filters.png")
        if layer == 1:
            tracking.log_figure(run.run_id, _gibbs_figure(rbm, data, typed), "plots/gibbs_samples.png")
        model_uri = _log_model(run, rbm, train_v[:4])
    return {"stack": [*stack, _layer_ref(layer, {"run_id": run.run_id, "model_uri": model_uri})]}


def _layer_ref(layer: int, trained: dict[str, Any]) -> dict[str, Any]:
    return {"layer": layer, "run_id": trained["run_id"], "model_uri": trained["model_uri"]}


def _gibbs_figure(rbm: Any, data: Any, typed: Any) -> Any:
    """Independent Gibbs chains: pairs started from the same test digit drift apart."""
    import keras

    from pipelines import plots

    test_x, test_y = data.split("test")
    starts = [int(np.flatnonzero(test_y == label)[0]) for label in range(min(data.num_classes, 5))
              if (test_y == label).any()]
    chains = np.repeat(_visible(test_x[starts], typed.rbm.visible), 2, axis=0)
    keras.utils.set_random_seed(typed.train.seed)
    total = typed.rbm.gibbs_steps
    marks = sorted({1, 10, 100, total} & set(range(1, total + 1)) | {total})
    snapshots, current, done = [chains], keras.ops.convert_to_tensor(chains), 0
    for mark in marks:
        probabilities = rbm.gibbs_chain(current, mark - done)
        done = mark
        current = rbm.sample(probabilities)
        snapshots.append(np.asarray(probabilities))
    rows = {f"digit {test_y[starts[i // 2]]}, chain {i % 2 + 1}": np.stack(
        [snap[i].reshape(data.image_shape) for snap in snapshots]) for i in range(len(chains))}
    return plots.image_rows(rows, "Gibbs sampling from RBM layer 1: two chains per start",
                            ["start"] + [f"{mark} step{'s' if mark > 1 else ''}" for mark in marks])


def evaluate_rbm_features(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """scikit-learn's "RBM features for digit classification" protocol with this RBM:
    sklearn digits nudged by one pixel in four directions (x5 data), scaled to [0, 1],
    80/20 split (random_state=0); a PCD-1 RBM's hidden probabilities feed a logistic
    regression. Logs ``rbm_logistic_accuracy`` and the raw-pixel baseline
    ``raw_logistic_accuracy`` in a nested run."""
    import tensorflow as tf
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import classification_report
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import minmax_scale

    from models.rbm import RBM
    from pipelines import plots
    from pipelines import train as trainer

    fam, typed = load_config(FAMILY, config)
    settings = typed.rbm_features
    if not settings.enabled:
        print("[nnzoo] rbm features: disabled (rbm_features.enabled=false)")
        return {"metrics": {}}
    key = run_key(inputs, "rbm_features")
    experiment_id = tracking.ensure_experiment(fam.experiment_name)
    earlier = tracking.find_run(experiment_id, key) if key else None
    if earlier is not None and earlier.info.status == "FINISHED":
        metrics = {k: v for k, v in earlier.data.metrics.items() if k.endswith("_accuracy")}
        print(f"[nnzoo] rbm features: run {earlier.info.run_id} already finished; {metrics}")
        return {"metrics": metrics, "run_id": earlier.info.run_id}
    # An unfinished earlier try (killed worker) is redone in the same run: it is short,
    # and seeded, so the epochs it already logged come out the same and are skipped.
    resume = earlier.info.run_id if earlier is not None else None
    logged = tracking.max_logged_step(resume, "loss") if resume else 0
    digits = load_digits()
    features, labels = nudge_digits(digits.images, digits.target)
    features = minmax_scale(features, feature_range=(0, 1)).astype(np.float32)
    train_x, test_x, train_y, test_y = train_test_split(features, labels, test_size=0.2, random_state=0)
    with tracking.run(fam.experiment_name, "rbm-features-digits", tags=_tags(typed, "rbm_features", "evaluate"),
                      run_key=key, parent_run_id=_nested(inputs), resume_run_id=resume) as run:
        trainer.configure_precision(False)
        trainer.set_seed(0)
        rbm = RBM(64, settings.hidden_units, k=1, persistent=True, n_chains=settings.batch_size, seed=0,
                  name="rbm_digits")
        run.log_params({f"rbm_features.{k}": v for k, v in to_dict(settings).items()} | {
            "protocol": "sklearn plot_rbm_logistic_classification: nudged digits, minmax, 80/20, random_state=0",
            "train_size": len(train_y), "test_size": len(test_y)})
        started = time.perf_counter()
        history = trainer.fit(
            rbm, tf.data.Dataset.from_tensor_slices(train_x).shuffle(len(train_x), seed=0).batch(
                settings.batch_size), None,
            _trainer_config(typed, epochs=settings.epochs, batch_size=settings.batch_size,
                            learning_rate=settings.learning_rate, optimizer="sgd", lr_schedule="constant",
                            early_stopping_patience=0),
            loss=None, metrics=(), callbacks=[tracking.keras_epoch_logger(run.run_id, skip_through=logged)],
            progress_label="rbm features (digits)", steps_per_execution=50)
        rbm_seconds = time.perf_counter() - started
        train_h, test_h = np.asarray(rbm(train_x)), np.asarray(rbm(test_x))
        # The example passes tol=1; scikit-learn 1.9's newton-cg then stops before its
        # first iteration (n_iter_ 0, chance accuracy), so the solver's default tol is used.
        logistic = LogisticRegression(C=settings.logistic_c, solver="newton-cg", max_iter=1000)
        predicted = logistic.fit(train_h, train_y).predict(test_h)
        raw = LogisticRegression(C=100.0, solver="newton-cg", max_iter=1000).fit(train_x, train_y)
        metrics = {
            "rbm_logistic_accuracy": float((predicted == test_y).mean()),
            "raw_logistic_accuracy": float((raw.predict(test_x) == test_y).mean()),
            "rbm_seconds": rbm_seconds,
            "test_pseudo_likelihood": float(np.mean(np.asarray(rbm.pseudo_likelihood(test_x)))),
        }
        run.log_metrics(metrics)
        tracking.log_bytes(run.run_id, classification_report(test_y, predicted, digits=4).encode(),
                           "evaluation/rbm_logistic_report.txt")
        tiles = np.asarray(rbm.kernel).T.reshape(-1, 8, 8)
        tracking.log_figure(run.run_id, plots.image_grid(
            tiles, title=f"{settings.hidden_units} RBM components on nudged digits", columns=10,
            normalize_each=True), "plots/filters.png")
        tracking.log_figure(run.run_id, plots.training_curves(history.history, "RBM on nudged digits"),
                            "plots/training_curves.png")
    print(f"[nnzoo] rbm features: logistic on RBM features {metrics['rbm_logistic_accuracy']:.4f}, "
          f"on raw pixels {metrics['raw_logistic_accuracy']:.4f}")
    return {"metrics": metrics, "run_id": run.run_id}


def nudge_digits(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn example's ``nudge_dataset``: the images plus copies shifted by one
    pixel up, left, right and down (zeros come in), stacked in the example's order so
    its ``train_test_split(random_state=0)`` draws the same split; returns flat
    features and the labels x5."""
    shifted = [images]
    for axis, step in ((1, -1), (2, -1), (2, 1), (1, 1)):
        moved = np.roll(images, step, axis=axis)
        index = [slice(None)] * 3
        index[axis] = 0 if step == 1 else -1
        moved[tuple(index)] = 0
        shifted.append(moved)
    stacked = np.concatenate(shifted)
    return stacked.reshape(len(stacked), -1), np.concatenate([labels] * len(shifted))


def plan_finetuning(config: dict[str, Any], inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """One job per (label fraction, init, seed); the DAG maps ``finetune`` over them."""
    _, typed = load_config(FAMILY, config)
    stack = list(inputs.get("stack") or [])
    if len(stack) != len(typed.rbm.layers):
        raise ValueError(f"fine-tuning needs all {len(typed.rbm.layers)} pretrained RBM layers; got {len(stack)}")
    return [{"fraction": fraction, "init": init, "seed": seed}
            for fraction in sorted(typed.finetune.label_fractions)
            for init in INITS
            for seed in range(typed.finetune.seeds)]


def label_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a stratified share of the labels: ``round(fraction * n_c)`` (at least
    one) of every class, drawn with ``seed``; the same for every init."""
    rng = np.random.default_rng([seed, int(round(fraction * 1_000_000))])
    chosen = []
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        chosen.append(rng.choice(index, size=max(1, int(round(fraction * len(index)))), replace=False))
    return np.sort(np.concatenate(chosen))


def finetune(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune the unrolled DBN (``init="dbn"``) or the same net from random weights
    (``init="random"``) on ``fraction`` of the training labels, for ``finetune.steps``
    steps; score it on the test split. Nested run; returns the test accuracy.
    The model is logged for DBN-initialised runs on the largest fraction (the ones
    ``register`` chooses from)."""
    import tensorflow as tf

    from models.dbn import build_dbn_classifier
    from pipelines import plots
    from pipelines import train as trainer
    from pipelines.data.prepared import load_prepared, normalize_images

    fam, typed = load_config(FAMILY, config)
    fraction, init, seed = float(inputs["fraction"]), inputs["init"], int(inputs["seed"])
    if init not in INITS:
        raise ValueError(f"init={init!r}: expected one of {', '.join(INITS)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction}: expected a share in (0, 1]")
    data = load_prepared(inputs["data_uri"])
    name = f"finetune_{init}_{fraction:g}_seed{seed}"
    plan = plan_training(fam, typed, name, inputs, data.fingerprint)
    if plan.reuse is not None:
        earlier = tracking.get_run(plan.reuse["run_id"])
        return _finetune_result(fraction, init, seed, plan.reuse["run_id"], earlier.data.metrics,
                                plan.reuse["model_uri"])
    train_x, train_y = data.split("train")
    val_x, val_y = data.split("val")
    test_x, test_y = data.split("test")
    chosen = label_subset(train_y, fraction, seed)
    settings = typed.finetune
    batch = min(settings.batch_size, len(chosen))
    steps_per_epoch = max(1, math.ceil(settings.steps / EVAL_POINTS))
    epochs = max(1, math.ceil(settings.steps / steps_per_epoch))
    keep_model = init == "dbn" and fraction == max(typed.finetune.label_fractions)
    tags = _tags(typed, "dbn", "finetune", **{"nnzoo.init": init, "nnzoo.label_fraction": fraction, "nnzoo.seed": seed})
    with training_run(fam, plan, name.replace("_", "-"), tags, _nested(inputs)) as run:
        trainer.configure_devices()
        trainer.configure_precision(typed.train.mixed_precision)
        trainer.set_seed(typed.train.seed * 1000 + seed)
        rbms = _load_stack(inputs["stack"]) if init == "dbn" else None
        train_data = tf.data.Dataset.from_tensor_slices((train_x[chosen], train_y[chosen])).cache().shuffle(
            len(chosen), seed=seed, reshuffle_each_iteration=True).repeat().batch(batch).map(
            lambda x, y: (normalize_images(x), y)).prefetch(tf.data.AUTOTUNE)
        val_data = (tf.data.Dataset.from_tensor_slices((val_x, val_y)).batch(512).map(
            lambda x, y: (normalize_images(x), y)) if len(val_y) else None)
        # One scope for building and fitting: a second MirroredStrategy would be a different one.
        with trainer.distribution_scope(typed.train.distribute):
            model = build_dbn_classifier(data.image_shape, data.num_classes, typed.rbm.layers, rbms=rbms,
                                         dropout_rate=settings.dropout_rate, seed=typed.train.seed * 1000 + seed)
            run.log_params(run_params(typed, data, model="dbn", init=init, label_fraction=fraction, seed=seed,
                                      labelled_examples=len(chosen), batch=batch, epochs=epochs,
                                      steps_per_epoch=steps_per_epoch, parameters=model.count_params()))
            history = trainer.fit(
                model, train_data, val_data,
                _trainer_config(typed, epochs=epochs, batch_size=batch, learning_rate=settings.learning_rate,
                                optimizer="adam", lr_schedule="constant", early_stopping_patience=0),
                checkpoint_dir=checkpoint_dir(run.run_id), steps_per_epoch=steps_per_epoch,
                callbacks=[tracking.keras_epoch_logger(run.run_id, skip_through=plan.logged_epochs)])
        probabilities = model.predict(normalize_images(test_x), batch_size=512, verbose=0)
        picked = probabilities[np.arange(len(test_y)), test_y]
        metrics = {"test_accuracy": float((probabilities.argmax(axis=1) == test_y).mean()),
                   "test_loss": float(-np.log(np.clip(picked, 1e-7, 1.0)).mean()),
                   "labelled_examples": len(chosen)}
        run.log_metrics(metrics)
        tracking.log_figure(run.run_id, plots.training_curves(
            history.history, f"{init} init, {fraction:.0%} labels ({len(chosen)}), seed {seed}"),
            "plots/training_curves.png")
        if keep_model:
            model_uri = _log_model(run, model, normalize_images(test_x[:4]))
        else:
            model_uri = ""
            run.set_tags({TAG_MODEL_URI: ""})  # finished; no model kept (see the docstring)
    print(f"[nnzoo] fine-tune {init:6s} {fraction:>6.1%} labels ({len(chosen):5d}) seed {seed}: "
          f"test accuracy {metrics['test_accuracy']:.4f}")
    return _finetune_result(fraction, init, seed, run.run_id, metrics, model_uri)


def _finetune_result(fraction: float, init: str, seed: int, run_id: str, metrics: dict[str, float],
                     model_uri: str) -> dict[str, Any]:
    return {"fraction": fraction, "init": init, "seed": seed, "run_id": run_id, "model_uri": model_uri,
            "test_accuracy": float(metrics["test_accuracy"]),
            "labelled_examples": int(metrics.get("labelled_examples", 0))}


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (fraction, init): mean, sample standard deviation, min, max over seeds; and
    per fraction the paired DBN - random difference (same seed = same labels)."""
    rows = []
    for fraction in sorted({float(r["fraction"]) for r in results}):
        paired: dict[str, dict[int, float]] = {}
        for init in INITS:
            values = [float(r["test_accuracy"]) for r in results if float(r["fraction"]) == fraction
                      and r["init"] == init]
            paired[init] = {int(r["seed"]): float(r["test_accuracy"]) for r in results
                            if float(r["fraction"]) == fraction and r["init"] == init}
            if not values:
                continue
            rows.append({"fraction": fraction, "init": init, "seeds": len(values),
                         "labelled_examples": max(int(r["labelled_examples"]) for r in results
                                                  if float(r["fraction"]) == fraction),
                         "mean": float(np.mean(values)),
                         "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                         "min": float(np.min(values)), "max": float(np.max(values))})
        common = sorted(set(paired.get("dbn", {})) & set(paired.get("random", {})))
        if common:
            gains = [paired["dbn"][s] - paired["random"][s] for s in common]
            rows.append({"fraction": fraction, "init": "dbn - random (paired)", "seeds": len(gains),
                         "mean": float(np.mean(gains)),
                         "std": float(np.std(gains, ddof=1)) if len(gains) > 1 else 0.0,
                         "min": float(np.min(gains)), "max": float(np.max(gains)),
                         "dbn_wins": int(sum(g > 0 for g in gains))})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| labels | init | seeds | mean | std | min | max |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        share = f"{row['fraction']:.0%}" + (f" ({row['labelled_examples']})" if "labelled_examples" in row else "")
        wins = f" (DBN better in {row['dbn_wins']}/{row['seeds']})" if "dbn_wins" in row else ""
        lines.append(f"| {share} | {row['init']}{wins} | {row['seeds']} | {row['mean']:+.4f} | {row['std']:.4f} | "
                     f"{row['min']:+.4f} | {row['max']:+.4f} |" if "dbn_wins" in row else
                     f"| {share} | {row['init']} | {row['seeds']} | {row['mean']:.4f} | {row['std']:.4f} | "
                     f"{row['min']:.4f} | {row['max']:.4f} |")
    return "\n".join(lines)


def compare(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """DBN vs random init by label fraction (mean, spread, paired difference): table
    and plot on the parent run, with the autoencoder's and RBM-feature figures."""
    from pipelines import plots

    fam, typed = load_config(FAMILY, config)
    parent = _nested(inputs)
    results = list(inputs["results"])
    if not results:
        raise ValueError("compare got no fine-tuning results")
    rows = summarize(results)
    table = format_table(rows)
    metrics: dict[str, float] = {}
    for row in rows:
        init = "gain" if "dbn_wins" in row else row["init"]
        metrics[f"finetune_{init}_{row['fraction']:g}_mean"] = row["mean"]
        metrics[f"finetune_{init}_{row['fraction']:g}_std"] = row["std"]
    for key, value in (inputs.get("autoencoder_metrics") or {}).items():
        metrics[f"autoencoder_{key}"] = value
    for key, value in (inputs.get("rbm_features_metrics") or {}).items():
        if key.endswith("accuracy"):
            metrics[key] = value
    tracking.log_metrics(parent, metrics)
    tracking.log_dict(parent, {"rows": rows, "results": results}, "comparison/finetune.json")
    tracking.log_bytes(parent, (f"# DBN vs random init, test accuracy by share of labels ({typed.profile})\n\n"
                                + table + "\n").encode(), "comparison/finetune.md")
    tracking.log_figure(parent, plots.accuracy_vs_labels(
        results, "Fine-tuning from DBN pretraining vs random init "
        f"({'-'.join(str(units) for units in typed.rbm.layers)} sigmoid units)"),
        "plots/accuracy_vs_labels.png")
    print("[nnzoo] DBN vs random init, test accuracy:\n" + table)
    return {"rows": rows, "table": table}


def register(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Register (once per run) and promote: the autoencoder (lower test MSE is better),
    the best DBN-initialised classifier on the largest label share (test accuracy),
    and each RBM layer (validation pseudo-likelihood)."""
    fam, typed = load_config(FAMILY, config)
    decisions: dict[str, dict[str, Any]] = {}
    autoencoder = inputs.get("autoencoder")
    if autoencoder:
        decisions["autoencoder"] = register_and_promote(
            fam, "autoencoder", autoencoder["run_id"], autoencoder["model_uri"], "test_mse",
            inputs["autoencoder_metrics"]["test_mse"], tolerance=typed.promotion_tolerance, higher_is_better=False)
    results = inputs.get("results") or []
    largest = max((float(r["fraction"]) for r in results), default=None)
    candidates = [r for r in results if r["init"] == "dbn" and float(r["fraction"]) == largest
                  and r.get("model_uri")]
    if candidates:
        best = max(candidates, key=lambda r: (r["test_accuracy"], -r["seed"]))
        decisions["dbn"] = register_and_promote(fam, "dbn", best["run_id"], best["model_uri"], "test_accuracy",
                                                best["test_accuracy"], tolerance=typed.promotion_tolerance)
    for layer in inputs.get("stack") or []:
        run = tracking.get_run(layer["run_id"])
        value = run.data.metrics.get("val_pseudo_likelihood", run.data.metrics.get("pseudo_likelihood"))
        if value is None or not math.isfinite(value):
            raise ValueError(f"rbm layer {layer['layer']} (run {layer['run_id']}) has no pseudo-likelihood logged")
        decisions[f"rbm-layer-{layer['layer']}"] = register_and_promote(
            fam, f"rbm-layer-{layer['layer']}", layer["run_id"], layer["model_uri"], "val_pseudo_likelihood",
            value, tolerance=typed.promotion_tolerance)
    for model, decision in decisions.items():
        print(f"[nnzoo] registered {decision['name']} v{decision['version']} ({model}): {decision['reason']}")
    return {"versions": decisions}


def finish(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """End the parent run: FINISHED when ``inputs["registered"]`` is there, else FAILED
    naming the nested runs that failed (the DAG runs this whatever happened upstream)."""
    fam, _ = load_config(FAMILY, config)
    parent = _nested(inputs)
    if inputs.get("registered"):
        tracking.end_run(parent, "FINISHED")
        return {"parent_run_id": parent, "status": "FINISHED"}
    experiment_id = tracking.ensure_experiment(fam.experiment_name)
    failed = []
    for child in tracking.child_runs(experiment_id, parent):
        if child.info.status in ("FAILED", "KILLED"):
            failed.append(f"{child.info.run_name}: {child.data.tags.get(tracking.TAG_FAILURE, child.info.status)}")
        elif child.info.status == "RUNNING":
            # The pipeline is over (this runs after every other step), so a run still
            # RUNNING belonged to a worker that died and whose retries are spent.
            tracking.end_run(child.info.run_id, "KILLED", "worker died before the run ended")
            failed.append(f"{child.info.run_name}: worker died before the run ended")
    reason = inputs.get("reason") or ("; ".join(failed) if failed else "an upstream step failed before any run")
    tracking.end_run(parent, "FAILED", f"pipeline did not complete: {reason}")
    print(f"[nnzoo] {FAMILY}: parent run {parent} FAILED: {reason}")
    return {"parent_run_id": parent, "status": "FAILED", "reason": reason}


@register_runner(FAMILY)
def run(config: dict[str, Any]) -> dict[str, Any]:
    """All stages in-process, in the DAG's order."""
    from pipelines.configs.unsupervised import MAX_RBM_LAYERS

    data = prepare_data(config, {})
    parent = data["parent_run_id"]
    try:
        autoencoder = train_autoencoder(config, data)
        ae_metrics = evaluate_autoencoder(config, {**data, "autoencoder": autoencoder})["metrics"]
        stack: list[dict[str, Any]] = []
        for layer in range(1, MAX_RBM_LAYERS + 1):
            stack = pretrain_rbm_layer(config, {**data, "layer": layer, "stack": stack})["stack"]
        features = evaluate_rbm_features(config, data)
        jobs = plan_finetuning(config, {"stack": stack})
        results = [finetune(config, {**data, **job, "stack": stack}) for job in jobs]
        comparison = compare(config, {**data, "results": results, "autoencoder_metrics": ae_metrics,
                                      "rbm_features_metrics": features["metrics"]})
        registered = register(config, {"autoencoder": autoencoder, "autoencoder_metrics": ae_metrics,
                                       "results": results, "stack": stack})
    except BaseException as error:
        finish(config, {"parent_run_id": parent, "reason": f"{type(error).__name__}: {error}"})
        raise
    finish(config, {"parent_run_id": parent, "registered": registered["versions"]})
    return {
        "parent_run_id": parent,
        "runs": {"autoencoder": autoencoder["run_id"], **{f"rbm_layer_{s['layer']}": s["run_id"] for s in stack}},
        "metrics": {"autoencoder": ae_metrics, "rbm_features": features["metrics"],
                    "finetune": {f"{row['init']}@{row['fraction']:g}": {k: row[k] for k in ("mean", "std")}
                                 for row in comparison["rows"]}},
        "versions": {model: decision["version"] for model, decision in registered["versions"].items()},
        "data": data,
    }
