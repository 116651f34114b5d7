"""Style-transfer family: prepare_images -> stylize_iterative and (train_fast_stylizer ->
stylize_fast) -> compare_speed. The steps are declared in
:mod:`pipelines.configs.style_transfer`; the models and the loss in :mod:`models.style`.

The iterative method is the one place in nnzoo with its own optimisation loop: it
optimises an image, not weights. The fast stylizer trains through the kit's
:func:`~pipelines.kit.run_training` like every other model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import settings, tracking
from pipelines.configs.style_transfer import FAMILY
from pipelines.data.prepared import batches
from pipelines.data.source_style import content_photo
from pipelines.data.source_weights import choose_loss_network
from pipelines.errors import BadValueError, NnzooError
from pipelines.kit import StepContext, Training, say, step_of

TAG_LOSS_NET = tracking.tag("loss_net")
TAG_STYLE_SOURCE = tracking.tag("style_source")
MODEL = "stylizer"
RANDOM_WARNING = ("WARNING: the loss network is VGG19 with seeded random weights, not ImageNet's: texture "
                  "statistics still transfer, but expect lower quality than with the trained net")
_LOSS_NETWORKS: dict[tuple[str | None, int, str], Any] = {}


def loss_network(weights_path: str | None, seed: int, content_layer: str) -> Any:
    """The frozen VGG19 feature extractor, built once per process for each (weights, seed,
    content layer)."""
    from models.style import build_loss_network

    key = (weights_path, seed, content_layer)
    if key not in _LOSS_NETWORKS:
        _LOSS_NETWORKS[key] = build_loss_network(weights_path, seed=seed, content_layer=content_layer)
    return _LOSS_NETWORKS[key]


def perceptual_loss(typed: Any, images: dict[str, Any], content_weight: float | None = None) -> Any:
    """The family's :class:`models.style.PerceptualLoss` for the prepared style, loss net
    and content layer; another ``content_weight`` for the fast net's training."""
    from models.style import PerceptualLoss

    network = loss_network(images["loss_net_weights"], images["loss_net_seed"], images["content_layer"])
    return PerceptualLoss(network, _style_pixels(images) / np.float32(255.0),
                          content_weight=typed.style.content_weight if content_weight is None else content_weight,
                          style_weight=typed.style.style_weight, tv_weight=typed.style.tv_weight)


def _edges_label(label: str, stylised: Any, photo: Any) -> str:
    """A panel title with the result's :func:`models.style.edge_similarity` to the photo."""
    from models.style import edge_similarity

    return f"{label} (edges {edge_similarity(stylised, photo):.2f})"


def _style_pixels(images: dict[str, Any]) -> np.ndarray:
    return np.load(images["style_path"])


# --- prepare_images ---------------------------------------------------------------------------------


