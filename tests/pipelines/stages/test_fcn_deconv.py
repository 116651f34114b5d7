"""The FCN / deconvolution family's stages: one smoke run of the declared pipeline,
in-process with a DAG-style run key, into a temporary MLflow store (no classifier is
registered there, so the run trains one first); and the detection and segmentation
helpers on synthetic inputs. What trains is marked ``slow``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models import deconv
from models import fcn as fcn_model
from pipelines import tracking
from pipelines.configs.fcn_deconv import FAMILY
from pipelines.errors import BadValueError
from pipelines.runner import model_from, usable
from pipelines.stages import fcn_deconv
from tests.conftest import smoke_run
from tests.pipelines.stages.full_mock import assert_full_mock_run

RUN_KEY = "zoo_fcn_deconv/test-run"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return smoke_run(FAMILY, tmp_path_factory.mktemp("fcn_deconv"), RUN_KEY)


@pytest.fixture
def client(smoke, monkeypatch):
    smoke["store"].activate(monkeypatch)
    return smoke["store"].client()


@pytest.mark.slow
def test_with_no_classifier_registered_one_is_trained_registered_and_converted(client, smoke):
    converted = smoke["out"]["convert_to_fcn"]
    used = converted["classifier"]
    assert used["name"] == "nnzoo-classifiers-cnn" and used["profile"] == "smoke"
    version = client.get_model_version(used["name"], used["version"])
    assert client.get_run(version.run_id).data.tags[tracking.TAG_RUN_KEY] == f"{RUN_KEY}/classifier/cnn"
    run = client.get_run(converted["run_id"])
    assert run.data.params["classifier.version"] == used["version"]
    assert run.data.params["classifier.trained_here"] == "True"
    assert run.data.tags["mlflow.parentRunId"] == smoke["parent"]
    assert run.data.metrics["max_abs_difference"] < 1e-5


@pytest.mark.slow
def test_the_registered_fcn_runs_on_other_sizes_and_equals_the_champion_cnn(client, smoke, monkeypatch):
    smoke["store"].activate(monkeypatch)
    from models.fcn import geometry

    converted = smoke["out"]["convert_to_fcn"]
    fcn = tracking.load_keras_model("models:/nnzoo-fcn_deconv-fcn@champion")
    cnn = tracking.load_keras_model(converted["classifier"]["model_uri"])
    digits = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    assert np.abs(cnn.predict(digits, verbose=0) - fcn.predict(digits, verbose=0)[:, 0, 0]).max() < 1e-5
    shape = geometry(fcn)
    for height, width in ((56, 56), (40, 72), (100, 33)):
        out = fcn.predict(np.zeros((1, height, width, 1), np.float32), verbose=0)
        assert out.shape[1:3] == shape.heatmap_shape(height, width)
    geometry_file = client.download_artifacts(converted["run_id"], "fcn/geometry.json")
    with open(geometry_file) as handle:
        recorded = json.load(handle)
    assert recorded["heatmap_shapes"] == {"56x56": [8, 8], "40x72": [4, 12]}


@pytest.mark.slow
def test_every_branch_logs_its_metrics_and_figures_and_registers_its_model(client, smoke):
    out = smoke["out"]
    fcn_run = client.get_run(out["convert_to_fcn"]["run_id"])
    for key in ("detection_precision", "detection_recall", "detection_f1", "detection_recall_peaks_only"):
        assert 0.0 <= fcn_run.data.metrics[key] <= 1.0
    segmenter = client.get_run(out["train_segmenter"]["scenes"]["run_id"])
    assert 0.0 <= segmenter.data.metrics["mean_iou"] <= 1.0 and "pixel_accuracy" in segmenter.data.metrics
    assert segmenter.data.metrics["flops"] > 0  # counted at the scenes' size although the net takes any size
    assert segmenter.data.params["segmenter.loss"] == \
        "per-pixel cross-entropy, non-background pixels weighted 5"  # the smoke profile's digit_weight
    generator = client.get_run(out["train_generator"]["run_id"])
    assert 0.0 <= generator.data.metrics["recognised_share"] <= 1.0
    assert generator.data.params["evaluation.classifier"] == \
        f"nnzoo-classifiers-cnn/{out['convert_to_fcn']['classifier']['version']}"
    artifacts = {run.info.run_id: {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
                 for run in (fcn_run, segmenter, generator)}
    assert {"plots/detections.png", "plots/heatmaps_over_scenes.png", "plots/heatmaps_by_size.png"} <= \
        artifacts[fcn_run.info.run_id]
    assert "plots/masks.png" in artifacts[segmenter.info.run_id]
    assert {"plots/class_by_rotation.png", "plots/interpolations.png"} <= artifacts[generator.info.run_id]
    assert {a.path for a in client.list_artifacts(smoke["parent"], "scenes")} >= {
        "scenes/boxes.png", "scenes/masks.png", "scenes/posed_digits.png"}
    # the parent carries the converted net's heatmaps and detections that its experiment promises
    assert {a.path for a in client.list_artifacts(smoke["parent"], "plots")} >= set(fcn_deconv.FCN_FIGURES)
    for name in ("fcn", "segmenter", "generator"):
        assert client.get_model_version_by_alias(f"nnzoo-fcn_deconv-{name}", "champion")
    parent = client.get_run(smoke["parent"])
    assert parent.info.status == "FINISHED"
    assert {"detection_recall", "mean_iou", "recognised_share"} <= set(parent.data.metrics)


@pytest.mark.slow
def test_the_registered_generator_loads_in_safe_mode_and_takes_class_and_pose(smoke, monkeypatch):
    smoke["store"].activate(monkeypatch)
    generator = tracking.load_keras_model("models:/nnzoo-fcn_deconv-generator@champion")
    images = generator.predict([np.eye(10, dtype=np.float32)[:2], np.array([[10.0, 1.0, 0.0], [-10.0, 0.9, 1.0]],
                                                                            np.float32)], verbose=0)
    assert images.shape == (2, 28, 28, 1)


@pytest.mark.slow
def test_a_retry_of_the_conversion_reuses_its_finished_run(smoke, monkeypatch):
    smoke["store"].activate(monkeypatch)
    from pipelines.config import to_dict

    first = smoke["out"]["convert_to_fcn"]
    again = fcn_deconv.convert_to_fcn(to_dict(FAMILY.config("smoke")), {
        **smoke["out"]["prepare_data"], "run_key": RUN_KEY, "prepare_scenes": smoke["out"]["prepare_scenes"]})
    assert again["run_id"] == first["run_id"] and again["classifier"]["version"] == first["classifier"]["version"]


# --- the helpers, on synthetic inputs -------------------------------------------------------


class _Shape:
    window, stride = (28, 28), (4, 4)


def _heat(rows: int, cols: int, peaks: dict[tuple[int, int], tuple[int, float]]) -> np.ndarray:
    heat = np.full((1, rows, cols, 10), 0.05, np.float32)
    heat[..., 1] = 0.55  # what an empty window says: "1", unsure
    for (i, j), (label, score) in peaks.items():
        heat[0, i, j] = (1 - score) / 9
        heat[0, i, j, label] = score
    return heat


def test_a_peak_above_the_threshold_becomes_its_window_and_the_rest_stays_silent():
    maps = [(_heat(10, 10, {(2, 3): (7, 0.999), (7, 7): (4, 0.95)}), 1.0, 1.0)]
    image = np.zeros((64, 64, 1), np.float32)
    found = fcn_model.find_boxes(maps, 0, image, _Shape, threshold=0.99, overlap=0.2, recentre=False)
    assert found == [(7, pytest.approx(0.999), [8.0, 12.0, 36.0, 40.0])]


def test_a_box_is_moved_onto_the_ink_and_read_again_from_the_heatmap_there():
    heat = _heat(10, 10, {(2, 2): (3, 0.995)})
    heat[0, 3, 3] = 0.0
    heat[0, 3, 3, 5] = 1.0  # the centred window sees a 5
    image = np.zeros((64, 64, 1), np.float32)
    image[18:34, 18:34] = 1.0  # ink centred at (26, 26): the window at cell (3, 3) covers 12..40
    found = fcn_model.find_boxes([(heat, 1.0, 1.0)], 0, image, _Shape, threshold=0.99, overlap=0.2)
    assert len(found) == 1
    label, score, box = found[0]
    assert label == 5 and score == pytest.approx(1.0)
    np.testing.assert_allclose(box, [12.0, 12.0, 40.0, 40.0])


def test_non_maximum_suppression_keeps_the_best_of_overlapping_boxes_across_scales():
    fine = _heat(10, 10, {(2, 2): (6, 0.995)})
    coarse = _heat(6, 6, {(1, 1): (6, 0.999)})  # the same digit seen at scale 1.25
    image = np.zeros((64, 64, 1), np.float32)
    found = fcn_model.find_boxes([(fine, 1.0, 1.0), (coarse, 1.25, 1.25)], 0, image, _Shape, threshold=0.99,
                                  overlap=0.2, recentre=False)
    assert [(label, round(score, 3)) for label, score, _ in found] == [(6, 0.999)]
    np.testing.assert_allclose(found[0][2], [5.0, 5.0, 40.0, 40.0])


def test_precision_and_recall_count_class_and_overlap():
    boxes = np.array([[[0, 0, 28, 28], [40, 40, 68, 68], [-1, -1, -1, -1]]], np.float32)
    digits = np.array([[3, 8, -1]])
    found = [[(3, 0.99, [2, 2, 30, 30]),     # IoU 0.75 with its 3: found
              (8, 0.99, [40, 60, 68, 88]),   # IoU 0.17 with the 8: false
              (3, 0.98, [1, 1, 29, 29])]]    # the 3 again: a duplicate is false
    scores = fcn_model.score_detections(found, boxes, digits, 0.5)
    assert scores["detection_precision"] == pytest.approx(1 / 3)
    assert scores["detection_recall"] == pytest.approx(1 / 2)
    wrong_class = fcn_model.score_detections([[(5, 0.99, [0, 0, 28, 28])]], boxes, digits, 0.5)
    assert wrong_class["detection_precision"] == 0.0 and wrong_class["detection_recall"] == 0.0


def test_mean_iou_is_over_the_classes_present():
    truth = np.array([[0, 0, 1, 1], [0, 0, 2, 2]])
    predicted = np.array([[0, 0, 1, 2], [0, 0, 2, 2]])
    scores = deconv.segmentation_scores(predicted, truth, 11)
    assert scores["pixel_accuracy"] == pytest.approx(7 / 8)
    assert scores["iou"][:3] == [1.0, 0.5, pytest.approx(2 / 3)]
    assert scores["mean_iou"] == pytest.approx((1 + 0.5 + 2 / 3) / 3)  # classes 3..10 are absent


@pytest.mark.parametrize("crop", [0, 4])
def test_digit_pixels_weigh_digit_weight_in_the_loss_and_background_pixels_one(crop):
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 11, (6, 8, 8)).astype(np.uint8)
    images = (masks * 20)[..., None].astype(np.uint8)  # the image tells its own mask
    batches = list(fcn_deconv._segmentation_batches(images, masks, 3, shuffle=True, seed=0, crop=crop,
                                                    digit_weight=5.0))
    assert len(batches) == 2
    for x, y, weight in batches:
        y, weight = y.numpy(), weight.numpy()
        assert x.shape[:3] == y.shape == weight.shape == (3, crop or 8, crop or 8)
        np.testing.assert_array_equal(np.rint(x.numpy()[..., 0] * 255 / 20), y)  # cropped together
        np.testing.assert_array_equal(weight, np.where(y > 0, 5.0, 1.0))
    plain = next(iter(fcn_deconv._segmentation_batches(images, masks, 3, shuffle=False, seed=0)))
    assert len(plain) == 2  # no weights: every pixel counts the same


def test_a_canvas_the_segmenter_cannot_halve_is_a_clear_error():
    with pytest.raises(BadValueError, match=r"canvas 100x112: .* multiples of 16 .*, e.g. 96x112"):
        fcn_deconv._check_divisible(100, 112, 16)


def test_a_classifier_version_the_registry_lacks_is_a_clear_error(tmp_path, monkeypatch):
    from tests.conftest import new_store

    new_store(tmp_path / "store").activate(monkeypatch)
    typed = FAMILY.config("smoke", {"classifier.classifier_version": "99"})
    with pytest.raises(BadValueError, match=r"classifier_version=99: nnzoo-classifiers-cnn has no version 99"):
        model_from(FAMILY, typed, {}, "classifier")


def test_a_champion_from_a_smaller_profile_is_not_used():
    assert usable("quick", "smoke") and usable("full", "quick")
    assert usable("quick", "quick")
    assert not usable("smoke", "quick") and not usable(None, "smoke")


def test_the_result_contract_holds_on_the_smoke_run(smoke):
    from tests.claims_check import assert_result_contract

    assert_result_contract(FAMILY, smoke["store"], RUN_KEY)


@pytest.mark.slow
def test_full_profile_runs_end_to_end_on_mock_data_with_its_switches_in_force(store, full_mock_fits):
    assert_full_mock_run(FAMILY, store, full_mock_fits)
