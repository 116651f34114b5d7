"""The unsupervised family's claims, judged by their declarations
(:mod:`pipelines.configs.unsupervised`) on what the family's own stages measure and log,
on the bundled MNIST subset with fewer steps than the quick profile, kept in CI:

* C4: the 10-unit autoencoder's test error per pixel is at most 0.8 of PCA-10's (10
  epochs at 3e-3 instead of the quick run's 40 at 1e-3: about 0.68 here, 0.59 in the
  quick run); an untrained autoencoder of the same shape fails the bar;
* C5: two Gibbs chains from the same test digit end on different pixels (share of pixels
  more than 0.5 apart in probability >= 0.02; 100 steps from an RBM of 5 epochs: about
  0.13); a chain without sampling, or an untrained RBM (noise around 0.5), gives 0 and
  fails;
* C6: DBN pretraining beats random init at the fewest labels (1%: 40 images; two
  seeds, 150 fine-tuning steps, RBMs of 5 epochs: about +0.03); the same fine-tuning with
  the DBN side started from random weights gains nothing and fails;
* RBM features + logistic regression on scikit-learn's example protocol reach the
  example's published level (>= 0.93).

One module fixture runs every stage once under one parent run, as the pipeline does.
"""

from __future__ import annotations

import pytest

from pipelines import tracking
from pipelines.claims import FAIL
from pipelines.config import to_dict
from pipelines.configs.unsupervised import FAMILY
from pipelines.stages import unsupervised
from pipelines.stages.unsupervised import autoencoder, dbn
from tests.claims_check import assert_claim, verdict
from tests.conftest import prepared_in

pytestmark = pytest.mark.slow

SETTINGS = {
    "train.epochs": 10, "train.learning_rate": 3e-3,
    "rbm.layers": (500, 500), "rbm.epochs": 5, "rbm.gibbs_steps": 100,
    "finetune.label_fractions": (0.01, 1.0), "finetune.seeds": 2, "finetune.steps": 150,
}
"""The quick profile with fewer steps. Only the fewest-labels jobs are fine-tuned (C6 reads
that share; the largest share stays in the config so no fine-tuned model is logged)."""
FEWEST = min(SETTINGS["finetune.label_fractions"])


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    from tests.conftest import new_store

    return new_store(tmp_path_factory.mktemp("unsupervised_claims"))


@pytest.fixture(scope="module")
def family(shared):
    config = to_dict(FAMILY.config("quick", SETTINGS))
    with prepared_in(shared, FAMILY, config) as inputs:
        trained = unsupervised.train_autoencoder(config, inputs)
        evaluation = unsupervised.evaluate_autoencoder(config, {**inputs, "train_autoencoder": trained})
        stack = None
        for layer in range(1, len(SETTINGS["rbm.layers"]) + 1):
            stack = unsupervised.pretrain_rbm_layer(config, {**inputs, "layer": layer, "pretrain_rbm_layer": stack})
        jobs = [job for job in unsupervised.plan_finetuning(config, {"pretrain_rbm_layer": stack})
                if job["fraction"] == FEWEST]
        results = [unsupervised.finetune(config, {**inputs, **job, "pretrain_rbm_layer": stack}) for job in jobs]
        features = unsupervised.evaluate_rbm_features(config, inputs)
        unsupervised.compare(config, {**inputs, "finetune": results, "evaluate_autoencoder": evaluation,
                                      "evaluate_rbm_features": features})
    return {"config": config, "inputs": inputs, "autoencoder": trained, "ae_metrics": evaluation["metrics"],
            "stack": stack["stack"], "results": results, "features": features}


@pytest.fixture
def active(shared, monkeypatch):
    shared.activate(monkeypatch)


def _metrics(run_id: str) -> dict[str, float]:
    return tracking.get_run(run_id).data.metrics


# --- C4 -----------------------------------------------------------------------------------


def test_c4_the_autoencoder_compresses_better_than_pca_with_as_many_components(family, active):
    logged = _metrics(family["autoencoder"]["run_id"])
    assert logged["mse_ratio_vs_pca"] == pytest.approx(family["ae_metrics"]["mse_ratio_vs_pca"])
    assert 0.025 < logged["pca_test_mse"] < 0.045  # PCA-10 on this split is about 0.033 per pixel
    assert_claim("C4", logged)


