"""The CNN depth family's acceptance levels on the real (quick) data, kept in CI:

* C1: a single sigmoid neuron and LogisticRegression agree within one point of test
  accuracy on the two-class slice;
* C3: the 20-layer plain ReLU CNN without normalisation does not train in three epochs
  while the same net with residual connections does, and its gradients at
  initialisation are orders of magnitude smaller at every layer; with sigmoid, the
  plain net's first layer gets a gradient more than 100x smaller than its last at
  initialisation and the residual twin's first layer gets orders of magnitude more; the
  deep sigmoid MLP starves its first layer, the ReLU twin does not.
"""

from __future__ import annotations

import pytest

from pipelines.config import to_dict
from pipelines.configs.cnn_depth import FAMILY
from pipelines.stages import cnn_depth, common

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    from tests.conftest import new_store

    return new_store(tmp_path_factory.mktemp("cnn_depth_claims"))


@pytest.fixture
def quick_config(shared, monkeypatch):
    shared.activate(monkeypatch)
    return to_dict(FAMILY.config("quick", {"train.epochs": 3}))


@pytest.fixture(scope="module")
def quick(shared):
    config = to_dict(FAMILY.config("quick", {"train.epochs": 3}))
    with pytest.MonkeyPatch.context() as patch:
        shared.activate(patch)
        data = common.prepare_data(FAMILY, config, {"run_key": None})
        inputs = {**data, "run_key": None}
        results = {variant: cnn_depth.train_variant(config, {**inputs, "variant": variant})["metrics"]
                   for variant in ("vanishing_plain", "vanishing_residual", "mlp_sigmoid", "mlp_relu")}
        results["single_neuron"] = cnn_depth.single_neuron(config, inputs)["metrics"]
    return results


def test_single_neuron_and_logistic_regression_agree_within_one_point(quick):
    neuron = quick["single_neuron"]
    assert neuron["neuron_test_accuracy"] > 0.85
    assert neuron["accuracy_gap"] <= 0.01
    assert neuron["weight_correlation"] > 0.5


def test_deep_plain_net_without_normalisation_trains_worse_than_its_residual_twin(quick):
    plain, residual = quick["vanishing_plain"], quick["vanishing_residual"]
    assert plain["test_accuracy"] < 0.3
    assert residual["test_accuracy"] > 0.8
    # the plain net's gradient is tiny everywhere, first layer included
    assert plain["gradient_norm_first_layer"] < residual["gradient_norm_first_layer"] / 100


def test_sigmoid_plain_net_starves_its_first_layer_and_shortcuts_feed_it(quick_config):
    import keras
    import numpy as np

    from models import build_model
    from pipelines.data.prepared import load_prepared, normalize_images
    from pipelines.gradients import GradientNorms

    data = load_prepared(common.prepare_data(FAMILY, quick_config, {"run_key": None})["data_uri"])
    images, labels = data.split("train")
    first_last, first = {}, {}
    for variant in ("sigmoid_plain", "sigmoid_residual"):
        builder, kwargs, _ = cnn_depth.variant_model(FAMILY.load(quick_config), variant)
        keras.utils.set_random_seed(0)
        model = build_model(builder, input_shape=data.image_shape, num_classes=data.num_classes, **kwargs)
        model.compile(loss="sparse_categorical_crossentropy")
        recorder = GradientNorms(normalize_images(images[:64]), labels[:64])
        recorder.set_model(model)
        norms = np.array(list(recorder.compute_norms().values()))
        first_last[variant], first[variant] = norms[0] / norms[-1], norms[0]
    assert first_last["sigmoid_plain"] < 1e-2  # the bar: at least 100x smaller
    assert first["sigmoid_residual"] > 1e6 * first["sigmoid_plain"]


def test_deep_sigmoid_mlp_starves_its_first_layer_and_relu_does_not(quick):
    assert quick["mlp_sigmoid"]["first_last_gradient_ratio"] < 1e-3
    assert quick["mlp_relu"]["first_last_gradient_ratio"] > 1e-1
    assert quick["mlp_relu"]["test_accuracy"] > quick["mlp_sigmoid"]["test_accuracy"] + 0.3
