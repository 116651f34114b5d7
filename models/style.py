"""Neural style transfer (claims C13, C14): the loss network, the perceptual loss, and the
feed-forward stylizer with its training model.

Images are float RGB in [0, 1], shape ``(batch, height, width, 3)``, everywhere in this
module.

* :func:`build_loss_network`: VGG19 (Simonyan & Zisserman 2014) cut after the deepest
  layer the loss reads (``block5_conv2`` with the default content layer), returning the
  style layers' and the content layer's feature maps. ImageNet weights come from a weights file the caller found; without
  one the weights are seeded He-normal draws (random-weight nets still capture texture
  statistics, He et al. 2016, arXiv 1606.04801), each layer rescaled so that its mean
  activation on seeded noise is 1 (the normalisation Gatys et al. apply to their VGG), so
  that every style layer weighs in.
* :class:`PerceptualLoss`: weighted content loss (feature distance at the content layer),
  Gram-matrix style loss (Gatys et al. 2015, arXiv 1508.06576) and total variation. Each of
  the first two is a *relative* squared error, divided by the target's own squared norm,
  so one set of weights suits the ImageNet and the random net alike, whose activations
  differ by orders of magnitude.
* :func:`build_style_transformer` (``"style_transformer"``): the fully convolutional image
  transformation net of Johnson et al. (arXiv 1603.08155) with the instance normalisation
  of Ulyanov et al. (arXiv 1607.08022): reflection-padded convolutions, two stride-2
  downsamplings, residual blocks, two nearest-neighbour upsamplings with convolutions (no
  checkerboard, Odena et al. 2016), sigmoid output. It runs on any image size of at least
  :data:`MIN_SIDE`; the output is cropped back to the input size.
* :class:`PerceptualTrainer`: the transformer with the frozen loss network and one style's
  Gram targets; ``compute_loss`` is the perceptual loss of the transformer's output against
  the input batch, so ``fit`` trains a stylizer. Only the transformer is saved and served.
* :func:`edge_similarity`: how much of the photo's layout a result keeps, the correlation
  of the two images' Sobel edge maps (1: the photo's edges, about 0: unrelated ones).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from models.registry import register_model

STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
CONTENT_LAYER = "block5_conv2"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
"""The per-channel means the ImageNet VGG weights were trained with (BGR order, 0-255)."""
EDGE_BLUR_SIGMA = 1.0
"""Pixels of Gaussian blur before :func:`edge_similarity` takes its edge maps."""
MIN_SIDE = 16
"""Smallest side the loss network accepts: four 2x2 poolings before ``block5_conv1`` must
leave at least one pixel."""


@keras.saving.register_keras_serializable(package="nnzoo")
class CaffePreprocessing(keras.layers.Layer):
    """RGB in [0, 1] -> BGR in [0, 255] minus the ImageNet channel means: the input VGG
    weights expect (``keras.applications.vgg19.preprocess_input``, as a layer)."""

    def call(self, inputs: Any) -> Any:
        bgr = ops.flip(inputs, axis=-1) * 255.0
        return bgr - ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=bgr.dtype)


@keras.saving.register_keras_serializable(package="nnzoo")
class ReflectionPadding2D(keras.layers.Layer):
    """Mirror ``padding`` pixels at each border (no zero frame for the conv to learn around)."""

    def __init__(self, padding: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if padding < 0:
            raise ValueError(f"padding={padding}: expected >= 0")
        self.padding = int(padding)

    def call(self, inputs: Any) -> Any:
        p = self.padding
        return ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape: Sequence[Any]) -> tuple[Any, ...]:
        batch, height, width, channels = input_shape
        grow = 2 * self.padding
        return (batch, None if height is None else height + grow, None if width is None else width + grow, channels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": self.padding}

    def flops_per_example(self) -> int:
        return 0


@keras.saving.register_keras_serializable(package="nnzoo")
class CropToReference(keras.layers.Layer):
    """Crop ``inputs[0]`` to the height and width of ``inputs[1]`` (top left kept): the
    upsampled output of an input whose sides are not multiples of 4 is a little larger."""

    def call(self, inputs: Sequence[Any]) -> Any:
        image, reference = inputs
        shape = ops.shape(reference)
        return image[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, input_shapes: Sequence[Sequence[Any]]) -> tuple[Any, ...]:
        image, reference = input_shapes
        return (image[0], reference[1], reference[2], image[3])

    def flops_per_example(self) -> int:
        return 0


def _conv(x: Any, filters: int, kernel_size: int, strides: int, name: str, *, relu: bool = True,
          normalise: bool = True) -> Any:
    x = ReflectionPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="valid", name=f"{name}_conv")(x)
    if normalise:
        # groups=-1: one group per channel, i.e. instance normalisation.
        x = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5, name=f"{name}_norm")(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


@register_model("style_transformer")
def build_style_transformer(filters: Sequence[int] = (32, 64, 128), residual_blocks: int = 5,
                            name: str = "style_transformer") -> keras.Model:
    """Johnson et al.'s image transformation net, instance-normalised: 9x9 conv, two
    stride-2 3x3 convs, ``residual_blocks`` residual blocks of two 3x3 convs, two
    (nearest-neighbour x2 upsampling + 3x3 conv), 9x9 conv to RGB with a sigmoid.

    Args:
        filters: channels at full, half and quarter resolution (the paper: 32, 64, 128).
        residual_blocks: residual blocks at quarter resolution (the paper: 5).
    """
    filters = tuple(int(f) for f in filters)
    if len(filters) != 3 or min(filters) < 1:
        raise ValueError(f"filters={filters}: expected three positive channel counts (full, half, quarter)")
    if residual_blocks < 0:
        raise ValueError(f"residual_blocks={residual_blocks}: expected >= 0")
    image = keras.Input((None, None, 3), name="image")
    x = _conv(image, filters[0], 9, 1, "initial")
    x = _conv(x, filters[1], 3, 2, "down1")
    x = _conv(x, filters[2], 3, 2, "down2")
    for block in range(1, residual_blocks + 1):
        skip = x
        x = _conv(x, filters[2], 3, 1, f"residual{block}_a")
        x = _conv(x, filters[2], 3, 1, f"residual{block}_b", relu=False)
        x = keras.layers.Add(name=f"residual{block}_add")([skip, x])
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name="up1_upsample")(x)
    x = _conv(x, filters[1], 3, 1, "up1")
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name="up2_upsample")(x)
    x = _conv(x, filters[0], 3, 1, "up2")
    x = _conv(x, 3, 9, 1, "output", relu=False, normalise=False)
    x = keras.layers.Activation("sigmoid", name="output_sigmoid")(x)
    stylised = CropToReference(name="crop_to_input")([x, image])
    return keras.Model(image, stylised, name=name)


# --- the loss network ----------------------------------------------------------------------


def build_loss_network(weights_path: str | None = None, seed: int = 0,
                       style_layers: Sequence[str] = STYLE_LAYERS, content_layer: str = CONTENT_LAYER,
                       calibration_size: int = 64) -> keras.Model:
    """VGG19 up to the deepest layer needed, mapping RGB [0, 1] images to
    ``[*style feature maps, content feature map]``; frozen.

    Args:
        weights_path: a Keras VGG19 no-top weights file (the ImageNet one), or None for
            seeded random weights (see the module docstring).
        seed: seed of the random weights (ignored with ``weights_path``).
        calibration_size: side of the seeded noise images on which the random layers are
            rescaled.
    """
    names = (*style_layers, content_layer)
    vgg = keras.applications.VGG19(include_top=False, weights=weights_path, input_shape=(None, None, 3))
    known = {layer.name for layer in vgg.layers}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"layers {unknown} are not VGG19 layers; expected names such as {', '.join(STYLE_LAYERS)}")
    if weights_path is None:
        _randomise(vgg, seed, calibration_size)
    extractor = keras.Model(vgg.input, [vgg.get_layer(name).output for name in names], name="vgg19_cut")
    image = keras.Input((None, None, 3), name="image")
    outputs = extractor(CaffePreprocessing(name="caffe_preprocessing")(image))
    network = keras.Model(image, outputs, name="vgg19_imagenet" if weights_path else f"vgg19_random_seed{seed}")
    network.trainable = False
    return network


def _randomise(vgg: keras.Model, seed: int, calibration_size: int) -> None:
    """He-normal kernels and zero biases from ``seed``, then each conv layer in turn scaled
    so that its mean ReLU activation over seeded noise images is 1."""
    rng = np.random.default_rng(seed)
    convs = [layer for layer in vgg.layers if isinstance(layer, keras.layers.Conv2D)]
    for layer in convs:
        kernel, bias = layer.get_weights()
        fan_in = int(np.prod(kernel.shape[:-1]))
        layer.set_weights([rng.normal(0.0, np.sqrt(2.0 / fan_in), kernel.shape).astype("float32"),
                           np.zeros_like(bias)])
    noise = rng.random((2, calibration_size, calibration_size, 3)).astype("float32")
    x = ops.convert_to_tensor(CaffePreprocessing()(noise))
    for layer in vgg.layers[1:]:
        x = layer(x)
        if isinstance(layer, keras.layers.Conv2D):
            mean = float(ops.mean(x))
            if mean > 0:
                kernel, bias = layer.get_weights()
                layer.set_weights([kernel / mean, bias / mean])
                x = x / mean


# --- the perceptual loss -----------------------------------------------------------------------


def gram_matrix(features: Any) -> Any:
    """``(batch, C, C)``: channel correlations averaged over positions, ``F^T F / (H W)``;
    independent of the image size, so a style measured at one size applies at another."""
    shape = ops.shape(features)
    flat = ops.reshape(features, (shape[0], shape[1] * shape[2], shape[3]))
    positions = ops.cast(shape[1] * shape[2], features.dtype)
    return ops.matmul(ops.transpose(flat, (0, 2, 1)), flat) / positions


def total_variation(images: Any) -> Any:
    """Per image: mean squared difference of vertically and of horizontally adjacent pixels."""
    down = ops.mean(ops.square(images[:, 1:, :, :] - images[:, :-1, :, :]), axis=(1, 2, 3))
    right = ops.mean(ops.square(images[:, :, 1:, :] - images[:, :, :-1, :]), axis=(1, 2, 3))
    return down + right


class PerceptualLoss:
    """``content_weight * content + style_weight * style + tv_weight * tv`` for a batch of
    images against per-image content targets and one style.

    ``content``: ``||F(x) - F(c)||^2 / ||F(c)||^2`` at the content layer. ``style``: mean
    over the style layers of ``||G(x) - G(s)||^2 / ||G(s)||^2``. ``tv``: :func:`total_variation`.
    Every term is per image; :meth:`terms` returns them, :meth:`__call__` the batch mean of
    the weighted sum. Not a Keras object: it is rebuilt, never saved.
    """

    def __init__(self, loss_network: keras.Model, style_image: Any, *, content_weight: float,
                 style_weight: float, tv_weight: float) -> None:
        self.loss_network = loss_network
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight
        self.style_count = len(loss_network.outputs) - 1
        style = ops.convert_to_tensor(np.asarray(style_image, dtype="float32")[None])
        self.style_grams = [ops.convert_to_tensor(gram_matrix(f)) for f in
                            self.loss_network(style, training=False)[: self.style_count]]
        self.style_norms = [ops.sum(ops.square(g)) for g in self.style_grams]

    def content_features(self, images: Any) -> Any:
        return self.loss_network(images, training=False)[-1]

    def terms(self, images: Any, content_features: Any) -> dict[str, Any]:
        """Per-image ``content``, ``style``, ``tv`` and weighted ``total``, each shape (batch,)."""
        features = self.loss_network(images, training=False)
        content_target = ops.convert_to_tensor(content_features)
        content = ops.sum(ops.square(features[-1] - content_target), axis=(1, 2, 3)) / (
            ops.sum(ops.square(content_target), axis=(1, 2, 3)) + 1e-8)
        style = 0.0
        for layer_features, target, norm in zip(features[: self.style_count], self.style_grams, self.style_norms,
                                                strict=True):
            style = style + ops.sum(ops.square(gram_matrix(layer_features) - target), axis=(1, 2)) / (norm + 1e-8)
        style = style / self.style_count
        tv = total_variation(images)
        total = self.content_weight * content + self.style_weight * style + self.tv_weight * tv
        return {"content": content, "style": style, "tv": tv, "total": total}

    def __call__(self, images: Any, content_features: Any) -> Any:
        return ops.mean(self.terms(images, content_features)["total"])


# --- the fast stylizer's training model -----------------------------------------------------------


class PerceptualTrainer(keras.Model):
    """Trains ``transformer`` to stylise: its output for a batch of content images is scored
    by the :class:`PerceptualLoss` against those images and the style. ``fit`` takes
    batches of content images alone (no targets); ``loss`` and ``val_loss`` are the
    perceptual loss, and ``content_loss``, ``style_loss``, ``tv_loss`` are reported too.

    Only ``transformer`` has trainable weights; the loss network is a fixed measuring
    instrument, so ``count_params`` and ``flops_per_example`` describe the transformer.
    Never saved as a whole: the transformer is what is logged and served.
    """

    def __init__(self, transformer: keras.Model, perceptual_loss: PerceptualLoss, crop_size: int,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.transformer = transformer
        self.perceptual_loss = perceptual_loss
        self.loss_network = perceptual_loss.loss_network
        self.crop_size = int(crop_size)
        self.term_trackers = {name: keras.metrics.Mean(name=f"{name}_loss") for name in ("content", "style", "tv")}

    def call(self, inputs: Any, training: bool = False) -> Any:
        return self.transformer(inputs, training=training)

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                     training: bool = True) -> Any:
        terms = self.perceptual_loss.terms(y_pred, ops.stop_gradient(self.perceptual_loss.content_features(x)))
        for name, tracker in self.term_trackers.items():
            tracker.update_state(terms[name])
        return ops.mean(terms["total"])

    @property
    def metrics(self) -> list[Any]:
        return [*super().metrics, *self.term_trackers.values()]

    def count_params(self) -> int:
        return self.transformer.count_params()

    def flops_per_example(self) -> int:
        """The transformer's forward FLOPs on one training crop (the loss network's are the
        cost of training, not of the model)."""
        from pipelines.flops import count_flops

        return int(count_flops(self.transformer, (self.crop_size, self.crop_size, 3)).total)


def stylise(transformer: keras.Model, images: Any, batch_size: int = 1) -> np.ndarray:
    """The transformer's output for float RGB [0, 1] images of one size, as a NumPy array."""
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images of shape {images.shape}: expected (batch, height, width, 3)")
    if min(images.shape[1:3]) < MIN_SIDE:
        raise ValueError(f"images of {images.shape[1]}x{images.shape[2]}: each side must be at least {MIN_SIDE}")
    return np.concatenate([np.asarray(transformer(images[i: i + batch_size], training=False))
                           for i in range(0, len(images), batch_size)])