@step_of(FAMILY)
def prepare_images(step: StepContext) -> dict[str, Any]:
    """Read and check the style image, choose the loss network, pick the content photo;
    record all three on the parent run (the style image as an artifact). Returns
    references: the stored style image's path and fingerprint, the loss net's name and
    weights, the content photo's name."""
    from pipelines.data.source_style import load_style

    typed, parent, data = step.config, step.parent, step.data
    style = load_style(typed.style.style_image, typed.style.style_size,
                       cache_dir=settings.work_dir() / "style_downloads")
    folder = settings.ensure_writable_dir(settings.work_dir() / "style_images", "style image folder",
                                          "NNZOO_WORK_DIR or NNZOO_HOME")
    style_path = folder / f"{style.fingerprint}.npy"
    if not style_path.exists():
        np.save(style_path, style.pixels)
    chosen = choose_loss_network(typed.style.loss_net, typed.style.loss_net_seed)
    if chosen.name == "random":
        say(f"style_transfer: {RANDOM_WARNING} ({chosen.reason})")
    content_layer = typed.style.content_layer_for(chosen.name)
    names = [str(name) for name in data.get("test", "name")]
    photo = typed.iterative.content_photo or names[0]
    every = [str(name) for split in ("train", "val", "test") for name in data.get(split, "name")]
    if photo not in every:
        raise BadValueError(f"content_photo={photo!r}: not in dataset {data.name}; expected one of {', '.join(every)}")
    if photo not in names:
        say(f"style_transfer: content photo {photo} is in the training photos, so the fast net has seen it")
    out = {"style_path": str(style_path), "style_fingerprint": style.fingerprint, "style_source": style.source,
           "style_conversions": list(style.conversions), "style_shape": list(style.pixels.shape),
           "loss_net": chosen.name, "loss_net_weights": chosen.weights_path, "loss_net_seed": chosen.seed,
           "loss_net_reason": chosen.reason, "content_photo": photo, "content_layer": content_layer}
    tracking.log_params(parent, {"loss_net_used": chosen.name, "style.source": style.source,
                                 "style.fingerprint": style.fingerprint, "content_photo_used": photo,
                                 "content_layer_used": content_layer})
    tracking.set_tags(parent, {TAG_LOSS_NET: chosen.name, TAG_STYLE_SOURCE: style.source,
                               tracking.tag("loss_net_reason"): chosen.reason})
    tracking.log_image(parent, style.pixels, "images/style.png")
    tracking.log_dict(parent, out, "images/prepared.json")
    say(f"style_transfer: style {style.source} {style.pixels.shape[1]}x{style.pixels.shape[0]}"
        + (f" ({'; '.join(style.conversions)})" if style.conversions else "")
        + f", loss network {chosen.name} ({chosen.reason}), content layer {content_layer}, content photo {photo}")
    return out


def _image_params(images: dict[str, Any]) -> dict[str, Any]:
    return {"loss_net_used": images["loss_net"], "style.source": images["style_source"],
            "style.fingerprint": images["style_fingerprint"], "content_photo_used": images["content_photo"]}


def _image_tags(images: dict[str, Any]) -> dict[str, Any]:
    return {TAG_LOSS_NET: images["loss_net"], TAG_STYLE_SOURCE: images["style_source"]}


# --- stylize_iterative ----------------------------------------------------------------------------------


@step_of(FAMILY)
def stylize_iterative(step: StepContext) -> dict[str, Any]:
    """Stylise the content photo by optimisation; log the content, style, TV and total
    losses at every step, snapshots, the result beside content and style, the content
    photo's own style loss, the drop of the total loss from the first step, and how much
    of the photo's edges the result keeps (``content_edge_similarity``)."""
    from models import style as style_models
    from pipelines import plots

    typed, data, images = step.config, step.data, step["prepare_images"]
    iterative = typed.iterative
    size = iterative.image_size

    def stylise_by_optimisation(run: Any) -> dict[str, float]:
        import keras

        content = content_photo(data, images["content_photo"], size)
        loss = perceptual_loss(typed, images)
        keras.utils.set_random_seed(typed.train.seed)
        result = style_models.optimise_image(loss, content, iterative.iterations, iterative.pixel_step_size,
                                             iterative.init, seed=typed.train.seed,
                                             snapshot_every=iterative.snapshot_every)
        for number in range(len(result.history["total"])):
            run.log_metrics({f"{name}_loss": values[number] for name, values in result.history.items()},
                            step=number + 1)
        own = {name: float(value[0]) for name, value in loss.terms(content[None], loss.content_features(
            content[None])).items()}
        first = result.history["total"][0]
        metrics = {"first_total_loss": first, "final_total_loss": result.final["total"],
                   "total_loss_drop": 1.0 - result.final["total"] / first,
                   "final_content_loss": result.final["content"], "final_style_loss": result.final["style"],
                   "final_tv_loss": result.final["tv"], "content_photo_style_loss": own["style"],
                   "style_loss_vs_content_photo": result.final["style"] / max(own["style"], 1e-12),
                   "iterative_seconds": result.seconds, "iterative_seconds_per_step": result.seconds_per_step,
                   "content_edge_similarity": style_models.edge_similarity(result.image, content),
                   "image_size": float(size)}
        for number, snapshot in result.snapshots.items():
            tracking.log_image(run.run_id, snapshot, f"snapshots/step_{number:05d}.png")
        tracking.log_image(run.run_id, result.image, "images/result.png")
        tracking.log_figure(run.run_id, plots.side_by_side(
            {"content": content, "style": _style_pixels(images),
             _edges_label(f"iterative, {iterative.iterations} steps", result.image, content): result.image},
            f"Iterative stylisation ({images['loss_net']} VGG19)"), "images/side_by_side.png")
        steps = range(1, len(result.history["total"]) + 1)
        tracking.log_figure(run.run_id, plots.lines(
            {f"{name} x weight" if name != "total" else name: (steps, np.asarray(values) * weight)
             for (name, values), weight in zip(result.history.items(), (
                 typed.style.content_weight, typed.style.style_weight, typed.style.tv_weight, 1.0), strict=True)},
            f"Iterative stylisation: losses per step ({iterative.init} start)", "step", "loss", log_y=True),
            "plots/losses.png")
        say(f"iterative: total loss {first:.4g} -> {result.final['total']:.4g} "
            f"(-{100 * metrics['total_loss_drop']:.1f}%), style loss {result.final['style']:.4g} vs the content "
            f"photo's {own['style']:.4g}, edge similarity to the photo {metrics['content_edge_similarity']:.2f}, "
            f"{result.seconds_per_step:.3f} s per step at {size}x{size}")
        return metrics

    return step.side_run("iterative", stylise_by_optimisation, stage="stylize_iterative",
                    run_name=f"iterative {images['content_photo']}", data=data, params=_image_params(images),
                    labels=_image_tags(images))


