"""CNN depth family: single_neuron (C1), count_parameters (C2), plan_variants ->
train_variant (C3, C7, C8, C17; one mapped task per variant) -> register -> compare.
The steps are declared in :mod:`pipelines.configs.cnn_depth`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipelines import tracking
from pipelines.configs.cnn_depth import FAMILY, VARIANTS
from pipelines.data.registry import DatasetUnavailableError
from pipelines.errors import BadValueError
from pipelines.kit import StepContext, Training, say, step_of

METRIC = "test_accuracy"
VARIANTS_HINT = "no trained variant: check the variants param"
TALK_INPUT = (100, 100, 1)
"""The talk's example: 100x100 inputs, three hidden layers of 100 units, 10 classes."""


# --- C1 -------------------------------------------------------------------------------


@step_of(FAMILY)
def single_neuron(step: StepContext) -> dict[str, Any]:
    """A 1-unit sigmoid model (``mlp`` with no hidden layer) and scikit-learn's
    ``LogisticRegression`` on the same two-class slice of the data: both test
    accuracies, their gap and the correlation of the two weight vectors."""
    import keras
    from sklearn.linear_model import LogisticRegression

    from models import build_model
    from pipelines import plots
    from pipelines.data.prepared import normalize_images

    typed, data = step.config, step.data
    negative, positive = typed.neuron.classes
    if max(negative, positive) >= data.num_classes:
        raise BadValueError(f"neuron.classes={typed.neuron.classes!r}: {data.name} has classes 0..{data.num_classes - 1}")

    def two_classes(split: str) -> tuple[np.ndarray, np.ndarray]:
        images, labels = data.split(split)
        chosen = np.isin(labels, (negative, positive))
        return images[chosen], (labels[chosen] == positive).astype(np.float32)

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = map(two_classes, ("train", "val", "test"))
    names = f"{data.class_names[negative]} vs {data.class_names[positive]}"
    for split, labels in (("train", train_y), ("test", test_y)):
        counts = [int((labels == value).sum()) for value in (0.0, 1.0)]
        if min(counts) == 0:
            raise DatasetUnavailableError(
                f"neuron.classes={typed.neuron.classes!r}: the {split} split of {data.name} ({data.fingerprint}) holds "
                f"{counts[0]} {data.class_names[negative]} and {counts[1]} {data.class_names[positive]} images; the "
                "single neuron and the logistic regression need both classes: use more data (data.max_examples, "
                "or mock_data on mock data) or other neuron.classes")

    def compare_with_logistic(run: Any, model: Any, history: Any) -> dict[str, float]:
        flat = lambda images: normalize_images(images).reshape(len(images), -1)  # noqa: E731
        logistic = LogisticRegression(max_iter=2000).fit(flat(train_x), train_y)
        neuron = (model.predict(normalize_images(test_x), batch_size=512, verbose=0)[:, 0] > 0.5).astype(np.float32)
        weights = model.get_layer("probabilities").get_weights()[0][:, 0]
        metrics = {"neuron_test_accuracy": float((neuron == test_y).mean()),
                   "logistic_test_accuracy": float(logistic.score(flat(test_x), test_y)),
                   "weight_correlation": float(np.corrcoef(weights, logistic.coef_[0])[0, 1])}
        metrics["accuracy_gap"] = abs(metrics["neuron_test_accuracy"] - metrics["logistic_test_accuracy"])
        metrics[METRIC] = metrics["neuron_test_accuracy"]
        tracking.log_figure(run.run_id, plots.image_grid(
            np.stack([weights, logistic.coef_[0]]).reshape(2, *data.image_shape),
            [f"neuron {metrics['neuron_test_accuracy']:.3f}", f"logistic {metrics['logistic_test_accuracy']:.3f}"],
            f"{names}: weights, r = {metrics['weight_correlation']:.2f}", columns=2, cmap="RdBu",
            normalize_each=True), "plots/weights.png")
        return metrics

    trained = step.train(Training(
        "single_neuron", data=data, run_name=f"single-neuron {names}", examples=len(train_y),
        after=compare_with_logistic, progress=False, params={"neuron.slice": names, "neuron.train_size": len(train_y)},
        build=lambda: build_model("mlp", input_shape=data.image_shape, num_classes=1, hidden_units=(),
                                  dropout_rate=0.0, name="single_neuron"),
        arrays=((train_x, train_y), (val_x, val_y)),
        train=typed.train.replace(epochs=typed.neuron.fit_epochs, learning_rate=typed.neuron.step_size,
                                  lr_schedule="constant", early_stopping_patience=0),
        fit={"loss": "binary_crossentropy", "metrics": (keras.metrics.BinaryAccuracy(name="accuracy"),)}))
    metrics = trained["metrics"]
    say(f"C1 {names}: single neuron {metrics['neuron_test_accuracy']:.4f}, logistic regression "
        f"{metrics['logistic_test_accuracy']:.4f}, weight correlation {metrics['weight_correlation']:.3f}")
    return {"run_id": trained["run_id"], "metrics": _subset(metrics, (
        "neuron_test_accuracy", "logistic_test_accuracy", "accuracy_gap", "weight_correlation"))}


