"""Generated image sets made of real MNIST digits (claims C9-C12).

* ``mnist_scenes``: canvases holding several digits at random positions and scales, with
  a per-pixel class mask and one box per digit: detection and segmentation data.
* ``posed_digits``: single digits with a known pose (rotation, scale, stroke
  thickness) applied to them: the training set of the class + pose generator.

Both are deterministic from their parameters and seed, and are built from the bundled
MNIST subset (``mnist_subset``) or, for the full profile, tensorflow-datasets ``mnist``.
The digits come from the share of the source that the classifiers family holds out by
default (its val + test splits at split seed 0: ``digit_holdout``), so the classifier
that is converted into a detector never trained on a digit of a scene.

That pool is cut once more, by class: ``unseen_digits`` of it is never drawn in ``x``.
Every scene is drawn twice over one layout (positions, sizes, classes): ``x`` / ``mask``
with the other digits, ``unseen_x`` / ``unseen_mask`` with a digit of the same class
from that share. Models train (and validate) on ``x``; the detector and the segmenter
are scored on ``unseen_x`` of the test scenes, digits that no training scene holds,
whatever the split of the scenes (which the generator does not know). ``x`` of the test
scenes is the same layouts in training digits: the seen-digit comparison.
"""

from __future__ import annotations

import functools

import numpy as np

from pipelines.data.registry import DatasetUnavailableError, Loaded, load_arrays, register_dataset
from pipelines.errors import BadValueError

DIGIT_SIDE = 28
BACKGROUND = 0
"""Mask value of background pixels; digit ``d`` is ``d + 1``."""
MASK_CLASSES = ("background", *(str(d) for d in range(10)))
INK = 128
"""A pixel belongs to a digit where the pasted digit is at least this bright (of 255)."""
DIGIT_SOURCES = ("mnist_subset", "mnist")


def held_out_digits(source: str, holdout: float, data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N,28,28], labels)``: the first ``holdout`` share of each class of
    ``source`` in the order of the kit's stratified split at seed 0, i.e. the digits a
    classifier trained with val + test = ``holdout`` at split seed 0 never saw.
    ``holdout=1`` takes every digit. Read-only arrays, kept for the next call (a scenes
    pipeline asks three times and parsing the bundled subset takes seconds)."""
    if source not in DIGIT_SOURCES:
        raise ValueError(f"digits_from={source!r}: expected one of {', '.join(DIGIT_SOURCES)}")
    if not 0.0 < holdout <= 1.0:
        raise ValueError(f"digit_holdout={holdout}: expected a share in (0, 1]")
    from pipelines.data.registry import mock_examples

    # Mock data is part of the key: a process that loads both never mixes them up.
    return _digits(source, data_dir, holdout, mock_examples())


@functools.lru_cache(maxsize=4)
def _digits(source: str, data_dir: str | None, holdout: float, mock: int) -> tuple[np.ndarray, np.ndarray]:
    from pipelines.data.prepared import stratified_split

    if holdout < 1.0:
        images, labels = _digits(source, data_dir, 1.0, mock)
        index = np.sort(stratified_split(labels, 0.0, holdout, seed=0)["test"])
        images, labels = images[index], labels[index]
    else:
        loaded = load_arrays(source, data_dir)
        images, labels = loaded.arrays["x"][..., 0].copy(), loaded.arrays["y"].copy()
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def _resize(image: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width or height, height), Image.BILINEAR))


def split_digits(labels: np.ndarray, unseen: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(seen, unseen)``: sorted indices of ``labels`` cut by class, ``unseen`` of each
    class (at least one) in the second."""
    if not 0.0 < unseen <= 0.5:
        raise ValueError(f"unseen_digits={unseen}: expected a share in (0, 0.5]")
    from pipelines.data.prepared import stratified_split

    held = np.sort(stratified_split(labels, 0.0, unseen, seed=seed)["test"])
    return np.setdiff1d(np.arange(len(labels)), held), held


