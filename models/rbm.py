"""Bernoulli-Bernoulli restricted Boltzmann machine trained by contrastive divergence.

Energy of a visible vector ``v`` and a hidden vector ``h`` (both binary)::

    E(v, h) = -v·b - h·c - v W h          p(v, h) = exp(-E(v, h)) / Z

with weights ``W`` (visible x hidden), visible bias ``b`` and hidden bias ``c``. The
hidden units are independent given the visible ones and vice versa::

    p(h_j = 1 | v) = sigmoid(c_j + v·W[:, j])     p(v_i = 1 | h) = sigmoid(b_i + W[i, :]·h)

and summing out ``h`` gives the free energy ``F(v) = -v·b - sum_j softplus(c_j + v·W[:, j])``
with ``p(v) = exp(-F(v)) / Z``.

Training (``fit``) follows the log-likelihood gradient approximately. Its positive
phase uses the data, its negative phase ``k`` steps of Gibbs sampling started either
from the data (CD-k) or from persistent chains that carry over from one batch to the
next (PCD, Tieleman 2008; what scikit-learn's ``BernoulliRBM`` does with ``k=1``). The
"gradient" is handed to the compiled optimizer, so with plain SGD one step is::

    W += lr * (v0ᵀ p(h|v0) / batch - vkᵀ p(h|vk) / chains)

The model's output (``model(v)``) is ``p(h = 1 | v)``: the features a DBN stacks.
Reported per epoch: ``loss`` (mean squared error between the data and its mean-field
reconstruction ``p(v | p(h | v))``; CD has no loss of its own, this one is a monitor
that early stopping and the NaN guard can use) and ``pseudo_likelihood`` (per example,
defined exactly as scikit-learn's ``BernoulliRBM.score_samples``).
"""

from __future__ import annotations

import itertools
from typing import Any

import keras
import numpy as np
from keras import ops

from models.registry import register_model

MAX_EXACT_VISIBLE = 20
"""Exact likelihoods enumerate 2**n_visible states; beyond this it is too slow."""


