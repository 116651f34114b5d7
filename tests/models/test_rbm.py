"""Bernoulli RBM: exact likelihood on a tiny model, scikit-learn's pseudo-likelihood,
the conditionals, the training monitors and a save/load round trip."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

from models import build_model, get_builder
from models.rbm import MAX_EXACT_VISIBLE, RBM

# Three 6-bit patterns; the data are these with independent bit flips. Their bits are
# strongly correlated, which a model of independent bits cannot capture but an RBM can.
PROTOTYPES = np.array([[1, 1, 1, 0, 0, 0],
                       [0, 0, 0, 1, 1, 1],
                       [1, 0, 1, 0, 1, 0]], dtype="float32")


def tiny_data(n: int = 300, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = PROTOTYPES[rng.integers(0, len(PROTOTYPES), size=n)]
    return np.where(rng.random(x.shape) < noise, 1.0 - x, x).astype("float32")


def independent_bits_log_likelihood(x: np.ndarray) -> float:
    """Mean log-likelihood of the best model with independent bits (the data's marginals)."""
    p = np.clip(x.mean(axis=0), 1e-6, 1 - 1e-6).astype(np.float64)
    return float(np.mean(np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=1)))


def all_states(n: int) -> np.ndarray:
    return np.array(list(itertools.product((0.0, 1.0), repeat=n)), dtype=np.float64)


def brute_force_log_partition(kernel: np.ndarray, visible_bias: np.ndarray, hidden_bias: np.ndarray) -> float:
    """log sum_{v, h} exp(-E(v, h)) over every joint state, E = -v.b - h.c - v W h."""
    kernel, visible_bias, hidden_bias = (np.asarray(a, dtype=np.float64) for a in (kernel, visible_bias, hidden_bias))
    v = all_states(len(visible_bias))
    h = all_states(len(hidden_bias))
    negative_energy = (v @ visible_bias)[:, None] + (h @ hidden_bias)[None, :] + v @ kernel @ h.T
    assert negative_energy.shape == (2 ** len(visible_bias), 2 ** len(hidden_bias))
    top = negative_energy.max()
    return float(top + np.log(np.exp(negative_energy - top).sum()))


def brute_force_log_likelihood(rbm: RBM, x: np.ndarray) -> float:
    """Mean log p(v) with p(v) = sum_h exp(-E(v, h)) / Z, summing h explicitly."""
    kernel, b, c = (np.asarray(w.numpy(), dtype=np.float64) for w in (rbm.kernel, rbm.visible_bias, rbm.hidden_bias))
    h = all_states(rbm.n_hidden)
    negative_energy = (x @ b)[:, None] + (h @ c)[None, :] + x.astype(np.float64) @ kernel @ h.T
    top = negative_energy.max(axis=1, keepdims=True)
    log_unnormalised = top[:, 0] + np.log(np.exp(negative_energy - top).sum(axis=1))
    return float(np.mean(log_unnormalised) - brute_force_log_partition(kernel, b, c))


def randomise(rbm: RBM, seed: int = 0, scale: float = 1.0) -> RBM:
    """Give ``rbm`` large random parameters, so that exact quantities are far from trivial."""
    rng = np.random.default_rng(seed)
    rbm.kernel.assign(rng.normal(0, scale, (rbm.n_visible, rbm.n_hidden)).astype("float32"))
    rbm.visible_bias.assign(rng.normal(0, scale, rbm.n_visible).astype("float32"))
    rbm.hidden_bias.assign(rng.normal(0, scale, rbm.n_hidden).astype("float32"))
    return rbm


def train(rbm: RBM, x: np.ndarray, learning_rate: float = 0.1, epochs: int = 30, batch_size: int = 20, **fit_kwargs):
    rbm.compile(optimizer=keras.optimizers.SGD(learning_rate))
    return rbm.fit(x, batch_size=batch_size, epochs=epochs, verbose=0, **fit_kwargs)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# --- exact likelihood ---------------------------------------------------------------------


