"""Style-transfer family: prepare_images -> stylize_iterative and (train_fast_stylizer ->
stylize_fast) -> compare_speed. The steps are declared in
:mod:`pipelines.configs.style_transfer`; the models and the loss in :mod:`models.style`.

The iterative method is the one place in nnzoo with its own optimisation loop: it
optimises an image, not weights. The fast stylizer trains through the kit's
:func:`~pipelines.kit.run_training` like every other model.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import settings, tracking
from pipelines.configs.style_transfer import FAMILY
from pipelines.data.prepared import batches
from pipelines.errors import BadValueError, NnzooError
from pipelines.kit import StepContext, Training, say, step_of

TAG_LOSS_NET = tracking.tag("loss_net")
TAG_STYLE_SOURCE = tracking.tag("style_source")
MODEL = "stylizer"
IMAGENET_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_WEIGHTS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
                        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")
IMAGENET_WEIGHTS_HASH = "253f8cb515780f3b799900260a226db6"
DOWNLOAD_VARIABLE = "NNZOO_ALLOW_DOWNLOAD"
RANDOM_WARNING = ("WARNING: the loss network is VGG19 with seeded random weights, not ImageNet's: texture "
                  "statistics still transfer, but expect lower quality than with the trained net")


class LossNetworkUnavailableError(NnzooError, RuntimeError):
    """The ImageNet loss network was asked for and its weights cannot be had here."""


# --- the loss network -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LossNetChoice:
    name: str
    """``imagenet`` or ``random``: the net actually used."""
    weights_path: str | None
    seed: int
    reason: str


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def choose_loss_network(choice: str, seed: int = 0) -> LossNetChoice:
    """Resolve ``auto`` / ``imagenet`` / ``random`` to the net that will be used.

    ImageNet weights are taken from the Keras cache; they are downloaded only when the
    user allows it (``NNZOO_ALLOW_DOWNLOAD=1``). ``imagenet`` without them is an error that
    says what to do; ``auto`` falls back to the seeded random net and says so.
    """
    if choice not in ("auto", "imagenet", "random"):
        raise ValueError(f"loss_net={choice!r}: expected auto, imagenet or random")
    cached = keras_cache_dir() / IMAGENET_WEIGHTS_FILE
    if choice == "random":
        return LossNetChoice("random", None, seed, "asked for")
    if cached.is_file():
        return LossNetChoice("imagenet", str(cached), seed, f"ImageNet weights from {cached}")
    if os.environ.get(DOWNLOAD_VARIABLE) == "1":
        import keras

        path = keras.utils.get_file(IMAGENET_WEIGHTS_FILE, IMAGENET_WEIGHTS_URL, cache_subdir="models",
                                    cache_dir=str(keras_cache_dir().parent), file_hash=IMAGENET_WEIGHTS_HASH)
        return LossNetChoice("imagenet", str(path), seed, f"ImageNet weights downloaded to {path}")
    missing = (f"the ImageNet VGG19 weights are not in the Keras cache ({cached}) and downloads are off "
               f"({DOWNLOAD_VARIABLE}=1 allows one, about 80 MB)")
    if choice == "imagenet":
        raise LossNetworkUnavailableError(f"loss_net=imagenet: {missing}; or choose loss_net=random")
    return LossNetChoice("random", None, seed, f"auto: {missing}")


_LOSS_NETWORKS: dict[tuple[str | None, int], Any] = {}


def loss_network(weights_path: str | None, seed: int) -> Any:
    """The frozen VGG19 feature extractor, built once per process for each (weights, seed)."""
    from models.style import build_loss_network

    key = (weights_path, seed)
    if key not in _LOSS_NETWORKS:
        _LOSS_NETWORKS[key] = build_loss_network(weights_path, seed=seed)
    return _LOSS_NETWORKS[key]


def perceptual_loss(typed: Any, images: dict[str, Any]) -> Any:
    """The family's :class:`models.style.PerceptualLoss` for the prepared style and loss net."""
    from models.style import PerceptualLoss

    network = loss_network(images["loss_net_weights"], images["loss_net_seed"])
    return PerceptualLoss(network, _style_pixels(images) / np.float32(255.0),
                          content_weight=typed.style.content_weight, style_weight=typed.style.style_weight,
                          tv_weight=typed.style.tv_weight)


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
           "loss_net_reason": chosen.reason, "content_photo": photo}
    tracking.log_params(parent, {"loss_net_used": chosen.name, "style.source": style.source,
                                 "style.fingerprint": style.fingerprint, "content_photo_used": photo})
    tracking.set_tags(parent, {TAG_LOSS_NET: chosen.name, TAG_STYLE_SOURCE: style.source,
                               tracking.tag("loss_net_reason"): chosen.reason})
    tracking.log_bytes(parent, png_bytes(style.pixels), "images/style.png")
    tracking.log_dict(parent, out, "images/prepared.json")
    say(f"style_transfer: style {style.source} {style.pixels.shape[1]}x{style.pixels.shape[0]}"
        + (f" ({'; '.join(style.conversions)})" if style.conversions else "")
        + f", loss network {chosen.name} ({chosen.reason}), content photo {photo}")
    return out


