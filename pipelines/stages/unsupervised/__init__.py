"""Unsupervised family: autoencoder vs PCA; RBMs pretrained greedily into a DBN and
fine-tuned with few labels against random init; RBM features on scikit-learn's
protocol. The steps are declared in :mod:`pipelines.configs.unsupervised`; one module
per experiment here, and the comparison and registration in :mod:`.report`.

MLflow: ``prepare_data`` (the kit's) opens one parent run per pipeline run; every
training is a run nested under it; ``compare`` logs the comparison table and plot on
the parent and the kit's ``finish`` ends it (FAILED, naming the failed steps, if
something failed).
"""

from __future__ import annotations

from typing import Any

from pipelines.kit import builder_kwargs
from pipelines.stages.unsupervised.autoencoder import evaluate_autoencoder, pixels, train_autoencoder
from pipelines.stages.unsupervised.dbn import finetune, plan_finetuning, pretrain_rbm_layer
from pipelines.stages.unsupervised.rbm_features import evaluate_rbm_features
from pipelines.stages.unsupervised.report import compare, format_table, register, summarize

__all__ = ["compare", "dry_run_models", "evaluate_autoencoder", "evaluate_rbm_features", "finetune", "format_table",
           "pixels", "plan_finetuning", "pretrain_rbm_layer", "register", "summarize", "train_autoencoder"]



def dry_run_models(typed: Any, examples: dict[str, int]) -> list[Any]:
    """What the pipeline trains, for ``nnzoo run unsupervised --dry-run``: the
    autoencoder, each RBM layer (its input the hidden units of the layer below), the
    fine-tunings of the unrolled DBN (label shares x inits x seeds, grouped by batch
    size) and the RBM of the scikit-learn digits check."""
    import math

    from models import build_model
    from models.dbn import build_dbn_classifier
    from models.rbm import RBM
    from pipelines.configs.unsupervised import INITS
    from pipelines.data.registry import get_dataset
    from pipelines.dryrun import ModelPlan, steps, training_examples
    from pipelines.stages.unsupervised.dbn import EVAL_POINTS, MIN_EVAL_STEPS

    dataset = get_dataset(typed.data.dataset)
    shape = tuple(dataset.shape)
    train_examples = training_examples(typed.data, examples)
    classes = 10
    plans = []

    batch, epochs = typed.train.batch_size, typed.train.epochs
    plans.append(ModelPlan(
        "autoencoder", lambda: build_model("autoencoder", input_shape=shape, **builder_kwargs(typed.autoencoder)),
        [(shape, "float32")], batch, steps(train_examples, batch, epochs),
        note=f"{train_examples:,} training images x {epochs} epochs (early stopping may end it sooner)"))

    rbm = typed.rbm
    sizes = [math.prod(shape), *rbm.layers]
    rbm_steps = steps(train_examples, rbm.batch_size, rbm.epochs)
    for layer, (n_visible, n_hidden) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        plans.append(ModelPlan(
            f"rbm_layer_{layer}",
            lambda n_visible=n_visible, n_hidden=n_hidden, layer=layer: RBM(
                n_visible, n_hidden, k=rbm.k, persistent=rbm.persistent, n_chains=rbm.batch_size,
                seed=typed.train.seed + layer, name=f"rbm_layer_{layer}"),
            [((n_visible,), "float32")], rbm.batch_size, rbm_steps,
            note=f"{train_examples:,} training examples x {rbm.epochs} epochs of CD-{rbm.k}"
                 f"{' (PCD)' if rbm.persistent else ''}; the timed step is p(h|v) forward and backward (2 "
                 f"batch x {n_visible} x {n_hidden} products), a CD-{rbm.k} update does about {4 + 2 * rbm.k}"))

    tuning = typed.finetune
    steps_per_epoch = max(MIN_EVAL_STEPS, math.ceil(tuning.steps / EVAL_POINTS))
    finetune_steps = steps_per_epoch * max(1, math.ceil(tuning.steps / steps_per_epoch))
    by_batch: dict[int, list[float]] = {}
    for fraction in sorted(tuning.label_fractions):
        # stratified_subset: round(fraction * n) of each class's n, at least one.
        labelled = classes * max(1, round(fraction * train_examples / classes))
        by_batch.setdefault(min(tuning.batch_size, labelled), []).append(fraction)
    for batch_size, fractions in sorted(by_batch.items(), reverse=True):
        shares = ", ".join(f"{fraction:g}" for fraction in fractions)
        plans.append(ModelPlan(
            "finetune" if len(by_batch) == 1 else f"finetune_b{batch_size}",
            lambda: build_dbn_classifier(shape, classes, rbm.layers, rbms=None, dropout_rate=tuning.dropout_rate,
                                         seed=typed.train.seed * 1000),
            [(shape, "float32")], batch_size, finetune_steps, count=len(fractions) * len(INITS) * tuning.seeds,
            note=f"{finetune_steps:,} fixed steps ({steps_per_epoch} x {finetune_steps // steps_per_epoch} "
                 f"evaluations) per fine-tuning; label shares {shares} x inits {', '.join(INITS)} x "
                 f"{tuning.seeds} seeds"))

    features = typed.rbm_features
    if features.enabled:
        nudged = (get_dataset("digits").examples or 1797) * 5
        digits_train = nudged - math.ceil(0.2 * nudged)
        plans.append(ModelPlan(
            "rbm_features",
            lambda: RBM(64, features.hidden_units, k=1, persistent=True, n_chains=features.batch_size, seed=0,
                        name="rbm_digits"),
            [((64,), "float32")], features.batch_size, steps(digits_train, features.batch_size, features.epochs),
            note=f"sklearn digits nudged x5, {digits_train:,} training examples x {features.epochs} epochs of PCD-1 "
                 "(the logistic regression on its features comes on top)"))
    return plans
