"""Generated scenes of MNIST digits and posed digits: deterministic, masks and boxes that
agree, digits the classifier never trained on, test scenes in digits no training scene
holds, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.data.prepared import stratified_split
from pipelines.data.registry import load_arrays
from pipelines.data.source_scenes import _resize, apply_pose, held_out_digits, make_scenes, split_digits
from pipelines.errors import BadValueError


@pytest.fixture(scope="module")
def scenes():
    return load_arrays("mnist_scenes", scenes=40, canvas_height=96, canvas_width=128, scene_seed=3)


def test_scenes_are_deterministic_by_seed(scenes):
    again = load_arrays("mnist_scenes", scenes=40, canvas_height=96, canvas_width=128, scene_seed=3)
    other = load_arrays("mnist_scenes", scenes=40, canvas_height=96, canvas_width=128, scene_seed=4)
    assert set(scenes.arrays) == {"x", "mask", "boxes", "digits", "digit_index", "unseen_x", "unseen_mask",
                                  "unseen_index"}
    for key in scenes.arrays:
        np.testing.assert_array_equal(scenes.arrays[key], again.arrays[key])
    assert not np.array_equal(scenes.arrays["x"], other.arrays["x"])


@pytest.mark.parametrize("drawing", ["", "unseen_"])
def test_each_digit_has_a_box_inside_the_canvas_and_the_mask_agrees_with_the_boxes(scenes, drawing):
    x, mask = scenes.arrays[f"{drawing}x"], scenes.arrays[f"{drawing}mask"]
    boxes, digits = scenes.arrays["boxes"], scenes.arrays["digits"]
    assert x.shape == (40, 96, 128, 1) and x.dtype == np.uint8 and mask.shape == (40, 96, 128)
    assert scenes.class_names[0] == "background" and len(scenes.class_names) == 11
    counts = (digits >= 0).sum(axis=1)
    assert counts.min() >= 2 and counts.max() <= 4
    for n in range(len(x)):
        inside = np.zeros(mask[n].shape, bool)
        real = [(b.astype(int), d) for b, d in zip(boxes[n], digits[n], strict=True) if d >= 0]
        for (top, left, bottom, right), digit in real:
            assert 0 <= top < bottom <= 96 and 0 <= left < right <= 128
            assert 28 <= bottom - top <= 42 and bottom - top == right - left  # scales 1.0..1.5 of MNIST's frame
            labels = set(np.unique(mask[n, top:bottom, left:right])) - {0}
            assert labels == {digit + 1}  # the box holds its digit's pixels, and only those
            assert not inside[top:bottom, left:right].any()  # digits never overlap
            inside[top:bottom, left:right] = True
        assert not mask[n][~inside].any()
        assert (x[n, ..., 0][mask[n] > 0] >= 128).all() and (x[n, ..., 0][mask[n] == 0] < 128).all()


def test_scene_digits_come_from_the_share_the_classifier_holds_out():
    source = load_arrays("mnist_subset").arrays
    images, labels = source["x"][..., 0], source["y"]
    pool, pool_labels = held_out_digits("mnist_subset", 0.3)
    assert len(pool) == 1500 and np.bincount(pool_labels).tolist() == [150] * 10
    split = stratified_split(labels, 0.1, 0.2, 0)  # the classifiers family's default split
    trained_on = {images[i].tobytes() for i in split["train"]}
    assert not any(digit.tobytes() in trained_on for digit in pool)
    held = {images[i].tobytes() for i in np.concatenate([split["val"], split["test"]])}
    assert all(digit.tobytes() in held for digit in pool)


def test_no_test_scene_shows_a_digit_of_a_training_scene(tmp_path):
    from pipelines.configs.fcn_deconv import ScenesData
    from pipelines.data.prepared import prepare
    from pipelines.stages.fcn_deconv import scored_scenes

    data = prepare(ScenesData(scenes=60, canvas_height=56, canvas_width=56, digits_max=2), root=tmp_path)
    pool, _ = held_out_digits("mnist_subset", 0.3)
    trained_on = np.concatenate([data.get(split, "digit_index").ravel() for split in ("train", "val")])
    tested = data.get("test", "unseen_index")
    assert (tested >= 0).sum() == (data.get("test", "digits") >= 0).sum() > 0
    assert not set(tested[tested >= 0].tolist()) & set(trained_on[trained_on >= 0].tolist())
    # the pixels tell the same: no digit of a test scene as scored is one a training scene was drawn with
    seen = {pool[i].tobytes() for i in trained_on[trained_on >= 0]}
    assert not any(pool[i].tobytes() in seen for i in tested[tested >= 0])
    scored = scored_scenes(data, "x")
    for n, (boxes, digits, index) in enumerate(zip(data.get("test", "boxes"), data.get("test", "digits"), tested,
                                                   strict=True)):
        for (top, left, bottom, right), digit, i in zip(boxes.astype(int), digits, index, strict=True):
            if digit >= 0:  # the index names the digit drawn there
                np.testing.assert_array_equal(scored[n, top:bottom, left:right, 0],
                                              _resize(pool[i], bottom - top))
    np.testing.assert_array_equal(scored_scenes(data, "mask"), data.get("test", "unseen_mask"))


def test_both_drawings_of_a_scene_share_its_layout_and_keep_the_classifier_held_out_digits_apart(scenes):
    arrays = scenes.arrays
    images, labels = held_out_digits("mnist_subset", 0.3)
    seen, unseen = split_digits(labels, 0.2, 3)
    assert np.bincount(labels[unseen]).tolist() == [30] * 10 and not set(seen) & set(unseen)
    drawn, kept = arrays["digit_index"], arrays["unseen_index"]
    assert set(drawn[drawn >= 0].tolist()) <= set(seen.tolist())
    assert set(kept[kept >= 0].tolist()) <= set(unseen.tolist())
    np.testing.assert_array_equal(drawn >= 0, arrays["digits"] >= 0)
    np.testing.assert_array_equal(kept >= 0, arrays["digits"] >= 0)
    real = arrays["digits"] >= 0
    assert (labels[drawn[real]] == arrays["digits"][real]).all() and (labels[kept[real]] == arrays["digits"][real]).all()
    first = make_scenes(np.random.default_rng(3), images[seen], labels[seen], scenes=5, height=96, width=128)
    again = make_scenes(np.random.default_rng(3), images[seen], labels[seen], scenes=5, height=96, width=128,
                        unseen=(images[unseen], labels[unseen]))
    for key in ("x", "mask", "boxes", "digits"):  # asking for the second drawing leaves the first as it is
        np.testing.assert_array_equal(first[key], again[key])


@pytest.mark.parametrize("kwargs, message", [
    ({"height": 30, "width": 100}, "canvas 30x100 is smaller than the largest digit"),
    ({"digits": (3, 2)}, "digits_min=3, digits_max=2"),
    ({"scales": (1.5, 1.0)}, "scale_min=1.5, scale_max=1.0"),
    ({"scenes": 0}, "scenes=0"),
])
def test_impossible_scenes_are_clear_errors(kwargs, message):
    images, labels = np.zeros((5, 28, 28), np.uint8), np.arange(5)
    settings = {"scenes": 2, "height": 64, "width": 64, **kwargs}
    with pytest.raises(BadValueError, match=message):  # a user's value: one line, no traceback
        make_scenes(np.random.default_rng(0), images, labels, **settings)


def test_a_crowded_canvas_gets_fewer_digits_never_overlapping_ones():
    images, labels = np.full((5, 28, 28), 255, np.uint8), np.arange(5)
    out = make_scenes(np.random.default_rng(0), images, labels, scenes=5, height=56, width=56, digits=(6, 6),
                      scales=(1.0, 1.0))
    assert ((out["digits"] >= 0).sum(axis=1) <= 4).all()
    assert (out["mask"] > 0).sum(axis=(1, 2)).tolist() == [784 * c for c in (out["digits"] >= 0).sum(axis=1)]


def test_a_pose_is_applied_as_stated():
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 13:15] = 255  # a vertical bar
    np.testing.assert_array_equal(apply_pose(digit, 0.0, 1.0, 0), digit)
    turned = apply_pose(digit, 90.0, 1.0, 0)
    assert turned[13:15, 6:22].mean() > 200 and turned[6:12, 13:15].mean() < 50  # now horizontal
    assert (apply_pose(digit, 0.0, 1.0, 1) > 0).sum() > (digit > 0).sum() > (apply_pose(digit, 0.0, 1.0, -1) > 0).sum()
    assert (apply_pose(digit, 0.0, 0.7, 0) > 100).sum() < (digit > 100).sum()


def test_posed_digits_pose_one_prototype_per_class_within_the_ranges():
    posed = load_arrays("posed_digits", poses=30, rotation_max=30.0, pose_scale_min=0.9, pose_scale_max=1.0)
    x, y, pose = posed.arrays["x"], posed.arrays["y"], posed.arrays["pose"]
    assert x.shape == (300, 28, 28, 1) and y.shape == (300,) and pose.shape == (300, 3)
    assert np.bincount(y).tolist() == [30] * 10
    assert np.abs(pose[:, 0]).max() <= 30.0 and 0.9 <= pose[:, 1].min() <= pose[:, 1].max() <= 1.0
    assert set(np.unique(pose[:, 2])) == {-1.0, 0.0, 1.0}
    source = load_arrays("mnist_subset").arrays
    images, labels = source["x"][..., 0], source["y"]
    sevens = images[labels == 7].reshape(-1, 784).astype(np.float32)
    prototype = images[labels == 7][np.argmin(((sevens - sevens.mean(axis=0)) ** 2).sum(axis=1))]
    first = np.flatnonzero(y == 7)[0]
    np.testing.assert_array_equal(x[first, ..., 0], apply_pose(prototype, float(pose[first, 0]),
                                                                 float(pose[first, 1]), int(pose[first, 2])))
    two = load_arrays("posed_digits", poses=5, writers=2).arrays
    assert len(two["y"]) == 100  # 2 writers x 10 classes x 5 poses