def _image_params(images: dict[str, Any]) -> dict[str, Any]:
    return {"loss_net_used": images["loss_net"], "style.source": images["style_source"],
            "style.fingerprint": images["style_fingerprint"], "content_photo_used": images["content_photo"]}


def _image_tags(images: dict[str, Any]) -> dict[str, Any]:
    return {TAG_LOSS_NET: images["loss_net"], TAG_STYLE_SOURCE: images["style_source"]}


def content_photo(data: Any, name: str, height: int, width: int | None = None) -> np.ndarray:
    """The named photo of the prepared dataset, float RGB [0, 1] at ``height x width``."""
    from pipelines.data.source_style import resize

    for split in ("test", "val", "train"):
        names = [str(n) for n in data.get(split, "name")]
        if name in names:
            pixels = data.get(split, "x")[names.index(name)]
            return resize(pixels, height, width or height).astype(np.float32) / np.float32(255.0)
    raise ValueError(f"photo {name!r} is not in dataset {data.name}")


# --- stylize_iterative ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Optimised:
    image: np.ndarray
    history: dict[str, list[float]]
    """Per step (the image before that step's update): content, style, tv, total."""
    final: dict[str, float]
    snapshots: dict[int, np.ndarray]
    seconds: float
    seconds_per_step: float


def optimise_image(loss: Any, content: np.ndarray, steps: int, step_size: float, init: str, seed: int = 0,
                   snapshot_every: int = 0, stop_at: float | None = None) -> Optimised:
    """Gatys et al.'s method: Adam on the pixels of one image (kept in [0, 1]) to minimise
    ``loss`` against ``content``'s features and the style. ``init`` is ``noise`` (uniform)
    or ``content``. ``stop_at``: stop after the first step whose total loss is at most this."""
    import keras
    import tensorflow as tf

    if init not in ("noise", "content"):
        raise ValueError(f"init={init!r}: expected noise or content")
    target = loss.content_features(content[None])
    start = np.random.default_rng(seed).random(content.shape, dtype=np.float32) if init == "noise" else content
    image = tf.Variable(np.asarray(start, np.float32)[None])
    optimizer = keras.optimizers.Adam(step_size)

    @tf.function
    def step() -> dict[str, Any]:
        with tf.GradientTape() as tape:
            terms = loss.terms(image, target)
            total = tf.reduce_mean(terms["total"])
        optimizer.apply_gradients([(tape.gradient(total, image), image)])
        image.assign(tf.clip_by_value(image, 0.0, 1.0))
        return {name: value[0] for name, value in terms.items()}

    history: dict[str, list[float]] = {"content": [], "style": [], "tv": [], "total": []}
    snapshots = {0: np.asarray(start)}
    started = time.perf_counter()
    after_first = started
    for number in range(1, steps + 1):
        for name, value in step().items():
            history[name].append(float(value))
        if number == 1:
            after_first = time.perf_counter()  # the first step traces the graph
        if snapshot_every and (number % snapshot_every == 0 or number == steps):
            snapshots[number] = image.numpy()[0]
        if stop_at is not None and history["total"][-1] <= stop_at:
            break
    steps = len(history["total"])
    ended = time.perf_counter()
    final = {name: float(value[0]) for name, value in loss.terms(image, target).items()}
    per_step = (ended - after_first) / (steps - 1) if steps > 1 else ended - started
    return Optimised(image.numpy()[0], history, final, snapshots, ended - started, per_step)