@register_dataset(
    "mnist_scenes",
    "Canvases of 2-4 non-overlapping MNIST digits at random positions and scales, with a per-pixel "
    "class mask and a box per digit, each also drawn in digits kept for the test scenes (generated from "
    "mnist_subset, or tfds mnist)",
    "generated:mnist_scenes",
    generator_version="2",
)
def load_mnist_scenes(data_dir: str | None = None, canvas_height: int = 112, canvas_width: int = 112,
                      digits_min: int = 2, digits_max: int = 4, scale_min: float = 1.0, scale_max: float = 1.5,
                      scenes: int = 2000, digits_from: str = "mnist_subset", digit_holdout: float = 0.3,
                      unseen_digits: float = 0.2, scene_seed: int = 0) -> Loaded:
    """``x`` uint8 [N,H,W,1]; ``mask`` uint8 [N,H,W] (0 background, digit d -> d+1);
    ``boxes`` float32 [N,digits_max,4] as (top, left, bottom, right) in pixels and
    ``digits`` int64 [N,digits_max] (the class of each box), both padded with -1.
    A box is the digit's scaled 28x28 MNIST frame (the field MNIST centres each digit
    in), the window a 28x28 classifier sees. Digits never overlap.
    ``unseen_x`` and ``unseen_mask``: the same scenes (same boxes and classes) drawn with
    the ``unseen_digits`` share of the digits that ``x`` never shows; ``digit_index`` and
    ``unseen_index`` int64 [N,digits_max]: the digit in each box of either drawing, as an
    index into :func:`held_out_digits` (padded with -1)."""
    images, labels = held_out_digits(digits_from, digit_holdout, data_dir)
    seen, unseen = split_digits(labels, unseen_digits, scene_seed)
    if not len(seen):
        raise DatasetUnavailableError(
            f"digits_from={digits_from}: its held-out share (digit_holdout={digit_holdout}) has {len(labels)} digits, "
            f"and keeping unseen_digits={unseen_digits} of each class (at least one) for the test drawing leaves none "
            "to draw the scenes with; use more digits (a larger dataset, digit_holdout, or mock_data on mock data)")
    arrays = make_scenes(np.random.default_rng(scene_seed), images[seen], labels[seen], scenes=scenes,
                         height=canvas_height, width=canvas_width, digits=(digits_min, digits_max),
                         scales=(scale_min, scale_max), unseen=(images[unseen], labels[unseen]))
    for key, pool in (("digit_index", seen), ("unseen_index", unseen)):  # indices into the whole held-out pool
        arrays[key] = np.where(arrays[key] >= 0, pool[np.maximum(arrays[key], 0)], -1)
    return Loaded(arrays, MASK_CLASSES)


def _paste(canvas: np.ndarray, mask: np.ndarray, image: np.ndarray, label: int, box: tuple[int, int, int, int]) -> None:
    top, left, bottom, right = box
    digit = _resize(image, bottom - top)
    canvas[top:bottom, left:right] = np.maximum(canvas[top:bottom, left:right], digit)
    mask[top:bottom, left:right][digit >= INK] = label + 1


