"""The unsupervised family's acceptance levels on the real (quick) data, kept in CI:

* C4: a 10-unit autoencoder reconstructs the test images better than PCA with 10
  components fitted on the same split (both logged in the autoencoder's run);
* RBM features + logistic regression on scikit-learn's example protocol reach the
  example's published level (>= 0.93).

The DBN-vs-random comparison (C6) is reported, not asserted: see docs/claims.md.
"""

from __future__ import annotations

import pytest

from pipelines import tracking
from pipelines.config import to_dict
from pipelines.configs.unsupervised import FAMILY
from pipelines.stages import common, unsupervised

pytestmark = pytest.mark.slow


def test_quick_autoencoder_beats_pca_with_as_many_components(store):
    config = to_dict(FAMILY.config("quick"))
    data = common.prepare_data(FAMILY, config, {"run_key": None})
    inputs = {**data, "run_key": None}
    trained = unsupervised.train_autoencoder(config, inputs)
    metrics = unsupervised.evaluate_autoencoder(config, {**inputs, "train_autoencoder": trained})["metrics"]
    logged = tracking.get_run(trained["run_id"]).data.metrics
    assert logged["test_mse"] == pytest.approx(metrics["test_mse"])
    assert logged["pca_test_mse"] == pytest.approx(metrics["pca_test_mse"])
    assert 0.025 < metrics["pca_test_mse"] < 0.045  # PCA-10 on this split is about 0.034 per pixel
    assert metrics["test_mse"] < metrics["pca_test_mse"]


def test_rbm_features_reach_the_scikit_learn_example_level(store):
    config = to_dict(FAMILY.config("quick"))
    # It reads no prepared data (scikit-learn's digits), so only a parent run to nest under.
    parent = tracking.start_run(FAMILY.experiment_name, "claims")
    result = unsupervised.evaluate_rbm_features(config, {"parent_run_id": parent, "run_key": None})
    logged = tracking.get_run(result["run_id"]).data.metrics
    assert logged["rbm_logistic_accuracy"] == pytest.approx(result["metrics"]["rbm_logistic_accuracy"])
    assert result["metrics"]["rbm_logistic_accuracy"] >= 0.93
    # The features are what helps: logistic regression on the raw pixels stays well below.
    assert result["metrics"]["raw_logistic_accuracy"] < result["metrics"]["rbm_logistic_accuracy"] - 0.05