@step_of(FAMILY)
def stylize_iterative(step: StepContext) -> dict[str, Any]:
    """Stylise the content photo by optimisation; log the content, style, TV and total
    losses at every step, snapshots, the result beside content and style, the content
    photo's own style loss, and the drop of the total loss from the first step."""
    from pipelines import plots

    typed, data, images = step.config, step.data, step["prepare_images"]
    iterative = typed.iterative
    size = iterative.image_size

    def stylise_by_optimisation(run: Any) -> dict[str, float]:
        import keras

        content = content_photo(data, images["content_photo"], size)
        loss = perceptual_loss(typed, images)
        keras.utils.set_random_seed(typed.train.seed)
        result = optimise_image(loss, content, iterative.iterations, iterative.pixel_step_size, iterative.init,
                                seed=typed.train.seed, snapshot_every=iterative.snapshot_every)
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
                   "image_size": float(size)}
        for number, snapshot in result.snapshots.items():
            tracking.log_bytes(run.run_id, png_bytes(snapshot), f"snapshots/step_{number:05d}.png")
        tracking.log_bytes(run.run_id, png_bytes(result.image), "images/result.png")
        tracking.log_figure(run.run_id, side_by_side(
            {"content": content, "style": _style_pixels(images), f"iterative, {iterative.iterations} steps":
             result.image}, f"Iterative stylisation ({images['loss_net']} VGG19)"), "images/side_by_side.png")
        steps = range(1, len(result.history["total"]) + 1)
        tracking.log_figure(run.run_id, plots.lines(
            {f"{name} x weight" if name != "total" else name: (steps, np.asarray(values) * weight)
             for (name, values), weight in zip(result.history.items(), (
                 typed.style.content_weight, typed.style.style_weight, typed.style.tv_weight, 1.0), strict=True)},
            f"Iterative stylisation: losses per step ({iterative.init} start)", "step", "loss", log_y=True),
            "plots/losses.png")
        say(f"iterative: total loss {first:.4g} -> {result.final['total']:.4g} "
            f"(-{100 * metrics['total_loss_drop']:.1f}%), style loss {result.final['style']:.4g} vs the content "
            f"photo's {own['style']:.4g}, {result.seconds_per_step:.3f} s per step at {size}x{size}")
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

    typed, data, images = step.config, step.data, step["prepare_images"]
    fast = typed.fast
    train_photos, val_photos = data.get("train", "x"), data.get("val", "x")
    crop = fast.crop_size
    sample = content_photo(data, images["content_photo"], typed.iterative.image_size)

    def build() -> Any:
        transformer = build_model("style_transformer", filters=fast.stylizer_filters,
                                  residual_blocks=fast.residual_blocks)
        trainer = PerceptualTrainer(transformer, perceptual_loss(typed, images), crop, name="perceptual_trainer")
        trainer(np.zeros((1, crop, crop, 3), np.float32))  # builds it, so its size is known before fit
        return trainer

    def datasets() -> tuple[Any, Any]:
        return (random_crops(train_photos, crop, typed.train.batch_size, typed.train.seed),
                batches(val_photos, 1) if len(val_photos) else None)

    def after(run: Any, model: Any, history: Any) -> dict[str, float]:
        from models.style import stylise

        output = stylise(model.transformer, sample[None])[0]
        tracking.log_figure(run.run_id, side_by_side(
            {"content": sample, "style": _style_pixels(images), "fast stylizer": output},
            f"Fast stylizer after training ({images['loss_net']} VGG19)"), "images/side_by_side.png")
        return {"training_crop": float(crop)}

    example = np.zeros((1, crop, crop, 3), np.float32)
    return step.train(Training(
        MODEL, data=data, build=build, datasets=datasets, example=example, after=after,
        run_name="fast stylizer", stage="train_fast_stylizer", tags=_image_tags(images),
        params={**_image_params(images), "crop_size": crop},
        depends_on={"style": images["style_fingerprint"], "loss_net": images["loss_net"]},
        examples=fast.stylizer_steps_per_epoch * typed.train.batch_size,
        fit={"loss": None, "metrics": (), "steps_per_epoch": fast.stylizer_steps_per_epoch},
        export=lambda model: (model.transformer, example)))


# --- stylize_fast ----------------------------------------------------------------------------------------

FAST_KEYS = ("test_perceptual_loss", "test_content_loss", "test_style_loss", "fast_total_loss_at_image_size",
             "sizes_stylised")


