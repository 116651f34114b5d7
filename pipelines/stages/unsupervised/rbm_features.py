"""scikit-learn's "RBM features for digit classification" example, on its protocol,
with this project's RBM: a check that the RBM learns useful features (claim C5)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines import tracking
from pipelines.configs.unsupervised import FAMILY
from pipelines.data.prepared import batches
from pipelines.kit import StepContext, Training, say, step_of

PROTOCOL = "sklearn plot_rbm_logistic_classification: nudged digits, minmax, 80/20, random_state=0"


@step_of(FAMILY)
def evaluate_rbm_features(step: StepContext) -> dict[str, Any]:
    """sklearn digits nudged by one pixel in four directions (x5 data), scaled to [0, 1],
    80/20 split (random_state=0); a PCD-1 RBM's hidden probabilities feed a logistic
    regression. Logs ``rbm_logistic_accuracy`` and the raw-pixel baseline
    ``raw_logistic_accuracy`` in a nested run."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import classification_report
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import minmax_scale

    from models.rbm import RBM
    from pipelines import plots
    from pipelines.data.source_images import nudge_digits

    typed = step.config
    rbm_features = typed.rbm_features
    if not rbm_features.enabled:
        say("rbm features: disabled (rbm_features.enabled=false)")
        return {"metrics": {}}
    digits = load_digits()
    features, labels = nudge_digits(digits.images, digits.target)
    features = minmax_scale(features, feature_range=(0, 1)).astype(np.float32)
    train_x, test_x, train_y, test_y = train_test_split(features, labels, test_size=0.2, random_state=0)

    def classify(run: Any, rbm: Any, history: Any) -> dict[str, float]:
        from threadpoolctl import threadpool_limits

        train_h, test_h = np.asarray(rbm(train_x)), np.asarray(rbm(test_x))
        # The example passes tol=1; scikit-learn 1.9's newton-cg then stops before its
        # first iteration (n_iter_ 0, chance accuracy), so the solver's default tol is used.
        # One BLAS thread: the solver's thousand small products (7,188 x 100) are quicker
        # alone than with threads waiting for each other on shared cores.
        with threadpool_limits(limits=1, user_api="blas"):
            logistic = LogisticRegression(C=rbm_features.logistic_c, solver="newton-cg", max_iter=1000)
            predicted = logistic.fit(train_h, train_y).predict(test_h)
            raw = LogisticRegression(C=100.0, solver="newton-cg", max_iter=1000).fit(train_x, train_y)
        tracking.log_bytes(run.run_id, classification_report(test_y, predicted, digits=4).encode(),
                           "evaluation/rbm_logistic_report.txt")
        tracking.log_figure(run.run_id, plots.image_grid(
            np.asarray(rbm.kernel).T.reshape(-1, 8, 8), title=f"{rbm_features.hidden_units} RBM components on nudged "
            "digits", columns=10, normalize_each=True), "plots/filters.png")
        return {"rbm_logistic_accuracy": float((predicted == test_y).mean()),
                "raw_logistic_accuracy": float((raw.predict(test_x) == test_y).mean()),
                "test_pseudo_likelihood": float(np.mean(np.asarray(rbm.pseudo_likelihood(test_x))))}

    trained = step.train(Training(
        "rbm_features", fingerprint="sklearn-digits-nudged", run_name="rbm-features-digits", stage="evaluate",
        seed=0, float32=True, keep_model=False, after=classify, example=None, examples=len(train_x),
        params={"protocol": PROTOCOL, "train_size": len(train_y), "test_size": len(test_y)},
        build=lambda: RBM(64, rbm_features.hidden_units, k=1, persistent=True, n_chains=rbm_features.batch_size, seed=0,
                          name="rbm_digits"),
        datasets=lambda: (batches(train_x, rbm_features.batch_size, shuffle=True, normalize=False), None),
        train=typed.train.replace(epochs=rbm_features.epochs, batch_size=rbm_features.batch_size,
                                  learning_rate=rbm_features.learning_rate, optimizer="sgd", lr_schedule="constant",
                                  early_stopping_patience=0),
        fit={"loss": None, "metrics": (), "steps_per_execution": 50}))
    metrics = trained["metrics"]
    say(f"rbm features: logistic on RBM features {metrics['rbm_logistic_accuracy']:.4f}, "
        f"on raw pixels {metrics['raw_logistic_accuracy']:.4f}")
    return {"metrics": metrics, "run_id": trained["run_id"]}