def test_log_partition_equals_brute_force_sum_over_all_joint_states():
    rbm = randomise(RBM(6, 4, seed=0), seed=1, scale=1.5)
    expected = brute_force_log_partition(rbm.kernel.numpy(), rbm.visible_bias.numpy(), rbm.hidden_bias.numpy())
    assert abs(expected - 10 * np.log(2)) > 1.0  # far from the all-zero-parameter value
    np.testing.assert_allclose(rbm.log_partition(), expected, rtol=1e-4)
    x = tiny_data(50)
    np.testing.assert_allclose(rbm.log_likelihood(x), brute_force_log_likelihood(rbm, x), rtol=1e-4)
    # A distribution: exp(log p(v)) summed over every visible state is 1.
    states = all_states(6).astype("float32")
    log_p = -rbm.free_energy(states).numpy().astype(np.float64) - rbm.log_partition()
    np.testing.assert_allclose(np.exp(log_p).sum(), 1.0, rtol=1e-4)


@pytest.mark.parametrize("k", [1, 3])
def test_contrastive_divergence_raises_the_exact_log_likelihood(k):
    x = tiny_data()
    rbm = RBM(6, 4, k=k, weight_std=0.1, seed=1)
    before = rbm.log_likelihood(x)
    kernel_before = rbm.kernel.numpy().copy()
    history = train(rbm, x, learning_rate=0.2, epochs=15)
    after = rbm.log_likelihood(x)
    assert not np.allclose(rbm.kernel.numpy(), kernel_before)
    assert after > before + 1.0, (before, after)
    # Better than any model of independent bits: the RBM has learned the correlations.
    assert after > independent_bits_log_likelihood(x) + 0.5, (after, independent_bits_log_likelihood(x))
    assert after < 0.0
    # The exact value after training still agrees with the brute-force sum over (v, h).
    np.testing.assert_allclose(after, brute_force_log_likelihood(rbm, x), rtol=1e-4)
    np.testing.assert_allclose(
        rbm.log_partition(),
        brute_force_log_partition(rbm.kernel.numpy(), rbm.visible_bias.numpy(), rbm.hidden_bias.numpy()),
        rtol=1e-4)
    # The reconstruction monitor falls too.
    assert history.history["loss"][-1] < 0.6 * history.history["loss"][0]
    # CD keeps no chains: its chain state is a single unused row that stays zero.
    assert rbm.chain_hidden.shape == (1, 4)
    np.testing.assert_array_equal(rbm.chain_hidden.numpy(), 0.0)


def test_persistent_contrastive_divergence_raises_the_exact_log_likelihood_and_moves_its_chains():
    x = tiny_data()
    # Fewer chains than examples per batch: the negative phase is averaged over the chains.
    rbm = RBM(6, 4, persistent=True, n_chains=10, weight_std=0.1, seed=2)
    assert rbm.chain_hidden.shape == (10, 4)
    np.testing.assert_array_equal(rbm.chain_hidden.numpy(), 0.0)
    before = rbm.log_likelihood(x)
    chains = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: chains.append(rbm.chain_hidden.numpy()))
    train(rbm, x, callbacks=[record])
    assert len(chains) == 30
    assert all(set(np.unique(state)) <= {0.0, 1.0} for state in chains)  # binary hidden states
    assert chains[0].any()
    assert len({state.tobytes() for state in chains}) > 10  # the chains keep moving
    after = rbm.log_likelihood(x)
    assert after > before + 1.0, (before, after)
    assert after > independent_bits_log_likelihood(x) + 0.5


def saturated(rbm: RBM, seed: int = 0) -> RBM:
    """Weights of +-40 and biases of +-20: every pre-activation is an odd multiple of 20
    for binary inputs, so every conditional probability is 0 or 1 to float32 precision
    and every Gibbs sample is determined. The update of one training step then has an
    exact value, whatever the random draws."""
    rng = np.random.default_rng(seed)
    rbm.kernel.assign(40.0 * rng.choice([-1.0, 1.0], (rbm.n_visible, rbm.n_hidden)).astype("float32"))
    rbm.visible_bias.assign(20.0 * rng.choice([-1.0, 1.0], rbm.n_visible).astype("float32"))
    rbm.hidden_bias.assign(20.0 * rng.choice([-1.0, 1.0], rbm.n_hidden).astype("float32"))
    return rbm


