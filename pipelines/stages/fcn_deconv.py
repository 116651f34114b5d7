"""FCN and deconvolution family: prepare_scenes -> (convert_to_fcn -> detect),
(train_segmenter -> evaluate_segmenter), (train_generator -> evaluate_generator).
The steps are declared in :mod:`pipelines.configs.fcn_deconv`."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines import tracking
from pipelines.config import DataConfig
from pipelines.configs.fcn_deconv import FAMILY
from pipelines.data.prepared import batches
from pipelines.errors import BadValueError
from pipelines.kit import TAG_MODEL_URI, StepContext, Training, say, step_of
from pipelines.runner import model_from

CLASSIFIER = next(use.registered for use in FAMILY.uses if use.name == "classifier")
TAG_CLASSIFIER = tracking.tag("classifier")
PREVIEW = 8
FCN_FIGURES = ("plots/heatmaps_by_size.png", "plots/heatmaps_over_scenes.png", "plots/detections.png")
"""The converted net's figures (in its run) that the parent run carries too."""


def _truth(boxes: np.ndarray, digits: np.ndarray) -> list[tuple[str, tuple[float, ...]]]:
    return [(str(int(d)), tuple(float(v) for v in box)) for box, d in zip(boxes, digits, strict=True) if d >= 0]


def scored_scenes(data: Any, key: str) -> np.ndarray:
    """Array ``key`` (``x`` or ``mask``) of the test split as it is scored: for scenes, their
    drawing in the digits no training scene holds (``unseen_<key>``, see
    :mod:`pipelines.data.source_scenes`); other data as it is."""
    return data.get("test", f"unseen_{key}" if f"test_unseen_{key}" in data.arrays else key)


# --- scenes -------------------------------------------------------------------------------


@step_of(FAMILY)
def prepare_scenes(step: StepContext) -> dict[str, Any]:
    """Sample scenes with their boxes and masks, and the posed digits, on the parent run;
    prepares (or finds stored) the posed-digit set and returns its reference."""
    from pipelines import plots
    from pipelines.data.prepared import prepare

    typed, parent, scenes = step.config, step.parent, step.data
    images, masks = scored_scenes(scenes, "x")[:PREVIEW], scored_scenes(scenes, "mask")[:PREVIEW]
    truth = [_truth(b, d) for b, d in zip(scenes.get("test", "boxes")[:PREVIEW], scenes.get("test", "digits")[:PREVIEW], strict=True)]
    tracking.log_figure(parent, plots.detections(images, truth, [[] for _ in truth],
                                                 f"{scenes.name}: test scenes and their boxes"),
                        "scenes/boxes.png")
    tracking.log_figure(parent, plots.segmentations(images, masks, None, len(scenes.class_names),
                                                    f"{scenes.name}: test scenes and their per-pixel classes",
                                                    class_names=scenes.class_names), "scenes/masks.png")
    posed = prepare(DataConfig(dataset="posed_digits", split_seed=typed.data.split_seed, val_fraction=0.1,
                               test_fraction=0.1, data_dir=typed.data.data_dir),
                    params={"digits_from": typed.data.digits_from, **{key: getattr(typed.generator, key) for key in (
                        "poses", "rotation_max", "pose_scale_min", "pose_scale_max", "writers", "pose_seed")}})
    sample = np.arange(min(40, posed.sizes["train"]))
    pose = posed.get("train", "pose")[sample]
    tracking.log_figure(parent, plots.image_grid(
        posed.get("train", "x")[sample], [f"{y} {p[0]:+.0f}° x{p[1]:.2f} {int(p[2]):+d}" for y, p in
                                          zip(posed.get("train", "y")[sample], pose, strict=True)],
        "posed digits: class, rotation, scale, stroke"), "scenes/posed_digits.png")
    tracking.log_params(parent, {"posed.fingerprint": posed.fingerprint,
                                 **{f"posed.{split}_size": size for split, size in posed.sizes.items()}})
    say(f"fcn_deconv: {scenes.sizes} scenes {scenes.shape('x')}, {posed.sizes} posed digits")
    return {"posed_uri": posed.uri, "posed_fingerprint": posed.fingerprint}


