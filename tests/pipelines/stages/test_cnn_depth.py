"""The CNN depth family's stages: one smoke run of the declared pipeline, in-process with
a DAG-style run key, into a temporary MLflow store, inspected from several angles; and
the pure helpers (shifts, variants, counts) on synthetic inputs. What trains is marked
``slow``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models import cnn as cnn_models
from pipelines.config import ConfigError, to_dict
from pipelines.configs.cnn_depth import FAMILY, VARIANTS
from pipelines.stages import cnn_depth
from tests.conftest import smoke_run
from tests.pipelines.stages.full_mock import assert_full_mock_run

RUN_KEY = "zoo_cnn_depth/test-run"
SMOKE = to_dict(FAMILY.config("smoke"))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return smoke_run(FAMILY, tmp_path_factory.mktemp("cnn_depth"), RUN_KEY)


@pytest.fixture
def client(smoke, monkeypatch):
    smoke["store"].activate(monkeypatch)
    return smoke["store"].client()


def _artifacts(client, run_id: str, folder: str | None = None) -> set[str]:
    return {item.path for item in client.list_artifacts(run_id, folder)}


def _png(client, run_id: str, path: str) -> None:
    with open(client.download_artifacts(run_id, path), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n", path


# --- the smoke run ----------------------------------------------------------------------


@pytest.mark.slow
def test_one_finished_parent_with_every_variant_nested_under_it(client, smoke):
    parent = client.get_run(smoke["parent"])
    assert parent.info.status == "FINISHED"
    experiment = client.get_experiment_by_name(FAMILY.experiment_name).experiment_id
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{smoke['parent']}'")
    assert {c.info.status for c in children} == {"FINISHED"}
    trained = {r["variant"] for r in smoke["out"]["train_variant"]}
    assert trained == set(VARIANTS)
    # one run per variant, plus the single neuron and the parameter count
    assert len(children) == len(VARIANTS) + 2


@pytest.mark.slow
def test_every_training_run_logs_flops_params_and_time(client, smoke):
    run_ids = [r["run_id"] for r in smoke["out"]["train_variant"]] + [smoke["out"]["single_neuron"]["run_id"]]
    for run_id in run_ids:
        metrics = client.get_run(run_id).data.metrics
        assert metrics["flops"] > 0 and metrics["params"] > 0 and metrics["train_seconds"] > 0, run_id
    single = client.get_run(smoke["out"]["single_neuron"]["run_id"]).data.metrics
    side = 28 * 28  # the bundled MNIST subset
    assert single["params"] == side + 1  # one weight per pixel and a bias
    assert single["flops"] == 2 * side + 1 + 1  # multiply-adds, bias, sigmoid


@pytest.mark.slow
def test_gradient_norms_are_logged_per_layer_and_drawn(client, smoke):
    result = next(r for r in smoke["out"]["train_variant"] if r["variant"] == "vanishing_plain")
    run_id = result["run_id"]
    assert {"plots/gradient_heatmap.png", "gradients/norms.json"} <= _artifacts(client, run_id, "plots") | \
        _artifacts(client, run_id, "gradients")
    _png(client, run_id, "plots/gradient_heatmap.png")
    with open(client.download_artifacts(run_id, "gradients/norms.json")) as handle:
        recorded = json.load(handle)
    depth = SMOKE["vanishing"]["depth"]
    # every weight layer of the plain net (stem, two convs per block, the output layer), in order
    assert len(recorded["layers"]) == depth
    assert (recorded["layers"][0], recorded["layers"][-1]) == ("stem", "probabilities")
    assert recorded["steps"][0] == 0 and len(recorded["steps"]) >= 2
    metrics = client.get_run(run_id).data.metrics
    first, last = recorded["norms"][0][0], recorded["norms"][-1][0]
    assert metrics["first_last_gradient_ratio"] == pytest.approx(first / last)
    history = client.get_metric_history(run_id, "grad_norm." + recorded["layers"][0])
    assert [m.step for m in history] == recorded["steps"]


@pytest.mark.slow
def test_pooling_variants_log_shift_agreement_and_the_max_pool_one_its_features(client, smoke):
    by_variant = {r["variant"]: r for r in smoke["out"]["train_variant"]}
    for variant in ("max_pool", "strided"):
        metrics = client.get_run(by_variant[variant]["run_id"]).data.metrics
        for shift in range(1, SMOKE["pooling"]["max_shift"] + 1):
            assert 0.0 <= metrics[f"shift_agreement_{shift}"] <= 1.0
            assert 0.0 <= metrics[f"shifted_accuracy_{shift}"] <= 1.0
        # C7: the first layer's edge score beside that of random filters of its shape
        assert 0.0 < metrics["first_layer_edge_score"] <= 1.0
        assert 0.0 < metrics["first_layer_edge_score_random"] < 0.5
    plots = _artifacts(client, by_variant["max_pool"]["run_id"], "plots")
    assert {"plots/first_layer_filters.png", "plots/feature_maps.png"} <= plots
    _png(client, by_variant["max_pool"]["run_id"], "plots/feature_maps.png")


@pytest.mark.slow
def test_parent_carries_the_comparisons(client, smoke):
    parent = smoke["parent"]
    plots = _artifacts(client, parent, "plots")
    for name in ("gradient_norms_at_init", "training_error", "shift_agreement"):
        assert f"plots/{name}.png" in plots
        _png(client, parent, f"plots/{name}.png")
    with open(client.download_artifacts(parent, "comparison/cnn_depth.json")) as handle:
        comparison = json.load(handle)
    assert set(comparison["variants"]) == set(VARIANTS)
    with open(client.download_artifacts(parent, "comparison/cnn_depth.md")) as handle:
        assert "| max_pool |" in handle.read()
    metrics = client.get_run(parent).data.metrics
    assert metrics["parameter_ratio"] > 10  # the talk: "more than an order of magnitude"
    assert 0.0 <= metrics["neuron_test_accuracy"] <= 1.0


@pytest.mark.slow
def test_each_variant_is_registered_once_and_again_adds_nothing(client, smoke):
    versions = smoke["out"]["register"]["versions"]
    assert set(versions) == set(VARIANTS)
    again = cnn_depth.register(SMOKE, {**smoke["out"]["prepare_data"], "run_key": RUN_KEY,
                                       "train_variant": smoke["out"]["train_variant"]})
    assert {v: d["version"] for v, d in again["versions"].items()} == {v: d["version"] for v, d in versions.items()}


@pytest.mark.slow
def test_a_retried_count_reuses_its_finished_run(client, smoke):
    inputs = {**smoke["out"]["prepare_data"], "run_key": RUN_KEY}
    assert cnn_depth.count_parameters(SMOKE, inputs)["run_id"] == smoke["out"]["count_parameters"]["run_id"]


# --- helpers ------------------------------------------------------------------------------


def test_talk_nets_have_the_counted_parameters_and_the_ratio_is_over_ten():
    from models import build_model

    dense = build_model("mlp", input_shape=cnn_depth.TALK_INPUT, num_classes=10, hidden_units=(100, 100, 100),
                        dropout_rate=0.0)
    cnn = build_model("talk_cnn")
    assert dense.count_params() == 10_000 * 100 + 100 + 2 * (100 * 100 + 100) + 100 * 10 + 10
    assert cnn.count_params() == (9 * 100 + 100) + (9 * 100 * 100 + 100) + (100 * 10 + 10)
    assert dense.count_params() / cnn.count_params() > 10


@pytest.mark.parametrize("dy, dx", [(1, 0), (-2, 0), (0, 3), (0, -1), (2, -2)])
def test_shifted_moves_the_image_and_fills_with_zeros(dy, dx):
    images = np.arange(1, 1 + 2 * 6 * 5, dtype=np.uint8).reshape(2, 6, 5, 1)
    moved = cnn_models.shifted(images, dy, dx)
    for y in range(6):
        for x in range(5):
            source = (y - dy, x - dx)
            expected = images[:, source[0], source[1]] if 0 <= source[0] < 6 and 0 <= source[1] < 5 else 0
            np.testing.assert_array_equal(moved[:, y, x], expected)


def test_shift_agreement_is_one_for_a_shift_invariant_model_and_lower_for_a_position_model():
    import keras

    rng = np.random.default_rng(0)
    # digits-like blobs away from the border, so a shift of 2 keeps them in the frame
    images = np.zeros((40, 12, 12, 1), dtype=np.uint8)
    images[:, 4:8, 4:8] = rng.integers(0, 255, (40, 4, 4, 1), dtype=np.uint8)
    inputs = keras.Input((12, 12, 1))
    pooled = keras.layers.GlobalMaxPooling2D()(inputs)
    invariant = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled))
    flat = keras.layers.Flatten()(inputs)
    positional = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(flat))
    labels = rng.integers(0, 3, 40)
    assert cnn_models.shift_agreement(invariant, images, 2)["agreement"] == {1: 1.0, 2: 1.0}
    result = cnn_models.shift_agreement(positional, images, 2, labels)
    assert result["agreement"][2] < 1.0
    assert set(result["accuracy"]) == {1, 2}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_builds_with_its_described_depth(variant):
    from models import build_model

    typed = FAMILY.config("smoke")
    builder, kwargs, description = cnn_depth.variant_model(typed, variant)
    model = build_model(builder, input_shape=(28, 28, 1), num_classes=10, **kwargs)
    assert model.output_shape == (None, 10)
    if "depth" in kwargs:
        weight_layers = [layer for layer in model.layers if type(layer).__name__ in ("Conv2D", "Dense")
                         and "projection" not in layer.name]
        assert len(weight_layers) == kwargs["depth"], description
        assert str(kwargs["depth"]) in description


def test_unknown_variant_and_bad_config_are_refused():
    with pytest.raises(ValueError, match="variant='nope'"):
        cnn_depth.variant_model(FAMILY.config("smoke"), "nope")
    with pytest.raises(ConfigError, match="depths"):
        FAMILY.config("smoke", {"degradation.depths": (8, 6)})
    with pytest.raises(ConfigError, match="neuron.classes"):
        FAMILY.config("smoke", {"neuron.classes": (3, 3)})
    with pytest.raises(ConfigError, match="variants"):
        FAMILY.config("smoke", {"variants": ("max_pool", "bogus")})


def test_a_class_the_dataset_lacks_is_a_clear_error_before_any_run(monkeypatch):
    from types import SimpleNamespace

    import pipelines.data.prepared
    from pipelines.errors import BadValueError

    monkeypatch.setattr(pipelines.data.prepared, "load_prepared",
                        lambda uri: SimpleNamespace(name="mnist_subset", num_classes=10))
    config = to_dict(FAMILY.config("smoke", {"neuron.classes": (3, 12)}))
    with pytest.raises(BadValueError, match=r"neuron.classes=\(3, 12\): mnist_subset has classes 0..9"):
        cnn_depth.single_neuron(config, {"data_uri": "unused"})


def test_plan_has_one_job_per_chosen_variant_in_the_familys_order():
    config = to_dict(FAMILY.config("smoke", {"variants": ("inception", "max_pool")}))
    assert cnn_depth.plan_variants(config, {}) == [{"variant": "max_pool"}, {"variant": "inception"}]


def test_the_result_contract_holds_on_the_smoke_run(smoke):
    from tests.claims_check import assert_result_contract

    assert_result_contract(FAMILY, smoke["store"], RUN_KEY)


def test_the_sigmoid_pair_trains_its_own_epochs(smoke, monkeypatch):
    """C3 reads the sigmoid nets' gradients at step 0 and neither learns: ``sigmoid_epochs``
    trains them shorter than the other variants."""
    from pipelines import kit

    seen = {}
    monkeypatch.setattr(kit, "run_training", lambda family, typed, inputs, spec: seen.setdefault(
        spec.name, (spec.train or typed.train).epochs) and {"run_id": "r", "metrics": {"params": 1.0, "flops": 1.0}})
    config = to_dict(FAMILY.config("smoke", {"train.epochs": 3, "vanishing.sigmoid_epochs": 1}))
    for variant in ("sigmoid_plain", "vanishing_plain"):
        cnn_depth.train_variant(config, {**smoke["out"]["prepare_data"], "variant": variant})
    assert seen == {"sigmoid_plain": 1, "vanishing_plain": 3}


@pytest.mark.slow
def test_full_profile_runs_end_to_end_on_mock_data_with_its_switches_in_force(store, full_mock_fits):
    assert_full_mock_run(FAMILY, store, full_mock_fits)