@keras.saving.register_keras_serializable(package="nnzoo")
class RBM(keras.Model):
    """Bernoulli-Bernoulli RBM; ``train_step`` runs CD-k or PCD-k.

    Args:
        n_visible: number of visible units (input features, values in [0, 1]).
        n_hidden: number of hidden units.
        k: Gibbs steps in the negative phase.
        persistent: keep ``n_chains`` Gibbs chains across batches (PCD) instead of
            restarting them at the data (CD).
        n_chains: number of persistent chains (PCD only); the batch size is a good value.
        weight_std: standard deviation of the initial weights (biases start at 0).
        seed: seed of the weight initialiser and of every Bernoulli sample.
    """

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        k: int = 1,
        persistent: bool = False,
        n_chains: int = 64,
        weight_std: float = 0.01,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        for name, value in (("n_visible", n_visible), ("n_hidden", n_hidden), ("k", k), ("n_chains", n_chains)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an integer >= 1")
        if not weight_std > 0:
            raise ValueError(f"weight_std={weight_std!r}: must be > 0")
        kwargs.setdefault("name", "rbm")
        super().__init__(**kwargs)
        self.n_visible = int(n_visible)
        self.n_hidden = int(n_hidden)
        self.k = int(k)
        self.persistent = bool(persistent)
        self.n_chains = int(n_chains)
        self.weight_std = float(weight_std)
        self.seed = seed
        self.kernel = self.add_weight(
            shape=(self.n_visible, self.n_hidden), name="kernel",
            initializer=keras.initializers.RandomNormal(stddev=self.weight_std, seed=seed))
        self.visible_bias = self.add_weight(shape=(self.n_visible,), name="visible_bias", initializer="zeros")
        self.hidden_bias = self.add_weight(shape=(self.n_hidden,), name="hidden_bias", initializer="zeros")
        # PCD: hidden states of the persistent chains (zeros at the start, as scikit-learn).
        self.chain_hidden = self.add_weight(
            shape=(self.n_chains if self.persistent else 1, self.n_hidden), name="chain_hidden",
            initializer="zeros", trainable=False)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.pseudo_likelihood_tracker = keras.metrics.Mean(name="pseudo_likelihood")
        self.built = True

    # --- the model's conditionals ------------------------------------------------------

    def hidden_probabilities(self, visible: Any) -> Any:
        """``p(h = 1 | v)``, shape (batch, n_hidden)."""
        return ops.sigmoid(ops.matmul(visible, self.kernel) + self.hidden_bias)

    def visible_probabilities(self, hidden: Any) -> Any:
        """``p(v = 1 | h)``, shape (batch, n_visible)."""
        return ops.sigmoid(ops.matmul(hidden, ops.transpose(self.kernel)) + self.visible_bias)

    def sample(self, probabilities: Any) -> Any:
        """Bernoulli states drawn with ``probabilities`` (the model's seed generator)."""
        noise = keras.random.uniform(ops.shape(probabilities), seed=self.seed_generator)
        return ops.cast(noise < probabilities, probabilities.dtype)

    def call(self, inputs: Any) -> Any:
        return self.hidden_probabilities(ops.convert_to_tensor(inputs, dtype=self.kernel.dtype))

    def flops_per_example(self) -> int:
        """FLOPs of ``call`` for one example: ``sigmoid(v W + c)`` is a multiply-add per
        weight (2 FLOPs), a bias add and a sigmoid per hidden unit. A FLOPs counter
        cannot see inside a subclassed model, so it asks the model."""
        return 2 * self.n_visible * self.n_hidden + 2 * self.n_hidden

    def reconstruct(self, visible: Any) -> Any:
        """Mean-field reconstruction ``p(v | p(h | v))``."""
        return self.visible_probabilities(self.hidden_probabilities(visible))

    def free_energy(self, visible: Any) -> Any:
        """``F(v) = -v·b - sum_j softplus(c_j + v·W[:, j])``, shape (batch,)."""
        visible = ops.convert_to_tensor(visible, dtype=self.kernel.dtype)
        linear = ops.matmul(visible, self.kernel) + self.hidden_bias
        return -ops.matmul(visible, self.visible_bias) - ops.sum(ops.softplus(linear), axis=-1)

    def pseudo_likelihood(self, visible: Any, flip: Any = None) -> Any:
        """Per-example pseudo-likelihood as scikit-learn's ``BernoulliRBM.score_samples``.

        One feature of each example (``flip[i]``, random if not given) is replaced by
        ``1 - v``; the score is ``n_visible * log sigmoid(F(v_flipped) - F(v))``.
        """
        visible = ops.convert_to_tensor(visible, dtype=self.kernel.dtype)
        return self._pseudo_likelihood(visible, ops.matmul(visible, self.kernel) + self.hidden_bias, flip)

    def _pseudo_likelihood(self, visible: Any, linear: Any, flip: Any = None) -> Any:
        # Flipping v_i changes the hidden pre-activations by (1 - 2 v_i) W[i, :], so the
        # flipped free energy needs a row gather, not a second matrix product.
        if flip is None:
            flip = keras.random.randint((ops.shape(visible)[0],), 0, self.n_visible, seed=self.seed_generator)
        flip = ops.cast(flip, "int32")
        mask = ops.one_hot(flip, self.n_visible, dtype=visible.dtype)
        delta = ops.sum(mask * (1.0 - 2.0 * visible), axis=-1)
        flipped_linear = linear + delta[:, None] * ops.take(self.kernel, flip, axis=0)
        # F(v') - F(v) = -delta * b_i - sum softplus(flipped) + sum softplus(linear)
        gap = (-delta * ops.take(self.visible_bias, flip)
               - ops.sum(ops.softplus(flipped_linear), axis=-1) + ops.sum(ops.softplus(linear), axis=-1))
        return self.n_visible * ops.log_sigmoid(gap)

    def gibbs_chain(self, visible: Any, steps: int, sample_visible: bool = True) -> Any:
        """Run ``steps`` Gibbs steps (v -> h -> v) from ``visible``; returns the last
        visible probabilities. With ``sample_visible`` the chain carries binary states,
        as in sampling proper; the probabilities returned are what one looks at."""
        visible = ops.convert_to_tensor(visible, dtype=self.kernel.dtype)
        probabilities = visible
        for _ in range(int(steps)):
            hidden = self.sample(self.hidden_probabilities(visible))
            probabilities = self.visible_probabilities(hidden)
            visible = self.sample(probabilities) if sample_visible else probabilities
        return probabilities

    # --- exact quantities for tiny models (tests, teaching) ------------------------------

    def log_partition(self) -> float:
        """``log Z`` by enumerating every visible state; only for ``n_visible <= 20``."""
        if self.n_visible > MAX_EXACT_VISIBLE:
            raise ValueError(f"n_visible={self.n_visible}: exact log Z enumerates 2**n_visible states; "
                             f"only done for n_visible <= {MAX_EXACT_VISIBLE}")
        states = np.array(list(itertools.product((0.0, 1.0), repeat=self.n_visible)), dtype="float32")
        negative_free_energy = -ops.convert_to_numpy(self.free_energy(states)).astype(np.float64)
        top = negative_free_energy.max()
        return float(top + np.log(np.exp(negative_free_energy - top).sum()))

    def log_likelihood(self, visible: Any) -> float:
        """Mean exact ``log p(v)`` over the examples (binary ``visible``); tiny models only."""
        log_z = self.log_partition()
        return float(np.mean(-ops.convert_to_numpy(self.free_energy(visible)).astype(np.float64) - log_z))

    # --- training ----------------------------------------------------------------------

    @property
    def metrics(self) -> list[Any]:
        return [self.loss_tracker, self.pseudo_likelihood_tracker]

    def _monitor(self, visible: Any, linear: Any, hidden: Any) -> dict[str, Any]:
        # linear = v W + c and hidden = sigmoid(linear), already computed by the caller.
        error = ops.mean(ops.square(visible - self.visible_probabilities(hidden)))
        self.loss_tracker.update_state(error)
        self.pseudo_likelihood_tracker.update_state(ops.mean(self._pseudo_likelihood(visible, linear)))
        return {metric.name: metric.result() for metric in self.metrics}

    def train_step(self, data: Any) -> dict[str, Any]:
        visible, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        visible = ops.cast(visible, self.kernel.dtype)
        batch = ops.cast(ops.shape(visible)[0], visible.dtype)
        linear = ops.matmul(visible, self.kernel) + self.hidden_bias
        positive_hidden = ops.sigmoid(linear)
        if self.persistent:
            hidden = ops.convert_to_tensor(self.chain_hidden)
        else:
            hidden = self.sample(positive_hidden)
        negative_visible = visible
        negative_hidden = positive_hidden
        for step in range(self.k):
            negative_visible = self.sample(self.visible_probabilities(hidden))
            negative_hidden = self.hidden_probabilities(negative_visible)
            if step < self.k - 1 or self.persistent:
                hidden = self.sample(negative_hidden)
        if self.persistent:
            self.chain_hidden.assign(hidden)
        chains = ops.cast(ops.shape(negative_visible)[0], visible.dtype)
        # The optimizer descends; CD ascends the likelihood, so hand it the negative.
        gradients = [
            ops.matmul(ops.transpose(negative_visible), negative_hidden) / chains
            - ops.matmul(ops.transpose(visible), positive_hidden) / batch,
            ops.mean(negative_visible, axis=0) - ops.sum(visible, axis=0) / batch,
            ops.mean(negative_hidden, axis=0) - ops.sum(positive_hidden, axis=0) / batch,
        ]
        metrics = self._monitor(visible, linear, positive_hidden)
        self.optimizer.apply(gradients, [self.kernel, self.visible_bias, self.hidden_bias])
        return metrics

    def test_step(self, data: Any) -> dict[str, Any]:
        visible, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        visible = ops.cast(visible, self.kernel.dtype)
        linear = ops.matmul(visible, self.kernel) + self.hidden_bias
        return self._monitor(visible, linear, ops.sigmoid(linear))

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "n_visible": self.n_visible, "n_hidden": self.n_hidden, "k": self.k,
                "persistent": self.persistent, "n_chains": self.n_chains, "weight_std": self.weight_std,
                "seed": self.seed}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RBM:
        return cls(**config)


