"""The CNN depth family's claims (C1, C2, C3, C7, C8) on CI-sized data: each is driven
through the family's own stages and judged by its declaration
(``pipelines/configs/cnn_depth.py``) on the metrics MLflow holds for the run the
declaration names; then each is shown to FAIL once the feature it is about is taken away.

One module fixture runs the stages once on the bundled MNIST subset, quick profile:
``prepare_data`` (the parent run), ``single_neuron`` (15 epochs instead of 40),
``count_parameters``, ``train_variant`` for the pooling pair (6 epochs instead of 8), the
deep MLPs (1 epoch) and the deep sigmoid CNNs without normalisation (one epoch on a
100-image slice: C3 reads their gradients at initialisation, step 0), then ``compare``
(the parent run's metrics).
"""

from __future__ import annotations

import pytest

from pipelines import tracking
from pipelines.claims import FAIL, get_claim
from pipelines.config import to_dict
from pipelines.configs.cnn_depth import FAMILY
from pipelines.filters import first_layer_edge_scores
from pipelines.stages import cnn_depth
from tests.claims_check import assert_claim, verdict

pytestmark = pytest.mark.slow

POOLING = {"train.epochs": 6, "neuron.fit_epochs": 15}
"""The pooling pair, the single neuron and the comparison (C1, C2, C7, C8)."""
MLPS = {"train.epochs": 1}
AT_INIT = {"train.epochs": 1, "data.max_examples": 100}
"""The deep sigmoid CNNs without normalisation: C3 reads their gradients at step 0."""
DEEP_CNNS = ("sigmoid_plain", "sigmoid_residual")


def _config(overrides):
    return to_dict(FAMILY.config("quick", overrides))


def newest_metrics(model: str) -> dict[str, float]:
    """Metrics of the newest run of the family tagged ``model``: where the declaration
    (and the report) reads a claim's numbers."""
    experiment = tracking.ensure_experiment(FAMILY.experiment_name)
    runs = tracking.client().search_runs([experiment], f"tags.`{tracking.TAG_MODEL}` = '{model}'",
                                         order_by=["attributes.start_time DESC"], max_results=1)
    assert runs, f"no run tagged {model}"
    return dict(runs[0].data.metrics)


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    from pipelines.data.prepared import load_prepared, prepare
    from tests.conftest import new_store, prepared_in

    shared = new_store(tmp_path_factory.mktemp("cnn_depth_claims"))
    config, mlps, at_init = _config(POOLING), _config(MLPS), _config(AT_INIT)
    with prepared_in(shared, FAMILY, config) as inputs:
        small = {**inputs, "data_uri": prepare(FAMILY.load(at_init).data).uri}
        out = {"single_neuron": cnn_depth.single_neuron(config, inputs),
               "count_parameters": cnn_depth.count_parameters(config, inputs)}
        trained = [cnn_depth.train_variant(config, {**inputs, "variant": v}) for v in ("max_pool", "strided")]
        trained += [cnn_depth.train_variant(mlps, {**inputs, "variant": v}) for v in ("mlp_sigmoid", "mlp_relu")]
        trained += [cnn_depth.train_variant(at_init, {**small, "variant": v}) for v in DEEP_CNNS]
        cnn_depth.compare(config, {**inputs, **out, "train_variant": trained})
        logged = {model: newest_metrics(model) for model in (
            "pipeline", "single_neuron", "talk_nets", "max_pool", "strided", "mlp_sigmoid", "mlp_relu", *DEEP_CNNS)}
    return {"store": shared, "config": config, "at_init": at_init, "inputs": inputs, "logged": logged,
            "image_shape": load_prepared(inputs["data_uri"]).image_shape, "small_uri": small["data_uri"]}


@pytest.fixture
def active(stages, monkeypatch):
    """The fixture's store, active for a test that runs a stage again."""
    stages["store"].activate(monkeypatch)
    return stages


def _as_claim(claim_id: str, value: float, baseline: float | None = None) -> dict[str, float]:
    """Metrics under the claim's own names: another measurement judged by the same bar."""
    claim = get_claim(claim_id)
    return {claim.metric: value, **({claim.baseline: baseline} if claim.baseline else {})}


# --- C1 -----------------------------------------------------------------------------------


def test_c1_single_neuron_is_logistic_regression(stages):
    neuron = stages["logged"]["single_neuron"]
    assert_claim("C1", neuron)
    assert neuron["neuron_test_accuracy"] > 0.85
    assert neuron["weight_correlation"] > 0.5


def test_c1_fails_for_a_neuron_that_was_not_fitted(active):
    config = _config({**POOLING, "neuron.fit_epochs": 1, "neuron.step_size": 1e-7})
    unfitted = cnn_depth.single_neuron(config, active["inputs"])["metrics"]
    assert verdict("C1", unfitted) == FAIL, unfitted


# --- C2 -----------------------------------------------------------------------------------


def test_c2_the_talks_cnn_has_over_ten_times_fewer_parameters(stages):
    counted = stages["logged"]["talk_nets"]
    assert_claim("C2", counted)
    assert counted["dense_params"] > 1_000_000


def test_c2_fails_when_the_cnn_is_swapped_for_the_dense_net(active, monkeypatch):
    import models

    real = models.build_model

    def dense_for_cnn(name, /, **kwargs):
        if name == "talk_cnn":
            return real("mlp", input_shape=cnn_depth.TALK_INPUT, num_classes=10, hidden_units=(100, 100, 100),
                        dropout_rate=0.0, name="talk_cnn")
        return real(name, **kwargs)

    monkeypatch.setattr(models, "build_model", dense_for_cnn)
    counted = cnn_depth.count_parameters(active["config"], active["inputs"])["metrics"]
    assert counted["parameter_ratio"] == 1.0
    assert verdict("C2", counted) == FAIL