def step_once(rbm: RBM, x: np.ndarray, learning_rate: float) -> list[np.ndarray]:
    """One SGD step on the whole of ``x``; returns the changes of W, b and c."""
    before = [w.numpy().astype(np.float64) for w in (rbm.kernel, rbm.visible_bias, rbm.hidden_bias)]
    train(rbm, x, learning_rate=learning_rate, epochs=1, batch_size=len(x), shuffle=False)
    return [w.numpy().astype(np.float64) - b for w, b in zip((rbm.kernel, rbm.visible_bias, rbm.hidden_bias), before,
                                                              strict=True)]


@pytest.mark.parametrize("k", [1, 2])
def test_one_contrastive_divergence_step_is_the_cd_k_update(k):
    rbm = saturated(RBM(6, 4, k=k, seed=0), seed=4)
    kernel, b, c = (w.numpy().astype(np.float64) for w in (rbm.kernel, rbm.visible_bias, rbm.hidden_bias))
    x = tiny_data(12, seed=2).astype(np.float64)
    positive_hidden = sigmoid(x @ kernel + c)
    hidden = np.round(positive_hidden)
    for _ in range(k):
        visible = np.round(sigmoid(hidden @ kernel.T + b))
        negative_hidden = sigmoid(visible @ kernel + c)
        hidden = np.round(negative_hidden)
    expected = [x.T @ positive_hidden / 12 - visible.T @ negative_hidden / 12,
                x.mean(axis=0) - visible.mean(axis=0),
                positive_hidden.mean(axis=0) - negative_hidden.mean(axis=0)]
    assert np.abs(expected[0]).max() > 0.1 and np.abs(expected[1]).max() > 0.1  # not a vacuous check
    learning_rate = 0.5
    for name, change, gradient in zip(("kernel", "visible_bias", "hidden_bias"), step_once(rbm, x, learning_rate),
                                      expected, strict=True):
        np.testing.assert_allclose(change, learning_rate * gradient, atol=1e-4, err_msg=name)


def test_one_persistent_step_runs_the_chains_and_averages_over_them():
    n_chains = 3
    rbm = saturated(RBM(6, 4, persistent=True, n_chains=n_chains, seed=0), seed=5)
    kernel, b, c = (w.numpy().astype(np.float64) for w in (rbm.kernel, rbm.visible_bias, rbm.hidden_bias))
    x = tiny_data(12, seed=3).astype(np.float64)
    positive_hidden = sigmoid(x @ kernel + c)
    # The chains start from hidden zeros (not from the data).
    visible = np.round(sigmoid(np.zeros((n_chains, 4)) @ kernel.T + b))
    negative_hidden = sigmoid(visible @ kernel + c)
    expected = [x.T @ positive_hidden / 12 - visible.T @ negative_hidden / n_chains,
                x.mean(axis=0) - visible.mean(axis=0),
                positive_hidden.mean(axis=0) - negative_hidden.mean(axis=0)]
    learning_rate = 0.5
    for name, change, gradient in zip(("kernel", "visible_bias", "hidden_bias"), step_once(rbm, x, learning_rate),
                                      expected, strict=True):
        np.testing.assert_allclose(change, learning_rate * gradient, atol=1e-4, err_msg=name)
    # The chains keep their new hidden states for the next batch.
    np.testing.assert_array_equal(rbm.chain_hidden.numpy(), np.round(negative_hidden))
    assert rbm.chain_hidden.numpy().any()


# --- pseudo-likelihood and free energy against scikit-learn --------------------------------