# --- the classifier and its conversion ---------------------------------------------------


def _canvas(size: str) -> tuple[int, int]:
    height, _, width = size.partition("x")
    return int(height), int(width)


@step_of(FAMILY)
def convert_to_fcn(step: StepContext) -> dict[str, Any]:
    """Rewrite the classifier fully convolutional; check it equals the CNN on 28x28
    inputs (max abs difference on held-out digits and on random inputs) and run it on
    the configured canvas sizes (heatmap shapes, heatmaps over scenes). The converted
    net is logged here and registered by ``detect``."""
    from models.fcn import FcnConversionError, geometry
    from models.fcn import convert_to_fcn as convert
    from pipelines import plots
    from pipelines.data.prepared import normalize_images
    from pipelines.data.source_scenes import held_out_digits, make_scenes

    typed, scenes = step.config, step.data

    def convert_classifier(run: Any) -> dict[str, float]:
        classifier = model_from(FAMILY, typed, step.inputs, "classifier")
        tracking.rename_run(run.run_id, f"fcn from cnn v{classifier['version']}")
        cnn = tracking.load_keras_model(classifier["model_uri"])
        try:
            fcn = convert(cnn, name="digit_fcn")
        except FcnConversionError as error:
            raise BadValueError(f"classifier_version={typed.classifier.classifier_version}: {CLASSIFIER} "
                                f"v{classifier['version']} cannot be converted: {error}") from error
        shape = geometry(fcn)
        digits, labels = held_out_digits(typed.data.digits_from, typed.data.digit_holdout, typed.data.data_dir)
        rng = np.random.default_rng(0)
        checks = {"held_out_digits": normalize_images(digits[:256, ..., None]),
                  "random_inputs": rng.random((64, *cnn.inputs[0].shape[1:])).astype(np.float32)}
        difference = {name: float(np.abs(cnn.predict(x, verbose=0) - fcn.predict(x, verbose=0)[:, 0, 0]).max())
                      for name, x in checks.items()}
        sizes = {}
        overlays = []
        for size in typed.detection.heatmap_sizes:
            height, width = _canvas(size)
            try:
                shape.check(height, width)
            except ValueError as error:
                raise BadValueError(f"heatmap_sizes={size}: {error}") from error
            scale_max = min(typed.data.scale_max, min(height, width) / 28)
            canvas = make_scenes(np.random.default_rng(1), digits, labels, scenes=1, height=height, width=width,
                                 digits=(1, typed.data.digits_max), scales=(min(typed.data.scale_min, scale_max),
                                                                            scale_max))
            heat = fcn.predict(normalize_images(canvas["x"]), verbose=0)[0]
            sizes[size] = list(heat.shape[:2])
            if list(heat.shape[:2]) != list(shape.heatmap_shape(height, width)):
                raise RuntimeError(f"heatmap of a {size} input is {heat.shape[:2]}, expected "
                                   f"{shape.heatmap_shape(height, width)}")
            present = [int(d) for d in canvas["digits"][0] if d >= 0][:3]
            overlays.append((canvas["x"][0], [(f"p({d})", heat[..., d]) for d in present]))
        run.log_params({"classifier.name": classifier["name"], "classifier.version": classifier["version"],
                        "classifier.run_id": classifier["run_id"], "classifier.profile": classifier["profile"],
                        "classifier.trained_here": classifier["trained_here"],
                        "fcn.window": f"{shape.window[0]}x{shape.window[1]}",
                        "fcn.stride": f"{shape.stride[0]}x{shape.stride[1]}"})
        tracking.log_dict(run.run_id, {"heatmap_shapes": sizes, "window": shape.window, "stride": shape.stride,
                                       "max_abs_difference": difference}, "fcn/geometry.json")
        tracking.log_figure(run.run_id, plots.heatmaps(
            [o[0] for o in overlays], [o[1] for o in overlays], shape.window, shape.stride,
            "class heatmaps of the converted net on canvases of other sizes"), "plots/heatmaps_by_size.png")
        tracking.log_summary(run.run_id, fcn)
        model_uri = tracking.log_keras_model(run.run_id, fcn, checks["held_out_digits"][:2])
        run.set_tags({TAG_CLASSIFIER: f"{classifier['name']}/{classifier['version']}", TAG_MODEL_URI: model_uri})
        say(f"fcn: {classifier['name']} v{classifier['version']} ({classifier['profile']}) converted; window "
            f"{shape.window}, stride {shape.stride}; max |CNN - FCN| on 28x28 = {max(difference.values()):.2e}; "
            f"heatmaps {sizes}")
        return {"max_abs_difference": max(difference.values()),
                **{f"max_abs_difference_{name}": value for name, value in difference.items()},
                "params": float(fcn.count_params())}

    converted = step.side_run("fcn", convert_classifier, stage="convert", data=scenes,
                         done=lambda run: TAG_CLASSIFIER in run.data.tags)
    return _fcn_outputs(tracking.get_run(converted["run_id"]))