# --- train_fast_stylizer ------------------------------------------------------------------------------


def random_crops(photos: np.ndarray, crop_size: int, batch_size: int, seed: int) -> Any:
    """An endless ``tf.data`` pipeline of random ``crop_size`` crops (random left-right
    flips) of uint8 photos, as float [0, 1] batches; photos smaller than the crop are
    scaled up first."""
    import tensorflow as tf

    if photos.shape[1] < crop_size or photos.shape[2] < crop_size:
        photos = tf.image.resize(photos, (max(crop_size, photos.shape[1]), max(crop_size, photos.shape[2])))
        photos = np.clip(np.asarray(photos), 0, 255).astype(np.uint8)
    def crop(photo: Any) -> Any:
        return tf.image.random_flip_left_right(tf.image.random_crop(photo, (crop_size, crop_size, 3), seed=seed),
                                               seed=seed)

    return batches(photos, batch_size, shuffle=True, seed=seed, repeat=True, each=crop)


@step_of(FAMILY)
def train_fast_stylizer(step: StepContext) -> dict[str, Any]:
    """Train the transformer net on random crops of the training photos with the
    perceptual loss (validation: the validation photos, whole); log sample outputs. The
    logged and registered model is the transformer alone."""
    from models import build_model
    from models.style import PerceptualTrainer
    from pipelines import plots

    typed, data, images = step.config, step.data, step["prepare_images"]
    fast = typed.fast
    train_photos, val_photos = data.get("train", "x"), data.get("val", "x")
    crop = fast.crop_size
    sample = content_photo(data, images["content_photo"], typed.iterative.image_size)
    content_weight = fast.content_weight_for(images["loss_net"], typed.style.content_weight)

    def build() -> Any:
        transformer = build_model("style_transformer", filters=fast.stylizer_filters,
                                  residual_blocks=fast.residual_blocks)
        trainer = PerceptualTrainer(transformer, perceptual_loss(typed, images, content_weight), crop,
                                    name="perceptual_trainer")
        trainer(np.zeros((1, crop, crop, 3), np.float32))  # builds it, so its size is known before fit
        return trainer

    def datasets() -> tuple[Any, Any]:
        return (random_crops(train_photos, crop, typed.train.batch_size, typed.train.seed),
                batches(val_photos, 1) if len(val_photos) else None)

    def after(run: Any, model: Any, history: Any) -> dict[str, float]:
        from models.style import stylise

        output = stylise(model.transformer, sample[None])[0]
        tracking.log_figure(run.run_id, plots.side_by_side(
            {"content": sample, "style": _style_pixels(images), _edges_label("fast stylizer", output, sample): output},
            f"Fast stylizer after training ({images['loss_net']} VGG19)"), "images/side_by_side.png")
        return {"training_crop": float(crop)}

    example = np.zeros((1, crop, crop, 3), np.float32)
    return step.train(Training(
        MODEL, data=data, build=build, datasets=datasets, example=example, after=after,
        run_name="fast stylizer", stage="train_fast_stylizer", tags=_image_tags(images),
        params={**_image_params(images), "crop_size": crop, "training_content_weight": content_weight},
        depends_on={"style": images["style_fingerprint"], "loss_net": images["loss_net"],
                    "content_layer": images["content_layer"],
                    "content_weight": content_weight},
        examples=fast.stylizer_steps_per_epoch * typed.train.batch_size,
        fit={"loss": None, "metrics": (), "steps_per_epoch": fast.stylizer_steps_per_epoch},
        export=lambda model: (model.transformer, example)))