@pytest.fixture(scope="module")
def sklearn_pair():
    from sklearn.datasets import load_digits
    from sklearn.neural_network import BernoulliRBM

    x = (load_digits().data[:400] / 16.0).astype("float64")
    reference = BernoulliRBM(n_components=16, learning_rate=0.05, n_iter=3, random_state=0).fit(x)
    rbm = RBM(64, 16, seed=0)
    rbm.kernel.assign(reference.components_.T.astype("float32"))
    rbm.hidden_bias.assign(reference.intercept_hidden_.astype("float32"))
    rbm.visible_bias.assign(reference.intercept_visible_.astype("float32"))
    return reference, rbm, x


def test_free_energy_equals_scikit_learn(sklearn_pair):
    reference, rbm, x = sklearn_pair
    assert np.abs(reference.components_).max() > 0.05  # trained, not the tiny initial weights
    np.testing.assert_allclose(rbm.free_energy(x.astype("float32")).numpy(), reference._free_energy(x),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("binary", [False, True])
def test_pseudo_likelihood_equals_scikit_learn_score_samples(sklearn_pair, binary):
    reference, rbm, x = sklearn_pair
    if binary:
        x = (x > 0.5).astype("float64")
    n, n_features = x.shape
    flip = np.random.default_rng(1).integers(0, n_features, size=n)
    # scikit-learn's score_samples, with these flip indices instead of its own draws.
    flipped = x.copy()
    flipped[np.arange(n), flip] = 1 - flipped[np.arange(n), flip]
    expected = -n_features * np.logaddexp(0, -(reference._free_energy(flipped) - reference._free_energy(x)))
    got = rbm.pseudo_likelihood(x.astype("float32"), flip).numpy()
    assert got.shape == (n,)
    assert np.ptp(expected) > 1.0  # the examples really differ
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_pseudo_likelihood_equals_scikit_learn_with_its_own_flip_indices(sklearn_pair):
    reference, rbm, x = sklearn_pair
    # With an integer random_state, score_samples draws its indices from a fresh RandomState.
    flip = np.random.RandomState(0).randint(0, x.shape[1], x.shape[0])
    np.testing.assert_allclose(rbm.pseudo_likelihood(x.astype("float32"), flip).numpy(),
                               reference.score_samples(x), rtol=1e-4, atol=1e-4)


def test_pseudo_likelihood_with_random_flips_lies_between_the_per_feature_extremes(sklearn_pair):
    _, rbm, x = sklearn_pair
    x = x[:50].astype("float32")
    each_feature = np.stack([rbm.pseudo_likelihood(x, np.full(len(x), i)).numpy() for i in range(x.shape[1])], axis=1)
    random_flips = rbm.pseudo_likelihood(x).numpy()
    assert random_flips.shape == (50,)
    assert np.all(random_flips >= each_feature.min(axis=1) - 1e-4)
    assert np.all(random_flips <= each_feature.max(axis=1) + 1e-4)
    assert np.all(random_flips <= 0.0)
    # Two calls draw different features.
    assert not np.array_equal(random_flips, rbm.pseudo_likelihood(x).numpy())


# --- conditionals, sampling ---------------------------------------------------------------


def test_conditionals_match_the_sigmoid_formulas():
    rbm = randomise(RBM(7, 5, seed=0), seed=3)
    kernel, b, c = rbm.kernel.numpy(), rbm.visible_bias.numpy(), rbm.hidden_bias.numpy()
    v = np.random.default_rng(4).random((9, 7)).astype("float32")
    h = np.random.default_rng(5).random((9, 5)).astype("float32")
    np.testing.assert_allclose(rbm.hidden_probabilities(v).numpy(), sigmoid(v @ kernel + c), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rbm.visible_probabilities(h).numpy(), sigmoid(h @ kernel.T + b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rbm(v)), sigmoid(v @ kernel + c), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rbm.predict(v, verbose=0), sigmoid(v @ kernel + c), rtol=1e-5, atol=1e-6)
    # model(x) accepts float64 numpy input as well.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rbm(v.astype("float64"))), rbm(v).numpy(), rtol=1e-6)
    reconstruction = rbm.reconstruct(v).numpy()
    assert reconstruction.shape == (9, 7)
    np.testing.assert_allclose(reconstruction, sigmoid(sigmoid(v @ kernel + c) @ kernel.T + b), rtol=1e-5, atol=1e-6)
    free_energy = -(v @ b) - np.logaddexp(0, v @ kernel + c).sum(axis=1)
    np.testing.assert_allclose(rbm.free_energy(v).numpy(), free_energy, rtol=1e-5, atol=1e-5)


def test_sample_draws_bernoulli_states_with_the_given_probabilities():
    rbm = RBM(3, 2, seed=0)
    probabilities = np.tile(np.array([[0.0, 0.3, 1.0]], dtype="float32"), (20000, 1))
    states = rbm.sample(keras.ops.convert_to_tensor(probabilities)).numpy()
    assert set(np.unique(states)) <= {0.0, 1.0}
    np.testing.assert_allclose(states.mean(axis=0), [0.0, 0.3, 1.0], atol=0.02)


def test_gibbs_chain_returns_probabilities_and_differs_between_runs():
    rbm = randomise(RBM(6, 4, seed=5), seed=6, scale=0.5)
    start = tiny_data(16)
    first = rbm.gibbs_chain(start, steps=5).numpy()
    second = rbm.gibbs_chain(start, steps=5).numpy()
    for chain in (first, second):
        assert chain.shape == (16, 6)
        assert np.all((chain >= 0.0) & (chain <= 1.0))
        assert not set(np.unique(chain)) <= {0.0, 1.0}  # probabilities, not states
    assert not np.allclose(first, second)
    # Mean-field chain: same shape and range.
    mean_field = rbm.gibbs_chain(start, steps=3, sample_visible=False).numpy()
    assert mean_field.shape == (16, 6)
    assert np.all((mean_field >= 0.0) & (mean_field <= 1.0))
    # The hidden states are sampled even when the visible ones are not.
    assert not np.allclose(mean_field, rbm.gibbs_chain(start, steps=3, sample_visible=False).numpy())
    # Zero steps hands back the start.
    np.testing.assert_array_equal(rbm.gibbs_chain(start, steps=0).numpy(), start)


def test_seeded_models_start_identical_and_differ_between_seeds():
    def kernel(seed):
        return RBM(6, 4, seed=seed, weight_std=0.1).kernel.numpy()

    np.testing.assert_array_equal(kernel(3), kernel(3))
    assert not np.allclose(kernel(3), kernel(4))
    np.testing.assert_allclose(np.std(RBM(50, 40, seed=1, weight_std=0.1).kernel.numpy()), 0.1, rtol=0.1)
    rbm = RBM(6, 4, seed=3)
    np.testing.assert_array_equal(rbm.visible_bias.numpy(), 0.0)
    np.testing.assert_array_equal(rbm.hidden_bias.numpy(), 0.0)


# --- training monitors --------------------------------------------------------------------


def test_training_reports_reconstruction_loss_and_pseudo_likelihood():
    x = tiny_data(200)
    validation = tiny_data(40, seed=1)
    rbm = RBM(6, 4, weight_std=0.1, seed=7)
    history = train(rbm, x, epochs=3, validation_data=(validation,), batch_size=40)
    assert {"loss", "pseudo_likelihood", "val_loss", "val_pseudo_likelihood"} <= set(history.history)
    for values in history.history.values():
        assert len(values) == 3
        assert np.all(np.isfinite(values))
    assert all(0.0 < value < 1.0 for value in history.history["loss"])
    assert all(value < 0.0 for value in history.history["pseudo_likelihood"])
    # One validation batch, evaluated with the final weights: val_loss is exactly the
    # mean squared error of the mean-field reconstruction.
    expected = np.mean((validation - rbm.reconstruct(validation).numpy()) ** 2)
    np.testing.assert_allclose(history.history["val_loss"][-1], expected, rtol=1e-5)
    per_feature = np.stack([rbm.pseudo_likelihood(validation, np.full(40, i)).numpy() for i in range(6)], axis=1)
    assert per_feature.min(axis=1).mean() - 1e-4 <= history.history["val_pseudo_likelihood"][-1]
    assert history.history["val_pseudo_likelihood"][-1] <= per_feature.max(axis=1).mean() + 1e-4
    evaluated = rbm.evaluate(validation, batch_size=40, verbose=0, return_dict=True)
    np.testing.assert_allclose(evaluated["loss"], expected, rtol=1e-5)
    assert set(evaluated) == {"loss", "pseudo_likelihood"}


def test_fit_accepts_and_ignores_targets():
    x = tiny_data(40)
    rbm = RBM(6, 4, weight_std=0.1, seed=8)
    history = train(rbm, x, epochs=1, y=np.zeros(len(x)))
    assert np.isfinite(history.history["loss"][0])


# --- save / load, builder, arguments ------------------------------------------------------


def test_save_and_load_round_trip_keeps_outputs_weights_and_config(tmp_path):
    # build_model's own first parameter is ``name``, so the model name goes through get_builder.
    assert isinstance(build_model("rbm", n_visible=6, n_hidden=4), RBM)
    rbm = get_builder("rbm")(n_visible=6, n_hidden=4, k=2, persistent=True, n_chains=5, seed=3, name="tiny_rbm")
    assert isinstance(rbm, RBM)
    x = tiny_data(40)
    train(rbm, x, epochs=2)
    path = tmp_path / "rbm.keras"
    rbm.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, RBM)
    assert loaded.name == "tiny_rbm"
    for key in ("n_visible", "n_hidden", "k", "persistent", "n_chains", "seed"):
        assert getattr(loaded, key) == getattr(rbm, key), key
    assert (loaded.k, loaded.persistent, loaded.n_chains) == (2, True, 5)
    assert loaded.get_config() == rbm.get_config()
    for name in ("kernel", "visible_bias", "hidden_bias", "chain_hidden"):
        np.testing.assert_array_equal(getattr(loaded, name).numpy(), getattr(rbm, name).numpy(), err_msg=name)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), rbm.predict(x, verbose=0))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(rbm(x)))
    assert loaded.log_likelihood(x) == pytest.approx(rbm.log_likelihood(x), rel=1e-6)
    # Safe mode loads it too (a registered class, no lambdas).
    safe = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(safe.predict(x, verbose=0), rbm.predict(x, verbose=0))