# --- C2 -------------------------------------------------------------------------------


@step_of(FAMILY)
def count_parameters(step: StepContext) -> dict[str, Any]:
    """The talk's two nets on 100x100 inputs, built and counted (not trained): a fully
    connected net with hidden layers 100-100-100 and a CNN with two conv layers of 100
    filters, both with a 10-way dense output. Logs both counts, FLOPs and the ratios."""
    from models import build_model
    from pipelines.flops import count_flops

    def count(run: Any) -> dict[str, float]:
        nets = {"dense": build_model("mlp", input_shape=TALK_INPUT, num_classes=10, hidden_units=(100, 100, 100),
                                     dropout_rate=0.0, name="talk_dense"),
                "cnn": build_model("talk_cnn", input_shape=TALK_INPUT, num_classes=10)}
        metrics: dict[str, float] = {}
        for name, model in nets.items():
            metrics[f"{name}_params"] = float(model.count_params())
            metrics[f"{name}_flops"] = float(count_flops(model).total)
            tracking.log_summary(run.run_id, model, f"summaries/{name}.txt")
        metrics["parameter_ratio"] = metrics["dense_params"] / metrics["cnn_params"]
        metrics["flops_ratio"] = metrics["cnn_flops"] / metrics["dense_flops"]
        say(f"C2 100x100 inputs: dense net {metrics['dense_params']:,.0f} parameters, CNN "
            f"{metrics['cnn_params']:,.0f} ({metrics['parameter_ratio']:.1f}x fewer); the CNN costs "
            f"{metrics['flops_ratio']:.0f}x the FLOPs")
        return metrics

    return step.side_run("talk_nets", count, run_name="count-parameters 100x100", stage="count",
                    params={"input_shape": "x".join(map(str, TALK_INPUT)), "dense_hidden_units": "100,100,100",
                            "cnn": "conv3x3(100)-conv3x3(100)-global_avg_pool-dense(10)"})


# --- C3, C7, C8: the variants ---------------------------------------------------------


@step_of(FAMILY)
def plan_variants(step: StepContext) -> list[dict[str, Any]]:
    """One job per variant named in ``variants``, in the family's order."""
    return [{"variant": name} for name in VARIANTS if name in step.config.variants]