# --- C3 -----------------------------------------------------------------------------------


def test_c3_the_sigmoid_nets_first_layer_starves_and_shortcuts_feed_it(stages):
    logged = stages["logged"]
    assert_claim("C3", logged["pipeline"])
    for variant in ("sigmoid_plain", "sigmoid_residual"):
        assert logged["pipeline"][f"{variant}_first_last_gradient_ratio"] == \
            pytest.approx(logged[variant]["first_last_gradient_ratio"])
    # with the shortcuts the first layer's gradient is orders of magnitude larger, not only relatively
    assert logged["sigmoid_residual"]["gradient_norm_first_layer"] > \
        1e6 * logged["sigmoid_plain"]["gradient_norm_first_layer"]


def _at_init(config: dict, data_uri: str, variant: str) -> dict[str, float]:
    """What ``train_variant`` records at step 0 (the same fixed batch, seed and recorder),
    without the training: first/last ratio and first-layer gradient norm."""
    import keras
    import numpy as np

    from models import build_model
    from pipelines.data.prepared import load_prepared, normalize_images
    from pipelines.gradients import GradientNorms

    typed = FAMILY.load(config)
    data = load_prepared(data_uri)
    images, labels = data.split("train")
    fixed = np.random.default_rng(typed.train.seed).choice(len(labels), min(typed.gradients.examples, len(labels)),
                                                           replace=False)
    builder, kwargs, _ = cnn_depth.variant_model(typed, variant)
    keras.utils.set_random_seed(typed.train.seed)
    model = build_model(builder, input_shape=data.image_shape, num_classes=data.num_classes, name=variant, **kwargs)
    model.compile(loss="sparse_categorical_crossentropy")
    recorder = GradientNorms(normalize_images(images[fixed]), labels[fixed])
    recorder.set_model(model)
    norms = list(recorder.compute_norms().values())
    return {"first_last_gradient_ratio": norms[0] / norms[-1], "gradient_norm_first_layer": norms[0]}


def test_c3_fails_without_the_shortcuts(stages):
    # the plain net in the residual net's place: no net whose shortcuts feed the first layer
    plain = stages["logged"]["sigmoid_plain"]["first_last_gradient_ratio"]
    assert verdict("C3", _as_claim("C3", plain, plain)) == FAIL


def test_c3_fails_with_relu_where_the_claim_has_sigmoid(stages):
    # the same two nets with ReLU (the family's vanishing_* variants), at initialisation
    relu = {variant: _at_init(stages["at_init"], stages["small_uri"], variant)
            for variant in ("sigmoid_plain", "vanishing_plain", "vanishing_residual")}
    assert relu["sigmoid_plain"]["first_last_gradient_ratio"] == \
        pytest.approx(stages["logged"]["sigmoid_plain"]["first_last_gradient_ratio"], rel=1e-3)  # what the stage did
    swapped = _as_claim("C3", relu["vanishing_plain"]["first_last_gradient_ratio"],
                        relu["vanishing_residual"]["first_last_gradient_ratio"])
    assert verdict("C3", swapped) == FAIL, swapped
    # ReLU starves every layer of the plain net alike: its first layer gets far less than the residual twin's
    assert relu["vanishing_plain"]["gradient_norm_first_layer"] < \
        relu["vanishing_residual"]["gradient_norm_first_layer"] / 100


def test_deep_sigmoid_mlp_starves_its_first_layer_and_relu_does_not(stages):
    logged = stages["logged"]
    assert logged["mlp_sigmoid"]["first_last_gradient_ratio"] < 1e-3
    assert logged["mlp_relu"]["first_last_gradient_ratio"] > 1e-1
    assert logged["mlp_relu"]["test_accuracy"] > logged["mlp_sigmoid"]["test_accuracy"] + 0.3


# --- C7 -----------------------------------------------------------------------------------


def test_c7_trained_first_layer_filters_look_like_edge_detectors(stages):
    assert_claim("C7", stages["logged"]["max_pool"])


def test_c7_fails_for_the_same_filters_untrained(stages):
    import keras

    from models import build_model

    typed = FAMILY.load(stages["config"])
    builder, kwargs, _ = cnn_depth.variant_model(typed, "max_pool")
    keras.utils.set_random_seed(typed.train.seed)
    model = build_model(builder, input_shape=stages["image_shape"], num_classes=10, name="max_pool", **kwargs)
    untrained = first_layer_edge_scores(model.get_layer("conv_1_1"), typed.train.seed)
    assert untrained["first_layer_edge_score_random"] == \
        pytest.approx(stages["logged"]["max_pool"]["first_layer_edge_score_random"])
    assert verdict("C7", untrained) == FAIL, untrained


# --- C8 -----------------------------------------------------------------------------------


def test_c8_max_pooling_keeps_more_predictions_under_two_pixel_shifts(stages):
    assert_claim("C8", stages["logged"]["max_pool"], stages["logged"]["strided"])


def test_c8_fails_with_strides_instead_of_pooling_on_both_sides(stages):
    strided = stages["logged"]["strided"]
    assert verdict("C8", strided, strided) == FAIL, strided["shift_agreement_2"]