@pytest.mark.parametrize("kwargs, message", [
    ({"n_hidden": 0}, "n_hidden=0"),
    ({"n_visible": 0}, "n_visible=0"),
    ({"k": 0}, "k=0"),
    ({"k": True}, "k=True"),
    ({"k": 1.5}, "k=1.5"),
    ({"n_visible": "3"}, "n_visible='3'"),
    ({"n_chains": 0}, "n_chains=0"),
    ({"weight_std": 0}, "weight_std=0"),
    ({"weight_std": -0.1}, r"weight_std=-0\.1"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RBM(**{"n_visible": 6, "n_hidden": 4, **kwargs})


def test_exact_quantities_refuse_large_visible_layers():
    rbm = RBM(MAX_EXACT_VISIBLE + 1, 2, seed=0)
    with pytest.raises(ValueError, match=f"n_visible={MAX_EXACT_VISIBLE + 1}"):
        rbm.log_partition()
    with pytest.raises(ValueError, match="n_visible"):
        rbm.log_likelihood(np.zeros((2, MAX_EXACT_VISIBLE + 1), dtype="float32"))
    # Below the limit it works; with (nearly) zero parameters all 2**15 joint states have
    # energy 0, so log Z = 15 log 2.
    np.testing.assert_allclose(RBM(12, 3, seed=0, weight_std=1e-6).log_partition(), 15 * np.log(2), rtol=1e-5)