@step_of(FAMILY)
def stylize_fast(step: StepContext) -> dict[str, Any]:
    """One forward pass per held-out photo (their mean perceptual loss is the registry's
    metric, lower is better), the content photo at the iterative method's size (its loss
    is what the iterative method must reach), and the content photo at each of
    ``fast.stylize_sizes`` (never the training size); then register the stylizer."""
    from models.style import stylise

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
        tracking.log_bytes(run_id, png_bytes(fast_output[0]), "images/result.png")
        shapes = {}
        names = [str(name) for name in data.get("test", "name")]
        for height in typed.fast.stylize_sizes:
            width = int(1.5 * height) + 1  # odd: not a multiple of the net's two downsamplings
            resized = content_photo(data, images["content_photo"], height, width)
            output = stylise(transformer, resized[None])[0]
            if output.shape != resized.shape:
                raise RuntimeError(f"the stylizer turned a {height}x{width} image into {output.shape}")
            shapes[f"{height}x{width}"] = list(output.shape)
            tracking.log_bytes(run_id, png_bytes(output), f"stylised/size_{height}x{width}.png")
        metrics["sizes_stylised"] = float(len(shapes))
        tracking.log_dict(run_id, {"trained_on_crops": typed.fast.crop_size, "sizes": shapes,
                                   "test_photos": names}, "stylised/sizes.json")
        for index, (photo, output) in enumerate(zip(photos, outputs, strict=True)):
            tracking.log_figure(run_id, side_by_side(
                {"content": photo, "style": _style_pixels(images), "fast stylizer": output},
                f"Held-out photo {names[index]}"), f"stylised/test_{names[index]}.png")
        return metrics

    metrics = step.evaluate_into(run_id, FAST_KEYS, measure)
    decision = step.register(MODEL, trained, "test_perceptual_loss", metrics["test_perceptual_loss"],
                             higher_is_better=False)
    say(f"fast stylizer: held-out perceptual loss {metrics['test_perceptual_loss']:.4g}, "
        f"{int(metrics['sizes_stylised'])} untrained sizes stylised")
    return {"run_id": run_id, "model_uri": trained["model_uri"], "metrics": metrics, "version": decision}


# --- compare_speed -----------------------------------------------------------------------------------------


def time_iterative_step(loss: Any, size: int, repeats: int, seed: int = 0) -> float:
    """Median seconds of one optimisation step on a ``size x size`` image (after a warm-up)."""
    content = np.random.default_rng(seed).random((size, size, 3), dtype=np.float32)
    result = optimise_image(loss, content, repeats + 1, 0.01, "content")
    return result.seconds_per_step


def time_forward(transformer: Any, size: int, repeats: int, seed: int = 0) -> float:
    """Median seconds of one stylizer forward pass on a ``size x size`` image (after a warm-up)."""
    import tensorflow as tf

    image = tf.constant(np.random.default_rng(seed).random((1, size, size, 3), dtype=np.float32))
    forward = tf.function(lambda batch: transformer(batch, training=False))
    forward(image)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        np.asarray(forward(image))
        times.append(time.perf_counter() - started)
    return float(np.median(times))


@step_of(FAMILY)
def compare_speed(step: StepContext) -> dict[str, Any]:
    """Time both methods here, one after the other in this process: seconds per image of
    the fast net against the iterative method (per step, at 100 and 500 steps and at the
    run's step count), at ``speed.timing_size`` and at the iterative run's size; and the
    fairer figure, the iterative method's time to reach the fast net's loss on the content
    photo over the fast net's time. Logged on the parent run with the results side by side."""
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
        per_step = time_iterative_step(loss, size, repeats)
        forward = time_forward(transformer, size, repeats)
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
    panels = {"content": content_photo(step.data, images["content_photo"], typed.iterative.image_size),
              "style": _style_pixels(images)}
    for label, run_id in ((f"iterative, {steps} steps", iterative["run_id"]), ("fast, one pass", fast["run_id"])):
        panels[label] = _artifact_image(run_id, "images/result.png")
    return step.report(metrics, name="speed", text=text, figures={
        "plots/seconds_per_image.png": plots.bars(
            {f"iterative {steps} steps": steps * rows[-1][1], "iterative 100 steps": 100 * rows[-1][1],
             "fast net": rows[-1][2]}, f"Seconds per {rows[-1][0]}x{rows[-1][0]} image on this machine", "seconds"),
        "images/side_by_side.png": side_by_side(panels, f"Style transfer ({images['loss_net']} VGG19 loss network)")})


def _artifact_image(run_id: str, path: str) -> np.ndarray:
    import io

    from PIL import Image

    data = tracking.load_artifact(run_id, path)
    if data is None:
        raise FileNotFoundError(f"run {run_id} has no artifact {path}")
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# --- pictures ----------------------------------------------------------------------------------------------


def png_bytes(image: np.ndarray) -> bytes:
    """A PNG of a float [0, 1] or uint8 RGB image."""
    import io

    from PIL import Image

    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def side_by_side(panels: dict[str, np.ndarray], title: str) -> Any:
    """Images of any sizes in one row, each titled."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.4), squeeze=False)
    for axis, (label, image) in zip(axes[0], panels.items(), strict=True):
        pixels = np.asarray(image)
        axis.imshow(pixels if pixels.dtype == np.uint8 else np.clip(pixels, 0.0, 1.0))
        axis.set_title(label, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title)
    figure.tight_layout()
    return figure



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