def test_c4_fails_for_an_untrained_autoencoder(family, active, monkeypatch):
    import keras
    from matplotlib.figure import Figure

    from models import build_model
    from pipelines.data.prepared import load_prepared
    from pipelines.kit import builder_kwargs

    typed = FAMILY.load(family["config"])
    keras.utils.set_random_seed(0)
    untrained = build_model("autoencoder", input_shape=load_prepared(family["inputs"]["data_uri"]).image_shape,
                            **builder_kwargs(typed.autoencoder))
    monkeypatch.setattr(tracking, "load_keras_model", lambda uri: untrained)
    monkeypatch.setattr(autoencoder, "_code_map", lambda *args: Figure())  # the t-SNE picture measures nothing
    with tracking.run(FAMILY.experiment_name, "untrained autoencoder",
                      parent_run_id=family["inputs"]["parent_run_id"]) as run:
        pass
    metrics = unsupervised.evaluate_autoencoder(family["config"], {
        **family["inputs"], "train_autoencoder": {"run_id": run.run_id, "model_uri": "untrained"}})["metrics"]
    assert metrics["pca_test_mse"] == pytest.approx(family["ae_metrics"]["pca_test_mse"])
    assert verdict("C4", metrics) == FAIL, metrics
    assert metrics["mse_ratio_vs_pca"] > 1.5


# --- C5 -----------------------------------------------------------------------------------


def test_c5_two_gibbs_chains_from_one_digit_end_slightly_different(family, active):
    layer_1 = family["stack"][0]["run_id"]
    logged = _metrics(layer_1)
    assert_claim("C5", logged)
    assert logged["gibbs_chain_disagreement"] < 0.5  # different samples, not noise
    assert "plots/gibbs_samples.png" in {item.path for item in tracking.client().list_artifacts(layer_1, "plots")}


def test_c5_fails_for_a_chain_without_sampling_and_for_an_untrained_rbm(family, active):
    from models.rbm import RBM
    from pipelines.data.prepared import load_prepared

    typed = FAMILY.load(family["config"])
    data = load_prepared(family["inputs"]["data_uri"])
    trained = tracking.load_keras_model(family["stack"][0]["model_uri"])
    trained.sample = lambda probabilities: probabilities  # mean-field: every step deterministic
    _, deterministic = dbn.gibbs_samples(trained, data, typed)
    assert set(deterministic.values()) == {0.0}
    assert verdict("C5", {"gibbs_chain_disagreement": deterministic[typed.rbm.gibbs_steps]}) == FAIL
    _, untrained = dbn.gibbs_samples(RBM(784, SETTINGS["rbm.layers"][0], seed=0), data, typed)
    assert verdict("C5", {"gibbs_chain_disagreement": untrained[typed.rbm.gibbs_steps]}) == FAIL, untrained


# --- C6 -----------------------------------------------------------------------------------


def test_c6_dbn_pretraining_helps_with_the_fewest_labels(family, active):
    logged = _metrics(family["inputs"]["parent_run_id"])
    assert logged["finetune_fewest_labels_fraction"] == FEWEST
    assert logged["finetune_gain_fewest_labels_mean"] == logged[f"finetune_gain_{FEWEST:g}_mean"]
    assert logged["finetune_gain_fewest_labels_std"] >= 0
    assert_claim("C6", logged)


def test_c6_fails_when_the_dbn_side_also_starts_from_random_weights(family, active, monkeypatch):
    monkeypatch.setattr(dbn, "_load_stack", lambda stack: None)  # the "dbn" net gets Glorot weights too
    parent = tracking.start_run(FAMILY.experiment_name, "claims: no pretraining")
    inputs = {**family["inputs"], "parent_run_id": parent, "pretrain_rbm_layer": {"stack": family["stack"]}}
    random = next(r for r in family["results"] if r["init"] == "random" and r["seed"] == 0)
    unpretrained = unsupervised.finetune(family["config"], {**inputs, "fraction": FEWEST, "init": "dbn", "seed": 0})
    unsupervised.compare(family["config"], {**inputs, "finetune": [unpretrained, random], "evaluate_autoencoder": {
        "metrics": {}}, "evaluate_rbm_features": {}})
    logged = _metrics(parent)
    assert logged["finetune_gain_fewest_labels_mean"] == pytest.approx(0.0, abs=0.01)
    assert verdict("C6", logged) == FAIL, logged


# --- RBM features (scikit-learn's example) ---------------------------------------------------


def test_rbm_features_reach_the_scikit_learn_example_level(family, active):
    result = family["features"]
    logged = _metrics(result["run_id"])
    assert logged["rbm_logistic_accuracy"] == pytest.approx(result["metrics"]["rbm_logistic_accuracy"])
    assert result["metrics"]["rbm_logistic_accuracy"] >= 0.93
    # The features are what helps: logistic regression on the raw pixels stays well below.
    assert result["metrics"]["raw_logistic_accuracy"] < result["metrics"]["rbm_logistic_accuracy"] - 0.05