def dry_run_models(typed: Any, examples: dict[str, int]) -> list[Any]:
    """What the pipeline trains, for ``nnzoo run style_transfer --dry-run``: the
    iterative stylisation (the loss network at ``iterative.image_size``, its gradient taken
    with respect to the image) and the fast stylizer followed by the loss network on the
    training crops. The loss network gets random weights here, never the ImageNet file
    (same shapes, same cost), and fixed input sizes so its activations can be counted."""
    from pipelines.data.source_weights import imagenet_obtainable
    from pipelines.dryrun import ModelPlan

    net = typed.style.loss_net
    if net == "auto":  # as choose_loss_network resolves it
        net = "imagenet" if imagenet_obtainable() else "random"
    content_layer = typed.style.content_layer_for(net)
    weights = f"{net} VGG19 to {content_layer} (random weights here)"
    iterative, fast, train = typed.iterative, typed.fast, typed.train
    size, crop = iterative.image_size, fast.crop_size
    steps = fast.stylizer_steps_per_epoch * train.epochs
    return [
        ModelPlan("iterative", lambda: _dry_run_network(content_layer, size, None), [((size, size, 3), "float32")],
                  1, iterative.iterations,
                  note=f"{iterative.iterations} Adam steps on one {size}x{size} image: the timed step is the "
                       f"gradient, with respect to the pixels, of the features of the {weights} (Gram matrices and "
                       "losses on top)"),
        ModelPlan(MODEL, lambda: _dry_run_network(content_layer, crop, typed.fast), [((crop, crop, 3), "float32")],
                  train.batch_size, steps,
                  note=f"{fast.stylizer_steps_per_epoch:,} steps per epoch x {train.epochs} epochs on {crop}x{crop} "
                       f"crops: the stylizer followed by the {weights}; not timed: the loss network's forward pass "
                       "on the crops for the content targets, the Gram matrices and the validation photos"),
    ]


def dry_run_needs(typed: Any) -> list[str]:
    """What a run needs besides its datasets and cannot have here (the dry run's errors)."""
    from pipelines.data.source_weights import missing_imagenet_weights

    missing = missing_imagenet_weights() if typed.style.loss_net == "imagenet" else ""
    return [f"style.loss_net=imagenet: {missing}"] if missing else []


def _dry_run_network(content_layer: str, size: int, fast: Any) -> Any:
    """The loss network of :func:`models.style.build_loss_network` (random weights,
    frozen) on ``size x size`` images, after the style transformer of ``fast`` (trainable)
    or, without one, after a trainable copy of the image (what the iterative method
    optimises)."""
    import math

    import keras

    from models import build_model
    from models.style import STYLE_LAYERS, CaffePreprocessing

    class Pixels(keras.layers.Layer):
        """The image being optimised: its input plus trainable pixels (zero at the start)."""

        def build(self, input_shape: Any) -> None:
            self.pixels = self.add_weight(shape=tuple(input_shape[1:]), initializer="zeros", name="pixels")

        def call(self, inputs: Any) -> Any:
            return inputs + self.pixels

        def flops_per_example(self) -> int:
            return math.prod(self.pixels.shape)

    image = keras.Input((size, size, 3), name="image")
    if fast is None:
        x, name = Pixels(name="pixels")(image), "iterative_loss_network"
    else:
        transformer = build_model("style_transformer", filters=fast.stylizer_filters,
                                  residual_blocks=fast.residual_blocks)
        # A copy on the fixed input size: the served net takes any size, which leaves its
        # activations uncounted.
        x, name = keras.models.clone_model(transformer, input_tensors=image).output, "stylizer_and_loss_network"
    vgg = keras.applications.VGG19(include_top=False, weights=None,
                                   input_tensor=CaffePreprocessing(name="caffe_preprocessing")(x))
    for layer in vgg.layers:
        if layer.name.startswith("block"):
            layer.trainable = False
    return keras.Model(image, [vgg.get_layer(layer).output for layer in (*STYLE_LAYERS, content_layer)], name=name)