@register_model("rbm")
def build_rbm(
    n_visible: int, n_hidden: int, k: int = 1, persistent: bool = False, n_chains: int = 64,
    seed: int | None = None, name: str = "rbm",
) -> RBM:
    """A Bernoulli-Bernoulli :class:`RBM` (compile with an optimizer, then ``fit(x)``)."""
    return RBM(n_visible, n_hidden, k=k, persistent=persistent, n_chains=n_chains, seed=seed, name=name)


STRONG_DISAGREEMENT = 0.5
"""Two chains disagree outright on a pixel when their probabilities of ink differ by more
than this (they are then on opposite sides of 0.5)."""


def chain_disagreement(probabilities: np.ndarray) -> float:
    """Claim C5's measure of "slightly different new samples": the share of pixels on
    which the two chains started from the same digit disagree outright, their
    probabilities of ink more than :data:`STRONG_DISAGREEMENT` apart, averaged over the
    start digits (rows ``2i`` and ``2i + 1`` are one start's pair). 0 for chains without
    sampling (both copies follow one path) and for an untrained RBM, whose visible
    probabilities all stay near 0.5: noise, not samples, which a plain mean |difference|
    would count (about 0.03 for 500 untrained hidden units)."""
    values = np.asarray(probabilities, dtype=np.float64)
    if values.ndim != 2 or len(values) % 2:
        raise ValueError(f"expected pairs of chains as rows of a 2-D array; got shape {values.shape}")
    pairs = values.reshape(-1, 2, values.shape[1])
    return float((np.abs(pairs[:, 0] - pairs[:, 1]) > STRONG_DISAGREEMENT).mean())