def make_scenes(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, *, scenes: int, height: int,
                width: int, digits: tuple[int, int] = (2, 4), scales: tuple[float, float] = (1.0, 1.5),
                unseen: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The scene arrays of :func:`load_mnist_scenes` from digit ``images`` [N,28,28]
    (``digit_index``: the index in ``images`` of each box's digit). With ``unseen``
    (other digits and their labels), each scene is drawn a second time over the same
    layout, each box with a digit of its class from those (``unseen_x``, ``unseen_mask``,
    ``unseen_index``); the first drawing is the same with or without it."""
    low, high = digits
    if not 1 <= low <= high:
        raise BadValueError(f"digits_min={low}, digits_max={high}: expected 1 <= digits_min <= digits_max")
    if not 0.25 <= scales[0] <= scales[1]:
        raise BadValueError(f"scale_min={scales[0]}, scale_max={scales[1]}: expected 0.25 <= scale_min <= scale_max")
    largest = int(round(DIGIT_SIDE * scales[1]))
    if height < largest or width < largest:
        raise BadValueError(f"canvas {height}x{width} is smaller than the largest digit ({largest}x{largest} px at "
                         f"scale_max={scales[1]}); enlarge the canvas or lower scale_max")
    if scenes < 1:
        raise BadValueError(f"scenes={scenes}: expected at least 1")
    canvas = np.zeros((scenes, height, width, 1), np.uint8)
    mask = np.zeros((scenes, height, width), np.uint8)
    boxes = np.full((scenes, high, 4), -1.0, np.float32)
    classes = np.full((scenes, high), -1, np.int64)
    index = np.full((scenes, high), -1, np.int64)
    if unseen is not None:
        other_images, other_labels = unseen
        by_class = {int(c): np.flatnonzero(other_labels == c) for c in np.unique(labels)}
        if missing := sorted(c for c, members in by_class.items() if not len(members)):
            raise ValueError(f"the unseen digits have no {', '.join(map(str, missing))}: every class drawn needs one")
        other_rng = rng.spawn(1)[0]  # its own stream: the first drawing does not depend on it
        other_canvas, other_mask, other_index = np.zeros_like(canvas), np.zeros_like(mask), np.full_like(index, -1)
    for n in range(scenes):
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(low, high + 1))):
            pick = int(rng.integers(len(images)))
            side = int(round(DIGIT_SIDE * rng.uniform(*scales)))
            for _attempt in range(50):  # rejection sampling of a free spot
                top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
                box = (top, left, top + side, left + side)
                if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed):
                    break
            else:
                continue  # the canvas is full: this scene gets fewer digits
            _paste(canvas[n, ..., 0], mask[n], images[pick], int(labels[pick]), box)
            if unseen is not None:
                members = by_class[int(labels[pick])]
                other = int(members[other_rng.integers(len(members))])
                _paste(other_canvas[n, ..., 0], other_mask[n], other_images[other], int(labels[pick]), box)
                other_index[n, len(placed)] = other
            boxes[n, len(placed)] = box
            classes[n, len(placed)] = labels[pick]
            index[n, len(placed)] = pick
            placed.append(box)
    out = {"x": canvas, "mask": mask, "boxes": boxes, "digits": classes, "digit_index": index}
    if unseen is not None:
        out.update({"unseen_x": other_canvas, "unseen_mask": other_mask, "unseen_index": other_index})
    return out


POSE_NAMES = ("rotation", "scale", "thickness")
"""The generator's pose parameters: degrees, zoom factor, stroke change in pixels (-1 thinner, +1 bolder)."""


def apply_pose(image: np.ndarray, rotation: float, scale: float, thickness: int) -> np.ndarray:
    """A 28x28 digit rotated by ``rotation`` degrees (counter-clockwise) and zoomed by
    ``scale`` about its centre, its strokes made thinner (-1: grey erosion) or bolder
    (+1: grey dilation); same size out."""
    from PIL import Image
    from scipy import ndimage

    if thickness:
        grow = ndimage.grey_dilation if thickness > 0 else ndimage.grey_erosion
        image = grow(image, size=(2, 2))
    side = image.shape[0]
    zoomed = int(round(side * scale))
    picture = Image.fromarray(image).resize((zoomed, zoomed), Image.BILINEAR)
    picture = picture.rotate(rotation, resample=Image.BILINEAR)
    out = np.zeros((side, side), np.uint8)
    if zoomed >= side:
        cut = (zoomed - side) // 2
        out[:] = np.asarray(picture)[cut:cut + side, cut:cut + side]
    else:
        pad = (side - zoomed) // 2
        out[pad:pad + zoomed, pad:pad + zoomed] = np.asarray(picture)
    return out


def prototypes(images: np.ndarray, labels: np.ndarray, per_class: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The ``per_class`` digits of each class nearest to the class's mean image: one
    typical hand per class, as one 3D model is one chair type in the chairs paper."""
    picked = []
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        members = images[index].reshape(len(index), -1).astype(np.float32)
        distance = ((members - members.mean(axis=0)) ** 2).sum(axis=1)
        picked.extend(index[np.argsort(distance, kind="stable")[:per_class]])
    picked = np.asarray(picked)
    return images[picked], labels[picked]


@register_dataset(
    "posed_digits",
    "A prototype MNIST digit per class with known poses applied (rotation, scale, stroke thickness): the "
    "class + pose generator's training set (generated from mnist_subset, or tfds mnist)",
    "generated:posed_digits",
    generator_version="1",
)
def load_posed_digits(data_dir: str | None = None, poses: int = 1000, rotation_max: float = 45.0,
                      pose_scale_min: float = 0.8, pose_scale_max: float = 1.1, digits_from: str = "mnist_subset",
                      writers: int = 1, pose_seed: int = 0) -> Loaded:
    """``x`` uint8 [N,28,28,1] the posed digit, ``y`` its class, ``pose`` float32 [N,3]
    (rotation in degrees, scale, thickness in {-1, 0, 1}): ``poses`` random poses of
    each of the ``writers`` digits per class nearest the class's mean image. With one
    writer, class + pose determine the image, as chair type + viewpoint do in the
    chairs paper; with several, a generator given only the class learns their blurred
    average."""
    if poses < 1 or writers < 1:
        raise ValueError(f"poses={poses}, writers={writers}: expected at least 1 each")
    if not 0.0 <= rotation_max <= 180.0:
        raise ValueError(f"rotation_max={rotation_max}: expected degrees in [0, 180]")
    if not 0.25 <= pose_scale_min <= pose_scale_max <= 2.0:
        raise ValueError(f"pose_scale_min={pose_scale_min}, pose_scale_max={pose_scale_max}: expected "
                         "0.25 <= min <= max <= 2")
    images, labels = prototypes(*held_out_digits(digits_from, 1.0, data_dir), per_class=writers)
    rng = np.random.default_rng(pose_seed)
    count = len(images) * poses
    pose = np.stack([rng.uniform(-rotation_max, rotation_max, count), rng.uniform(pose_scale_min, pose_scale_max, count),
                     rng.integers(-1, 2, count)], axis=1).astype(np.float32)
    source = np.repeat(np.arange(len(images)), poses)
    posed = np.stack([apply_pose(images[i], float(p[0]), float(p[1]), int(p[2])) for i, p in zip(source, pose,
                                                                                                  strict=True)])
    return Loaded({"x": posed[..., None], "y": labels[source].astype(np.int64), "pose": pose},
                  tuple(str(d) for d in range(10)))


PET_CLASSES = ("pet", "background", "border")


@register_dataset(
    "oxford_iiit_pet",
    "7,349 photographs of cats and dogs with pet / background / border masks, from tensorflow-datasets",
    "tfds:oxford_iiit_pet",
    examples=7349,
)
def load_oxford_iiit_pet(data_dir: str | None = None, side: int = 128) -> Loaded:
    """``x`` uint8 [N,side,side,3] (resized, aspect ratio not kept) and ``mask`` uint8
    [N,side,side] with 0 pet, 1 background, 2 border (tfds' trimap minus one)."""
    import tensorflow as tf

    from pipelines.data.registry import load_tfds

    if side < 16:
        raise ValueError(f"side={side}: expected at least 16 pixels")
    from pipelines.data.registry import mock_examples

    images, masks = [], []
    for example in load_tfds("oxford_iiit_pet", data_dir, "mnist_scenes"):
        images.append(tf.image.resize(example["image"], (side, side), antialias=True).numpy().round().astype(np.uint8))
        trimap = tf.image.resize(example["segmentation_mask"], (side, side), method="nearest").numpy()[..., 0]
        if mock_examples():  # mock masks are random bytes: folded into the trimap's values 1..3
            trimap = trimap % 3 + 1
        masks.append(trimap.astype(np.int64) - 1)
    mask = np.stack(masks)
    if outside := sorted(set(np.unique(mask).tolist()) - set(range(len(PET_CLASSES)))):
        raise DatasetUnavailableError(
            f"oxford_iiit_pet: segmentation masks hold values {[value + 1 for value in outside][:5]} outside the "
            f"trimap's 1..3 (pet, background, border); the data in {data_dir or 'the tfds data_dir'} is not the "
            "published dataset: prepare it again")
    return Loaded({"x": np.stack(images), "mask": mask.astype(np.uint8)}, PET_CLASSES)