def _fcn_outputs(run: Any) -> dict[str, Any]:
    params = run.data.params
    name, _, version = run.data.tags[TAG_CLASSIFIER].rpartition("/")
    return {"run_id": run.info.run_id, "model_uri": run.data.tags[TAG_MODEL_URI],
            "classifier": {"name": name, "version": version, "model_uri": f"models:/{name}/{version}",
                           "profile": params.get("classifier.profile")},
            "metrics": dict(run.data.metrics)}


# --- detection ----------------------------------------------------------------------------


@step_of(FAMILY)
def detect(step: StepContext) -> dict[str, Any]:
    """Boxes from the converted net's heatmaps on the test scenes (drawn in digits no
    training scene holds), scored at ``match_iou``; also the figures without re-centring
    (peaks only). Logged in the conversion's run, which is then registered as
    ``nnzoo-fcn_deconv-fcn``; the parent run gets a copy of its heatmaps and detections
    (:data:`FCN_FIGURES`)."""
    from models.fcn import find_boxes, geometry, pyramid, score_detections
    from pipelines import plots
    from pipelines.data.prepared import normalize_images

    typed, scenes, converted = step.config, step.data, step["convert_to_fcn"]
    detection = typed.detection
    count = min(detection.detect_scenes, scenes.sizes["test"])
    images = scored_scenes(scenes, "x")[:count]
    boxes, digits = scenes.get("test", "boxes")[:count], scenes.get("test", "digits")[:count]
    keys = ("detection_precision", "detection_recall", "detection_f1")

    def measure(run: Any) -> dict[str, float]:
        fcn = tracking.load_keras_model(converted["model_uri"])
        shape = geometry(fcn)
        maps = pyramid(fcn, shape, normalize_images(images), detection.detection_scales)
        if len(maps) < len(detection.detection_scales):
            say(f"detect: {len(detection.detection_scales) - len(maps)} of the scales shrink {images.shape[1:3]} "
                f"scenes below the {shape.window} window; skipped")
        if not maps:
            raise BadValueError(f"no detection scale fits {images.shape[1]}x{images.shape[2]} images with the "
                                f"{shape.window} window: use smaller detection_scales or larger canvases")
        found = {mode: [find_boxes(maps, n, images[n], shape, threshold=detection.score_threshold,
                                   overlap=detection.nms_overlap, recentre=mode == "recentred")
                        for n in range(count)] for mode in ("recentred", "peaks_only")}
        metrics = score_detections(found["recentred"], boxes, digits, detection.match_iou)
        metrics.update({f"{key}_peaks_only": value for key, value in
                        score_detections(found["peaks_only"], boxes, digits, detection.match_iou).items()
                        if key in keys})
        metrics["detect_scenes"] = float(count)
        shown = range(min(PREVIEW, count))
        tracking.log_figure(run.run_id, plots.detections(
            images[list(shown)], [_truth(boxes[n], digits[n]) for n in shown],
            [[(f"{label} {score:.3f}", box) for label, score, box in found["recentred"][n]] for n in shown],
            f"boxes from heatmaps: precision {metrics['detection_precision']:.3f}, recall "
            f"{metrics['detection_recall']:.3f} at IoU {detection.match_iou} (green: true, red: found)"),
            "plots/detections.png")
        heat = maps[0][0]
        tracking.log_figure(run.run_id, plots.heatmaps(
            normalize_images(images[:4]), [[(f"p({d})", heat[n][..., d]) for d in digits[n] if d >= 0][:3]
                                           for n in range(min(4, count))],
            shape.window, shape.stride, f"class heatmaps over test scenes (scale {detection.detection_scales[0]})"),
            "plots/heatmaps_over_scenes.png")
        return metrics

    metrics = step.evaluate_into(converted["run_id"], keys, measure, reuse_all=True)
    say(f"detect: precision {metrics['detection_precision']:.3f}, recall {metrics['detection_recall']:.3f} at IoU "
        f"{detection.match_iou} on {count} test scenes (peaks only, no re-centring: "
        f"{metrics['detection_precision_peaks_only']:.3f} / {metrics['detection_recall_peaks_only']:.3f})")
    step.report({**{key: metrics[key] for key in keys},
                 "max_abs_difference": converted["metrics"]["max_abs_difference"]})
    for path in FCN_FIGURES:  # read from the run, so a reused evaluation shows them too
        picture = tracking.load_artifact(converted["run_id"], path)
        if picture is not None:
            tracking.log_bytes(step.parent, picture, path)
    decision = step.register("fcn", converted, "detection_f1", metrics["detection_f1"])
    return {"metrics": metrics, "version": decision, "classifier": converted["classifier"]}