# --- stylize_fast ----------------------------------------------------------------------------------------

FAST_KEYS = ("test_perceptual_loss", "test_content_loss", "test_style_loss", "fast_total_loss_at_image_size",
             "content_edge_similarity", "sizes_stylised")


@step_of(FAMILY)
def stylize_fast(step: StepContext) -> dict[str, Any]:
    """One forward pass per held-out photo (their mean perceptual loss is the registry's
    metric, lower is better), the content photo at the iterative method's size (its loss
    is what the iterative method must reach), and the content photo at each of
    ``fast.stylize_sizes`` (never the training size); then register the stylizer. How much
    of the content photo's edges the result at the iterative size keeps is logged as
    ``content_edge_similarity``, as for the iterative method."""
    from models.style import edge_similarity, stylise
    from pipelines import plots

    typed, data, images, trained = step.config, step.data, step["prepare_images"], step["train_fast_stylizer"]
    run_id = trained["run_id"]
    def measure(run: Any) -> dict[str, float]:
        transformer = tracking.load_keras_model(trained["model_uri"])
        loss = perceptual_loss(typed, images)
        photos = data.get("test", "x").astype(np.float32) / np.float32(255.0)
        outputs = stylise(transformer, photos)
        terms = loss.terms(outputs, loss.content_features(photos))
        metrics = {"test_perceptual_loss": float(np.mean(terms["total"])),
                   "test_content_loss": float(np.mean(terms["content"])),
                   "test_style_loss": float(np.mean(terms["style"]))}
        size = typed.iterative.image_size
        content = content_photo(data, images["content_photo"], size)
        fast_output = stylise(transformer, content[None])
        at_size = loss.terms(fast_output, loss.content_features(content[None]))
        metrics["fast_total_loss_at_image_size"] = float(at_size["total"][0])
        metrics["fast_style_loss_at_image_size"] = float(at_size["style"][0])
        metrics["content_edge_similarity"] = edge_similarity(fast_output[0], content)
        tracking.log_image(run_id, fast_output[0], "images/result.png")
        shapes = {}
        names = [str(name) for name in data.get("test", "name")]
        for height in typed.fast.stylize_sizes:
            width = int(1.5 * height) + 1  # odd: not a multiple of the net's two downsamplings
            resized = content_photo(data, images["content_photo"], height, width)
            output = stylise(transformer, resized[None])[0]
            if output.shape != resized.shape:
                raise RuntimeError(f"the stylizer turned a {height}x{width} image into {output.shape}")
            shapes[f"{height}x{width}"] = list(output.shape)
            tracking.log_image(run_id, output, f"stylised/size_{height}x{width}.png")
        metrics["sizes_stylised"] = float(len(shapes))
        tracking.log_dict(run_id, {"trained_on_crops": typed.fast.crop_size, "sizes": shapes,
                                   "test_photos": names}, "stylised/sizes.json")
        for index, (photo, output) in enumerate(zip(photos, outputs, strict=True)):
            tracking.log_figure(run_id, plots.side_by_side(
                {"content": photo, "style": _style_pixels(images),
                 _edges_label("fast stylizer", output, photo): output},
                f"Held-out photo {names[index]}"), f"stylised/test_{names[index]}.png")
        return metrics

    metrics = step.evaluate_into(run_id, FAST_KEYS, measure)
    decision = step.register(MODEL, trained, "test_perceptual_loss", metrics["test_perceptual_loss"],
                             higher_is_better=False)
    say(f"fast stylizer: held-out perceptual loss {metrics['test_perceptual_loss']:.4g}, "
        f"{int(metrics['sizes_stylised'])} untrained sizes stylised")
    return {"run_id": run_id, "model_uri": trained["model_uri"], "metrics": metrics, "version": decision}