def variant_model(typed: Any, variant: str) -> tuple[str, dict[str, Any], str]:
    """``(builder, keyword arguments, description)`` of a variant."""
    vanishing, degradation, pooling = typed.vanishing, typed.degradation, typed.pooling
    if variant.startswith(("vanishing_", "sigmoid_")):
        kind, block = variant.split("_")
        activation = vanishing.activation if kind == "vanishing" else "sigmoid"
        return "deep_cnn", {"depth": vanishing.depth, "block": block, "widths": vanishing.widths,
                            "batch_norm": False, "activation": activation, "preactivation": True}, \
            f"{block} {vanishing.depth}-layer {activation} CNN, no normalisation"
    if variant.startswith("mlp_"):
        activation = variant.removeprefix("mlp_")
        return "mlp", {"hidden_units": (vanishing.mlp_units,) * vanishing.mlp_layers, "activation": activation,
                       "dropout_rate": 0.0}, f"{vanishing.mlp_layers}x{vanishing.mlp_units} {activation} MLP"
    if variant.startswith("degradation_"):
        _, block, size = variant.split("_")
        depth = degradation.depths[0 if size == "shallow" else 1]
        return "deep_cnn", {"depth": depth, "block": block, "widths": degradation.widths, "batch_norm": True}, \
            f"{block} {depth}-layer CNN with batch norm"
    if variant in ("max_pool", "strided"):
        return "cnn", {"filters": pooling.filters, "kernel_size": pooling.kernel_size, "batch_norm": False,
                       "dense_units": pooling.dense_units, "dropout_rate": 0.0, "augment_shift": 0.0,
                       "downsample": "max_pool" if variant == "max_pool" else "stride"}, \
            "CNN with 2x2 max-pooling" if variant == "max_pool" else "the same CNN, stride-2 convs instead of pooling"
    if variant == "inception":
        return "inception_cnn", {"stem_filters": typed.inception.stem_filters, "modules": typed.inception.modules}, \
            f"inception modules {'-'.join(map(str, typed.inception.modules))}"
    raise ValueError(f"variant={variant!r}: expected one of {', '.join(VARIANTS)}")


@step_of(FAMILY)
def train_variant(step: StepContext) -> dict[str, Any]:
    """Train ``step["variant"]`` with every layer's gradient norm recorded on a fixed
    batch (step 0 and every ``gradients.record_every`` steps); then test accuracy, the
    training error (inference mode, whole training split), the gradient heatmap and,
    for the pooling pair, shift agreement (C8) and the first layer's edge score against
    random filters' (C7); the max-pool net's filters and feature maps are drawn (C7)."""
    from models import build_model
    from models.cnn import layer_outputs, shift_agreement
    from pipelines import plots
    from pipelines.data.prepared import normalize_images
    from pipelines.filters import first_layer_edge_scores
    from pipelines.train import classification_scores

    typed, data, variant = step.config, step.data, step.get("variant")
    builder, kwargs, description = variant_model(typed, variant)
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (data.split(s) for s in ("train", "val", "test"))
    fixed = np.random.default_rng(typed.train.seed).choice(len(train_y), min(typed.gradients.examples,
                                                                             len(train_y)), replace=False)

    def evaluate(run: Any, model: Any, history: Any) -> dict[str, float]:
        metrics = {METRIC: classification_scores(model, test_x, test_y)[0]["accuracy"],
                   "train_error": 1.0 - classification_scores(model, train_x, train_y)[0]["accuracy"]}
        if variant in ("max_pool", "strided"):
            agreement = shift_agreement(model, test_x, typed.pooling.max_shift, test_y)
            metrics.update({f"shift_agreement_{shift}": value for shift, value in agreement["agreement"].items()})
            metrics.update({f"shifted_accuracy_{shift}": value for shift, value in agreement["accuracy"].items()})
            metrics.update(first_layer_edge_scores(model.get_layer("conv_1_1"), typed.train.seed))
        if variant == "max_pool":
            tracking.log_figure(run.run_id, plots.conv_filters(model.get_layer("conv_1_1").get_weights()[0],
                                                               f"{description}: first-layer filters"),
                                "plots/first_layer_filters.png")
            tracking.log_figure(run.run_id, plots.feature_maps(
                layer_outputs(model, normalize_images(test_x[:1])),
                f"One test image ({data.class_names[test_y[0]]}) through every layer"), "plots/feature_maps.png")
        return metrics

    trained = step.train(Training(
        variant, data=data, run_name=f"{variant} ({description})", examples=len(train_y), after=evaluate,
        params={"builder": builder, "description": description},
        train=typed.train.replace(epochs=typed.vanishing.sigmoid_epochs or typed.train.epochs)
        if variant.startswith("sigmoid_") else None,
        gradient_norms=(normalize_images(train_x[fixed]), train_y[fixed], typed.gradients.record_every),
        build=lambda: build_model(builder, input_shape=data.image_shape, num_classes=data.num_classes,
                                  name=variant, **kwargs),
        arrays=((train_x, train_y), (val_x, val_y))))
    metrics = trained["metrics"]
    say(f"{variant}: test accuracy {metrics.get(METRIC, float('nan')):.4f}, training error "
        f"{metrics.get('train_error', float('nan')):.4f}, first/last gradient at step 0 "
        f"{metrics.get('first_last_gradient_ratio', float('nan')):.2e}, {metrics['params']:,.0f} parameters, "
        f"{metrics['flops'] / 1e6:.2f} MFLOPs")
    return {**trained, "variant": variant, "description": description}