# --- segmentation -------------------------------------------------------------------------


def _segmentation_batches(images: np.ndarray, masks: np.ndarray, batch: int, *, shuffle: bool, seed: int,
                          crop: int = 0, digit_weight: float = 1.0) -> Any:
    """Batches of (image, mask), or (image, mask, per-pixel loss weight) when
    ``digit_weight`` is not 1: a pixel that is not background (class 0) weighs that much."""
    import tensorflow as tf

    def cut(image: Any, mask: Any) -> Any:  # one random window of image and mask together
        both = tf.concat([tf.cast(image, tf.int32), tf.cast(mask, tf.int32)[..., None]], axis=-1)
        both = tf.image.random_crop(both, (crop, crop, both.shape[-1]), seed=seed)
        return both[..., :-1], both[..., -1]

    def weigh(x: Any, y: Any) -> Any:
        y = tf.cast(y, tf.int32)
        return (x, y) if digit_weight == 1.0 else (x, y, tf.where(y > 0, digit_weight, 1.0))

    return batches((images, masks), batch, shuffle=shuffle, seed=seed, each=cut if crop else None, batched=weigh)


def _check_divisible(height: int, width: int, step: int, what: str = "canvas") -> None:
    if height % step or width % step:
        raise BadValueError(f"{what} {height}x{width}: the segmenter halves the resolution and doubles it back, so "
                         f"both sides must be multiples of {step} (stem_stride * 2**len(filters)), e.g. "
                         f"{max(height // step, 1) * step}x{max(width // step, 1) * step}")


def _train_one_segmenter(step: StepContext, data: Any, key: str, name: str,
                         fcn_uri: str | None = None) -> dict[str, Any]:
    """The segmenter on ``data``; with ``fcn_uri`` its encoder is that converted classifier."""
    from models import build_model
    from models.fcn import geometry

    typed = step.config
    segmenter = typed.segmenter
    height, width = data.shape("x")[:2]
    if fcn_uri:
        multiple = geometry(tracking.load_keras_model(fcn_uri)).stride[0]

        def build() -> Any:
            return build_model("fcn_segmenter", fcn=tracking.load_keras_model(fcn_uri),
                               num_classes=len(data.class_names), name=key)
    else:
        multiple = segmenter.stem_stride * 2 ** len(segmenter.filters)

        def build() -> Any:
            return build_model("deconv_segmenter", num_classes=len(data.class_names),
                               channels=data.shape("x")[-1], filters=tuple(segmenter.filters),
                               bottleneck=segmenter.bottleneck, skips=segmenter.skips,
                               stem_stride=segmenter.stem_stride, name=key)
    _check_divisible(height, width, multiple)
    crop = segmenter.crop if segmenter.crop and segmenter.crop < min(height, width) else 0
    if crop:
        _check_divisible(crop, crop, multiple, "crop")
    x, y = data.get("train", "x"), data.get("train", "mask")
    return step.train(Training(
        key, data=data, run_name=name, examples=len(x),
        params={"segmenter.classes": len(data.class_names), "segmenter.trained_on": f"{crop}x{crop} crops" if crop
                else "whole scenes", "segmenter.loss": "per-pixel cross-entropy" if segmenter.digit_weight == 1.0
                else f"per-pixel cross-entropy, non-background pixels weighted {segmenter.digit_weight:g}",
                "segmenter.encoder_from": fcn_uri or "scratch"},
        depends_on={"encoder": fcn_uri} if fcn_uri else {}, build=build,
        datasets=lambda: (_segmentation_batches(x, y, typed.train.batch_size, shuffle=True, seed=typed.train.seed,
                                                crop=crop, digit_weight=segmenter.digit_weight),
                          _segmentation_batches(data.get("val", "x"), data.get("val", "mask"), 32, shuffle=False,
                                                seed=0) if data.sizes["val"] else None),
        example=(x[:2] / 255.0).astype(np.float32)))