# --- compare_speed -----------------------------------------------------------------------------------------


@step_of(FAMILY)
def compare_speed(step: StepContext) -> dict[str, Any]:
    """Time both methods here, one after the other in this process: seconds per image of
    the fast net against the iterative method (per step, at 100 and 500 steps and at the
    run's step count), at ``speed.timing_size`` and at the iterative run's size; and the
    fairer figure, the iterative method's time to reach the fast net's loss on the content
    photo over the fast net's time. Logged on the parent run with the results side by side."""
    from models import style as style_models
    from pipelines import plots

    typed = step.config
    images = step["prepare_images"]
    iterative, fast = step["stylize_iterative"], step["stylize_fast"]
    transformer = tracking.load_keras_model(fast["model_uri"])
    loss = perceptual_loss(typed, images)
    repeats, steps = typed.speed.timing_repeats, typed.iterative.iterations
    metrics: dict[str, float] = {}
    rows = []
    sizes = sorted({typed.speed.timing_size, typed.iterative.image_size})
    for size in sizes:
        per_step = style_models.time_iterative_step(loss, size, repeats)
        forward = style_models.time_forward(transformer, size, repeats)
        suffix = "" if size == typed.speed.timing_size else f"_at_{size}"
        metrics.update({f"iterative_seconds_per_step{suffix}": per_step, f"fast_seconds_per_image{suffix}": forward,
                        f"speedup_per_step{suffix}": per_step / forward,
                        f"speedup_100_steps{suffix}": 100 * per_step / forward,
                        f"speedup_500_steps{suffix}": 500 * per_step / forward,
                        f"speedup_run_steps{suffix}": steps * per_step / forward})
        rows.append((size, per_step, forward))
    history = [value for _step, value in tracking.metric_history(iterative["run_id"], "total_loss")]
    target = fast["metrics"]["fast_total_loss_at_image_size"]
    reached = next((number for number, value in enumerate(history, 1) if value <= target), None)
    per_step_at_size = dict((size, step) for size, step, _ in rows)[typed.iterative.image_size]
    forward_at_size = dict((size, fwd) for size, _, fwd in rows)[typed.iterative.image_size]
    if reached is not None:
        metrics["steps_to_fast_loss"] = float(reached)
        metrics["loss_matched_speedup"] = reached * per_step_at_size / forward_at_size
        matched = (f"the iterative method reached the fast net's loss {target:.4g} at step {reached}: "
                   f"{metrics['loss_matched_speedup']:.0f}x the fast net's time")
    else:
        metrics["loss_matched_speedup_lower_bound"] = len(history) * per_step_at_size / forward_at_size
        matched = (f"the iterative method did not reach the fast net's loss {target:.4g} in {len(history)} "
                   f"steps (best {min(history):.4g}): more than "
                   f"{metrics['loss_matched_speedup_lower_bound']:.0f}x the fast net's time")
    table = ["| size | iterative s/step | fast s/image | per step | 100 steps | 500 steps |",
             "|---|---|---|---|---|---|"]
    table += [f"| {size}x{size} | {step:.4f} | {fwd:.4f} | {step / fwd:.1f}x | {100 * step / fwd:.0f}x | "
              f"{500 * step / fwd:.0f}x |" for size, step, fwd in rows]
    text = "\n".join([f"# Style transfer speed ({typed.profile}, {images['loss_net']} VGG19)", "", *table, "",
                      matched, ""])
    photo = content_photo(step.data, images["content_photo"], typed.iterative.image_size)
    panels = {"content": photo, "style": _style_pixels(images)}
    for label, run_id in ((f"iterative, {steps} steps", iterative["run_id"]), ("fast, one pass", fast["run_id"])):
        result = np.asarray(tracking.load_image(run_id, "images/result.png").convert("RGB"))
        panels[_edges_label(label, result, photo)] = result
    return step.report(metrics, name="speed", text=text, figures={
        "plots/seconds_per_image.png": plots.bars(
            {f"iterative {steps} steps": steps * rows[-1][1], "iterative 100 steps": 100 * rows[-1][1],
             "fast net": rows[-1][2]}, f"Seconds per {rows[-1][0]}x{rows[-1][0]} image on this machine", "seconds"),
        "images/side_by_side.png": plots.side_by_side(
            panels, f"Style transfer ({images['loss_net']} VGG19 loss network, content at "
                    f"{images['content_layer']})")})