# --- the iterative method (Gatys et al.) and the timings of C14 ---------------------------------


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


# --- how much of the photo a result keeps --------------------------------------------------------------

_GREY = np.asarray([0.299, 0.587, 0.114], np.float32)
"""ITU-R BT.601 luma weights: RGB -> grey."""


def _resize_grey(grey: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D array (pixel centres aligned), NumPy only."""
    if grey.shape == (height, width):
        return grey
    rows = np.clip((np.arange(height) + 0.5) * grey.shape[0] / height - 0.5, 0, grey.shape[0] - 1)
    cols = np.clip((np.arange(width) + 0.5) * grey.shape[1] / width - 0.5, 0, grey.shape[1] - 1)
    top, left = np.floor(rows).astype(int), np.floor(cols).astype(int)
    bottom, right = np.minimum(top + 1, grey.shape[0] - 1), np.minimum(left + 1, grey.shape[1] - 1)
    down, across = (rows - top)[:, None], (cols - left)[None, :]
    upper = grey[top][:, left] * (1 - across) + grey[top][:, right] * across
    lower = grey[bottom][:, left] * (1 - across) + grey[bottom][:, right] * across
    return upper * (1 - down) + lower * down


def _smooth(grey: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with mirrored borders."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(grey, radius, mode="reflect")
    rows = sum(weight * padded[offset: offset + grey.shape[0], :] for offset, weight in enumerate(taps))
    return sum(weight * rows[:, offset: offset + grey.shape[1]] for offset, weight in enumerate(taps))


def sobel_magnitude(grey: np.ndarray) -> np.ndarray:
    """Gradient magnitude of a 2-D image by the 3x3 Sobel operator (mirrored borders)."""
    p = np.pad(np.asarray(grey, np.float64), 1, mode="reflect")
    h, w = grey.shape
    def at(dy: int, dx: int) -> np.ndarray:
        return p[1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w]
    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    return np.hypot(gx, gy)


def edge_similarity(stylised: Any, photo: Any, blur_sigma: float = EDGE_BLUR_SIGMA) -> float:
    """How much of the photo's layout a stylised image keeps: the Pearson correlation of
    the Sobel edge-magnitude maps of the two images in grey (the photo resized to the
    stylised image's size), each blurred by a Gaussian of ``blur_sigma`` pixels first so
    that edges a pixel apart still count as the same edge.

    1.0: the same edges (the photo itself, or a recoloured photo); about 0: edges unrelated
    to the photo's (noise, a texture that has covered it); negative values are possible.
    Images are float RGB in [0, 1] (or uint8), ``(height, width, 3)``; NumPy only.
    """
    maps = []
    target: tuple[int, int] | None = None
    for image in (stylised, photo):
        pixels = np.asarray(image)
        pixels = pixels.astype(np.float32) / (255.0 if pixels.dtype == np.uint8 else 1.0)
        if pixels.ndim != 3 or pixels.shape[-1] != 3:
            raise ValueError(f"image of shape {pixels.shape}: expected (height, width, 3)")
        grey = pixels @ _GREY
        target = target or grey.shape
        grey = _resize_grey(grey.astype(np.float64), *target)
        if blur_sigma > 0:
            grey = _smooth(grey, blur_sigma)
        maps.append(sobel_magnitude(grey).ravel())
    first, second = (m - m.mean() for m in maps)
    denominator = float(np.sqrt(np.sum(first**2) * np.sum(second**2)))
    return float(np.sum(first * second) / denominator) if denominator > 0 else 0.0