@step_of(FAMILY)
def train_segmenter(step: StepContext) -> dict[str, Any]:
    """Train the deconvolution segmenter on the scenes (per-pixel classes, background +
    10 digits), its encoder its own or (``encoder=classifier``) the converted classifier;
    with ``extra_dataset`` a second one (its own encoder) on that dataset."""
    from pipelines.data.prepared import prepare

    typed, scenes = step.config, step.data
    fcn_uri = step["convert_to_fcn"]["model_uri"] if typed.segmenter.encoder == "classifier" else None
    out = {"scenes": _train_one_segmenter(step, scenes, "segmenter", f"segmenter {scenes.shape('x')[0]}"
                                          f"x{scenes.shape('x')[1]} scenes", fcn_uri)}
    if typed.segmenter.extra_dataset:
        extra = prepare(DataConfig(dataset=typed.segmenter.extra_dataset, data_dir=typed.data.data_dir,
                                   split_seed=typed.data.split_seed), params={"side": 128})
        out["extra"] = {**_train_one_segmenter(step, extra, "segmenter_pets", f"segmenter {extra.name}"),
                        "data_uri": extra.uri}
    return out


@step_of(FAMILY)
def evaluate_segmenter(step: StepContext) -> dict[str, Any]:
    """Mean IoU (over the classes present) and pixel accuracy on the test scenes, drawn in
    digits no training scene holds, in the segmenter's run (``mean_iou_seen_digits``: the
    same scenes in training digits); predicted masks beside the true ones; then
    registration."""
    from models.deconv import segmentation_scores
    from pipelines import plots
    from pipelines.data.prepared import load_prepared, normalize_images

    results = {}
    for which, trained in sorted(step["train_segmenter"].items()):
        data = load_prepared(trained.get("data_uri", step["data_uri"]))

        def measure(run: Any, data: Any = data, trained: dict = trained) -> dict[str, float]:
            model = tracking.load_keras_model(trained["model_uri"])
            images, masks = scored_scenes(data, "x"), scored_scenes(data, "mask")
            predicted = np.asarray(model.predict(normalize_images(images), batch_size=32, verbose=0)).argmax(-1)
            scores = segmentation_scores(predicted, masks, len(data.class_names))
            metrics = {"mean_iou": scores["mean_iou"], "pixel_accuracy": scores["pixel_accuracy"],
                       **{f"iou_{name}": value for name, value in zip(data.class_names, scores["iou"], strict=True)
                          if value is not None}}
            if "test_unseen_x" in data.arrays:  # the same test scenes drawn in training digits
                seen = np.asarray(model.predict(normalize_images(data.get("test", "x")), batch_size=32,
                                                verbose=0)).argmax(-1)
                metrics["mean_iou_seen_digits"] = segmentation_scores(seen, data.get("test", "mask"),
                                                                      len(data.class_names))["mean_iou"]
            tracking.log_dict(run.run_id, {"class_names": list(data.class_names), **scores},
                              "evaluation/iou.json")
            tracking.log_figure(run.run_id, plots.segmentations(
                images[:6], masks[:6], predicted[:6], len(data.class_names),
                f"{data.name}: mean IoU {metrics['mean_iou']:.3f}, pixel accuracy "
                f"{metrics['pixel_accuracy']:.3f}", class_names=data.class_names), "plots/masks.png")
            return metrics

        metrics = step.evaluate_into(trained["run_id"], ("mean_iou", "pixel_accuracy"), measure,
                                     fingerprint=data.fingerprint, reuse_all=True)
        say(f"segmenter ({data.name}): mean IoU {metrics['mean_iou']:.4f}, pixel accuracy "
            f"{metrics['pixel_accuracy']:.4f}")
        step.report({f"{key}{'' if which == 'scenes' else '_' + which}": metrics[key]
                     for key in ("mean_iou", "pixel_accuracy")})
        results[which] = {"metrics": metrics, "version": step.register(
            "segmenter" if which == "scenes" else "segmenter_pets", trained, "mean_iou", metrics["mean_iou"])}
    return results