# --- nnzoo stylize ------------------------------------------------------------------------------------------

CHAMPION_URI = f"models:/nnzoo-{FAMILY.name}-{MODEL}@champion"
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
                  ".tiff": "TIFF"}


class StylizerUnavailableError(NnzooError, RuntimeError):
    """No stylizer at the given model URI (none registered yet, or a wrong name)."""


def stylize_command(args: Any) -> int:
    """``nnzoo stylize IMAGE --out PATH [--model M] [--max-side N]``: the result as one
    JSON line, each conversion of the input image said on stderr."""
    import json
    import sys

    result = stylize_file(args.image, args.out, model=args.model, max_side=args.max_side)
    for conversion in result["conversions"]:
        print(f"[nnzoo] {args.image}: {conversion}", file=sys.stderr)
    print(json.dumps(result, sort_keys=True))
    return 0


def stylize_file(image: str | Path, out: str | Path, model: str | None = None, max_side: int | None = None
                 ) -> dict[str, Any]:
    """Stylise a user's image with a registered stylizer and write the result.

    ``model``: a model URI (``models:/NAME@champion``, ``models:/NAME/3``, ``runs:/ID/model``),
    a registered model name (its champion), or a ``.keras`` file; default the family's
    champion. The image goes through :func:`pipelines.data.source_style.read_image`
    (grayscale and alpha converted, a longest side above ``max_side`` scaled down, missing,
    unreadable or tiny images refused). ``out``'s suffix picks the format.
    """
    from models.style import stylise
    from pipelines.data.source_style import MAX_SIDE, MIN_SIDE, ImageError, read_image

    if max_side is not None and max_side < MIN_SIDE:
        raise ImageError(f"--max-side {max_side}: expected at least {MIN_SIDE}")
    target = Path(out).expanduser()
    fmt = OUTPUT_FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise ImageError(f"--out {out}: unknown image format {target.suffix or '(no suffix)'!r}; "
                         f"expected one of {', '.join(OUTPUT_FORMATS)}")
    read = read_image(image, what="image", max_side=max_side or MAX_SIDE)
    transformer, uri = load_stylizer(model)
    started = time.perf_counter()
    output = stylise(transformer, read.pixels[None].astype(np.float32) / np.float32(255.0))[0]
    seconds = time.perf_counter() - started
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.round(output * 255.0), 0, 255).astype(np.uint8)).save(target, format=fmt)
    return {"out": str(target), "model": uri, "height": int(output.shape[0]), "width": int(output.shape[1]),
            "conversions": list(read.conversions), "seconds": seconds}


def load_stylizer(model: str | None) -> tuple[Any, str]:
    """The stylizer Keras model (loaded in Keras safe mode) and the URI it came from."""
    import keras

    uri = model or CHAMPION_URI
    path = Path(uri).expanduser()
    if path.suffix == ".keras":
        if not path.is_file():
            raise StylizerUnavailableError(f"--model {uri}: no such file")
        from models import model_names

        model_names()  # registers nnzoo's Keras layers
        return keras.saving.load_model(path, safe_mode=True), str(path)
    if ":" not in uri:
        uri = f"models:/{uri}@champion"
    try:
        return tracking.load_keras_model(uri), uri
    except Exception as error:  # MLflow raises several types for a missing name, version or alias
        raise StylizerUnavailableError(
            f"no stylizer at {uri} in the MLflow store {tracking.configure()} ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:300]}); train one with `nnzoo run style_transfer` or pass --model"
        ) from None