def dry_run_models(typed: Any, examples: dict[str, int]) -> list[Any]:
    """What :func:`single_neuron` and :func:`train_variant` train, for ``nnzoo run
    cnn_depth --dry-run`` (:func:`count_parameters` builds its nets and trains none)."""
    from models import build_model
    from pipelines.data.registry import get_dataset
    from pipelines.dryrun import ModelPlan, steps, stopping_note, training_examples

    dataset = get_dataset(typed.data.dataset)
    shape, classes, batch = dataset.shape, 10, typed.train.batch_size  # every dataset of the family has 10 classes
    train_examples = training_examples(typed.data, examples)
    unknown = "" if train_examples else f" (the example count of {dataset.name} is not registered: steps unknown)"
    pair = train_examples * 2 // classes
    plans = [ModelPlan(
        "single_neuron", lambda: build_model("mlp", input_shape=shape, num_classes=1, hidden_units=(),
                                             dropout_rate=0.0, name="single_neuron"),
        [(shape, "float32")], batch, steps(pair, batch, typed.neuron.fit_epochs),
        note=f"about {pair:,} training images (2 of {classes} classes) x {typed.neuron.fit_epochs} epochs, no early "
             f"stopping; then a scikit-learn LogisticRegression on the same slice (CPU, not timed){unknown}")]
    for variant in (name for name in VARIANTS if name in typed.variants):
        builder, kwargs, description = variant_model(typed, variant)
        epochs = (typed.vanishing.sigmoid_epochs or typed.train.epochs) if variant.startswith("sigmoid_") \
            else typed.train.epochs
        stopping = stopping_note(typed.train)
        plans.append(ModelPlan(
            variant, lambda builder=builder, kwargs=kwargs, variant=variant: build_model(
                builder, input_shape=shape, num_classes=classes, name=variant, **kwargs),
            [(shape, "float32")], batch, steps(train_examples, batch, epochs),
            note=f"{description}: {train_examples:,} training images x {epochs} epochs{stopping}; every layer's "
                 f"gradient norm on {typed.gradients.examples} images every {typed.gradients.record_every} steps "
                 f"comes on top{unknown}"))
    return plans


# --- register and compare -------------------------------------------------------------


@step_of(FAMILY)
def register(step: StepContext) -> dict[str, Any]:
    """Register each variant as ``nnzoo-cnn_depth-<variant>`` (once per run); ``champion``
    moves only if the test accuracy is not worse than the champion's beyond tolerance."""
    return {"versions": {result["variant"]: step.register(result["variant"], result, METRIC, result["metrics"][METRIC])
                         for result in step.mapped("train_variant", VARIANTS_HINT)}}


@step_of(FAMILY)
def compare(step: StepContext) -> dict[str, Any]:
    """On the parent run: the table of every variant, C1 and C2 numbers, step-0 gradient
    norms by layer (C3), training error per epoch of the degradation nets (C3) and shift
    agreement (C8). Accuracy vs FLOPs over every registered model (C17) is the zoo
    report's (``nnzoo report``)."""
    from pipelines import plots
    from pipelines.gradients import ratio_plot

    typed = step.config
    results = {result["variant"]: result for result in step.mapped("train_variant", VARIANTS_HINT)}
    neuron, counted = step["single_neuron"]["metrics"], step["count_parameters"]["metrics"]
    metrics: dict[str, float] = {**neuron, "parameter_ratio": counted["parameter_ratio"]}
    for variant, result in results.items():
        for key in (METRIC, "train_error", "first_last_gradient_ratio"):
            if key in result["metrics"]:
                metrics[f"{variant}_{key}"] = result["metrics"][key]
    step0 = {v: norms for v, r in results.items() if v.startswith(("vanishing_", "sigmoid_", "mlp_"))
             if (norms := _step0_norms(r["run_id"]))}
    curves = {f"{v} ({results[v]['description']})": _error_curve(results[v]["run_id"])
              for v in results if v.startswith(("vanishing_", "sigmoid_", "degradation_"))}
    pooling = {v: results[v]["metrics"] for v in ("max_pool", "strided") if v in results}
    shifts = [0, *range(1, typed.pooling.max_shift + 1)]
    return step.report(metrics, name="cnn_depth", figures={
        "plots/gradient_norms_at_init.png": step0 and ratio_plot(
            step0, "Gradient norm of each layer's kernel at initialisation"),
        "plots/training_error.png": curves and plots.lines(
            curves, "Training error per epoch (1 - training accuracy)", "epoch", "training error", log_y=True),
        "plots/shift_agreement.png": pooling and plots.lines(
            {v: (shifts, [1.0, *(m.get(f"shift_agreement_{s}", float("nan")) for s in shifts[1:])])
             for v, m in pooling.items()}, "Predictions unchanged by a shift of the input (4 directions)",
            "shift (pixels)", "agreement with the unshifted prediction")},
        text=format_report(typed, results, neuron, counted),
        data={"variants": {v: r["metrics"] for v, r in results.items()}, "single_neuron": neuron,
              "count_parameters": counted})