# --- generator ----------------------------------------------------------------------------


def _generator_inputs(labels: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.eye(10, dtype=np.float32)[labels], pose.astype(np.float32)


@step_of(FAMILY)
def train_generator(step: StepContext) -> dict[str, Any]:
    """Train the class + pose -> image generator on the posed digits (pixel-wise
    binary cross-entropy against the posed digit)."""
    from models import build_model
    from pipelines.data.prepared import load_prepared

    typed = step.config
    generator = typed.generator
    posed = load_prepared(step["prepare_scenes"]["posed_uri"])

    def posed_batches(split: str, shuffle: bool) -> Any:
        label, pose = _generator_inputs(posed.get(split, "y"), posed.get(split, "pose"))
        target = (posed.get(split, "x") / 255.0).astype(np.float32)
        return batches(((label, pose), target), generator.generator_batch, shuffle=shuffle, seed=typed.train.seed,
                       normalize=False)

    # The pose inputs are standardised inside the model, so it takes degrees, zoom and stroke as they are.
    low, high = generator.pose_scale_min, generator.pose_scale_max
    return step.train(Training(
        "generator", data=posed, run_name="generator class+pose", examples=posed.sizes["train"],
        build=lambda: build_model("digit_generator", dense_units=generator.dense_units,
                                  pose_mean=(0.0, (low + high) / 2, 0.0),
                                  pose_std=(max(generator.rotation_max, 1.0) / np.sqrt(3.0),
                                            max(high - low, 1e-3) / np.sqrt(12.0), 0.8165)),
        datasets=lambda: (posed_batches("train", True), posed_batches("val", False)),
        example=list(_generator_inputs(posed.get("train", "y")[:2], posed.get("train", "pose")[:2])),
        train=typed.train.replace(epochs=generator.generator_epochs, batch_size=generator.generator_batch,
                                  learning_rate=generator.generator_step_size, lr_schedule="constant",
                                  early_stopping_patience=0),
        fit={"loss": "binary_crossentropy", "metrics": ("mae",)}))


@step_of(FAMILY)
def evaluate_generator(step: StepContext) -> dict[str, Any]:
    """Generate digits of every class at random poses from the training ranges and let
    the classifier that ``convert_to_fcn`` used label them (``recognised_share``); grids
    of class x rotation, scale and stroke sweeps, and a morph between classes."""
    from pipelines import plots

    poses, trained = step.config.generator, step["train_generator"]
    classifier = step["convert_to_fcn"]["classifier"]
    posed_fingerprint = step["prepare_scenes"]["posed_fingerprint"]

    def measure(run: Any) -> dict[str, float]:
        generator = tracking.load_keras_model(trained["model_uri"])
        cnn = tracking.load_keras_model(classifier["model_uri"])

        def generate(labels: np.ndarray, pose: np.ndarray) -> np.ndarray:
            return np.asarray(generator.predict(list(_generator_inputs(labels, pose)), batch_size=256, verbose=0))

        rng, turn, low, high = np.random.default_rng(0), poses.rotation_max, poses.pose_scale_min, poses.pose_scale_max
        labels = np.repeat(np.arange(10), 100)
        pose = np.stack([rng.uniform(-turn, turn, len(labels)), rng.uniform(low, high, len(labels)),
                         rng.integers(-1, 2, len(labels))], axis=1).astype(np.float32)
        images = generate(labels, pose)
        predicted = np.asarray(cnn.predict(images, batch_size=256, verbose=0)).argmax(-1)
        hit = predicted == labels
        metrics = {"recognised_share": float(hit.mean()),
                   **{f"recognised_{d}": float(hit[labels == d].mean()) for d in range(10)}}
        rotations, upright = np.linspace(-turn, turn, 9), np.tile([0.0, (low + high) / 2, 0.0], (9, 1))
        grid_labels = np.repeat(np.arange(10), len(rotations))
        grid_pose = np.concatenate([upright] * 10)
        grid_pose[:, 0] = np.tile(rotations, 10)
        grid = generate(grid_labels, grid_pose)
        sweeps = {}
        for name, column, values in (("scale", 1, np.linspace(low, high, 9)), ("stroke", 2, np.linspace(-1, 1, 9))):
            swept = upright.copy()
            swept[:, column] = values
            sweeps[f"{name} {values[0]:.2g}..{values[-1]:.2g}"] = generate(np.full(9, 4), swept)
        mix, onehot = np.linspace(0, 1, 9)[:, None], np.eye(10, dtype=np.float32)
        for first, second in ((1, 7), (3, 8)):
            sweeps[f"{first} -> {second}"] = generator.predict(
                [(1 - mix) * onehot[first] + mix * onehot[second], upright.astype(np.float32)], verbose=0)
        run.log_params({"evaluation.classifier": f"{classifier['name']}/{classifier['version']}"})
        tracking.log_figure(run.run_id, plots.image_grid(
            grid, [f"{d} {r:+.0f}°" for d, r in zip(grid_labels, grid_pose[:, 0], strict=True)],
            f"generated digits: class x rotation (recognised {metrics['recognised_share']:.3f} by "
            f"{classifier['name']} v{classifier['version']})", columns=len(rotations)), "plots/class_by_rotation.png")
        tracking.log_figure(run.run_id, plots.image_rows(sweeps, "generator sweeps: pose of a 4, and class "
                                                                 "interpolations"), "plots/interpolations.png")
        wrong = np.flatnonzero(~hit)[:30]
        if len(wrong):
            tracking.log_figure(run.run_id, plots.image_grid(
                images[wrong], [f"{labels[i]}→{predicted[i]} {pose[i, 0]:+.0f}°" for i in wrong],
                "generated digits the classifier labels otherwise (asked→labelled)"), "plots/not_recognised.png")
        return metrics

    metrics = step.evaluate_into(trained["run_id"], ("recognised_share",), measure, fingerprint=posed_fingerprint,
                                 reuse_all=True)
    say(f"generator: {metrics['recognised_share']:.3f} of generated digits labelled with the requested class by "
        f"{classifier['name']} v{classifier['version']}")
    step.report({"recognised_share": metrics["recognised_share"]})
    decision = step.register("generator", trained, "recognised_share", metrics["recognised_share"])
    return {"metrics": metrics, "version": decision}


# --- dry run ------------------------------------------------------------------------------


def _train_count(count: int, val_fraction: float, test_fraction: float, classes: int = 1) -> int:
    """Training examples of ``count`` split like :func:`pipelines.data.prepared.prepare`
    (``classes`` equal classes, each cut on its own; one for data without labels)."""
    each = count // classes
    return classes * max(each - max(1, round(each * test_fraction)) - round(each * val_fraction), 0)


def dry_run_models(typed: Any, examples: dict[str, int]) -> list[Any]:
    """What :func:`train_segmenter` and :func:`train_generator` train, for ``nnzoo run
    fcn_deconv --dry-run``. The segmenters are built with their training input size
    (the trained net takes any size), so that every layer's activation is counted."""
    import keras

    from models import build_model
    from models.fcn import geometry
    from pipelines.data.source_scenes import MASK_CLASSES, PET_CLASSES
    from pipelines.dryrun import ModelPlan, steps, stopping_note

    segmenter, generator, train = typed.segmenter, typed.generator, typed.train
    stopping = stopping_note(train)
    classifier = ("; convert_to_fcn (for detection, the generator's evaluation and segmenter.encoder=classifier) "
                  "takes the classifiers family's CNN: its champion, or that family's pipeline runs first when there is none of this "
                  "profile or larger (not counted here: `nnzoo run classifiers --dry-run`)")

    def digit_fcn() -> Any:  # what convert_to_fcn makes of a classifiers CNN of this profile
        from models.fcn import convert_to_fcn
        from pipelines.data.registry import get_dataset
        from pipelines.families import get_family
        from pipelines.kit import builder_kwargs

        classifiers = get_family(next(use.family for use in FAMILY.uses if use.name == "classifier")).config(
            typed.profile)
        cnn = build_model("cnn", input_shape=get_dataset(classifiers.data.dataset).shape, num_classes=10,
                          **builder_kwargs(classifiers.cnn))
        return convert_to_fcn(cnn, name="digit_fcn")

    def segmenter_plan(key: str, side: tuple[int, int], channels: int, classes: int, count: int, what: str,
                       own: bool) -> Any:
        def build() -> Any:
            if own:
                model = build_model("deconv_segmenter", num_classes=classes, channels=channels,
                                    filters=tuple(segmenter.filters), bottleneck=segmenter.bottleneck,
                                    skips=segmenter.skips, stem_stride=segmenter.stem_stride, name=key)
            else:
                model = build_model("fcn_segmenter", fcn=digit_fcn(), num_classes=classes, name=key)
            return keras.models.clone_model(model, input_tensors=keras.Input(shape=shape, name="image"))

        height, width = side
        crop = segmenter.crop if segmenter.crop and segmenter.crop < min(height, width) else 0
        shape = (crop, crop, channels) if crop else (height, width, channels)
        multiple = segmenter.stem_stride * 2 ** len(segmenter.filters) if own else geometry(digit_fcn()).stride[0]
        _check_divisible(height, width, multiple)  # as the run stops
        if crop:
            _check_divisible(crop, crop, multiple, "crop")
        return ModelPlan(
            key, build, [(shape, "float32")], train.batch_size, steps(count, train.batch_size, train.epochs),
            note=f"{count:,} {what} ({f'{crop}x{crop} crops' if crop else f'whole, {height}x{width}'}) x "
                 f"{train.epochs} epochs{stopping}" + ("" if own else "; encoder: the converted CNN, as a fresh "
                                                        f"classifiers CNN of the {typed.profile} profile"))

    data = typed.data
    scenes = min(data.scenes, data.max_examples or data.scenes)
    plans = [segmenter_plan("segmenter", (data.canvas_height, data.canvas_width), 1, len(MASK_CLASSES),
                            _train_count(scenes, data.val_fraction, data.test_fraction), "training scenes",
                            segmenter.encoder == "own")]
    if segmenter.extra_dataset:
        # train_segmenter prepares it at side 128, with DataConfig's split fractions.
        split = DataConfig(dataset=segmenter.extra_dataset)
        count = _train_count(examples.get(segmenter.extra_dataset, 0), split.val_fraction, split.test_fraction)
        plans.append(segmenter_plan("segmenter_pets", (128, 128), 3, len(PET_CLASSES), count,
                                    f"{segmenter.extra_dataset} training images", True))
    # prepare_scenes: writers x poses posed digits per class, 10% validation, 10% test.
    posed = _train_count(10 * generator.writers * generator.poses, 0.1, 0.1, classes=10)
    low, high = generator.pose_scale_min, generator.pose_scale_max
    plans.append(ModelPlan(
        "generator", lambda: build_model("digit_generator", dense_units=generator.dense_units,
                                         pose_mean=(0.0, (low + high) / 2, 0.0),
                                         pose_std=(max(generator.rotation_max, 1.0) / np.sqrt(3.0),
                                                   max(high - low, 1e-3) / np.sqrt(12.0), 0.8165)),
        [((10,), "float32"), ((3,), "float32")], generator.generator_batch,
        steps(posed, generator.generator_batch, generator.generator_epochs),
        note=f"{posed:,} posed digits x {generator.generator_epochs} epochs, no early stopping{classifier}"))
    return plans