def format_report(typed: Any, results: Mapping[str, Mapping[str, Any]], neuron: Mapping[str, float],
                  counted: Mapping[str, float]) -> str:
    """The comparison as Markdown: C1, C2, the variants table and the C3 verdicts."""
    lines = [f"# CNN depth ({typed.profile}, {typed.data.dataset})", "",
             f"C1: single neuron {neuron['neuron_test_accuracy']:.4f} vs logistic regression "
             f"{neuron['logistic_test_accuracy']:.4f} (gap {neuron['accuracy_gap']:.4f}), weight correlation "
             f"{neuron['weight_correlation']:.3f}.", "",
             f"C2: dense 100-100-100 on 100x100: {counted['dense_params']:,.0f} parameters; two-conv CNN: "
             f"{counted['cnn_params']:,.0f}; ratio {counted['parameter_ratio']:.2f}x (the CNN needs "
             f"{counted['flops_ratio']:.0f}x the FLOPs).", "",
             "| variant | model | test acc | train error | first/last grad at init | params | MFLOPs | s |",
             "|---|---|---|---|---|---|---|---|"]
    for variant, result in results.items():
        m = result["metrics"]
        lines.append(f"| {variant} | {result['description']} | {m.get(METRIC, float('nan')):.4f} | "
                     f"{m.get('train_error', float('nan')):.4f} | {m.get('first_last_gradient_ratio', float('nan')):.2e}"
                     f" | {m['params']:,.0f} | {m['flops'] / 1e6:.2f} | {m.get('train_seconds', 0):.0f} |")
    error = {v: results[v]["metrics"]["train_error"] for v in results if v.startswith("degradation_")}
    if len(error) == 4:
        shallow, deep = typed.degradation.depths
        for block in ("plain", "residual"):
            worse = error[f"degradation_{block}_deep"] > error[f"degradation_{block}_shallow"]
            lines += ["", f"Degradation, {block}: training error {error[f'degradation_{block}_shallow']:.4f} at "
                          f"{shallow} layers, {error[f'degradation_{block}_deep']:.4f} at {deep}: the deeper net "
                          f"trains {'worse' if worse else 'no worse'}."]
    return "\n".join(lines) + "\n"


def _step0_norms(run_id: str) -> list[float]:
    recorded = tracking.load_json(run_id, "gradients/norms.json")
    if recorded is None:  # a run without recorded gradients (e.g. resumed past step 0)
        return []
    return [row[0] for row in recorded["norms"]] if recorded["steps"] and recorded["steps"][0] == 0 else []


def _error_curve(run_id: str) -> tuple[list[int], list[float]]:
    history = tracking.metric_history(run_id, "accuracy")
    return [step for step, _ in history], [1.0 - value for _, value in history]


def _subset(metrics: Mapping[str, float], keys: Sequence[str]) -> dict[str, float]:
    return {key: metrics[key] for key in keys if key in metrics}


__all__ = ["compare", "count_parameters", "plan_variants", "register", "single_neuron",
           "train_variant"]
