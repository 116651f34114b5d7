"""The full profile of one family end to end on tensorflow-datasets' mock data: the full
datasets' shapes, the full models and the full profile's GPU switches (on the CPU here),
through every stage, tracking and registration under the ``-mock`` names, and the
switches in force during every fit. Each family's stage tests call
:func:`assert_full_mock_run` once (tests/pipelines/stages/test_<family>.py), so the
six runs spread over the suite's workers."""

from __future__ import annotations

import keras
import pytest

from pipelines import tracking, train
from pipelines.config import to_dict
from pipelines.families import get_family
from pipelines.runner import run_pipeline

MOCK_EXAMPLES = 64
"""Examples per tfds load (``mock_data``)."""

ONE_OF_EACH = {
    "cnn_depth": {"variants": ("vanishing_plain", "vanishing_residual", "mlp_relu", "degradation_plain_shallow",
                               "degradation_residual_shallow", "max_pool", "strided", "inception")},
    "sequences": {"adding.lengths": (400,)},
}
"""Where a family trains one architecture several times over, the suite trains it once:
cnn_depth's sigmoid pair, sigmoid MLP and 56-layer degradation nets are its ReLU and
20-layer ones with another activation or depth; sequences' adding problem runs its three
cells at the longest length only. ``nnzoo run FAMILY --profile full --param
mock_data=64`` runs them all (docs/operations.md)."""


@pytest.fixture
def full_mock_fits(monkeypatch):
    """What is in force at each fit a pipeline makes: dtype policy, strategy, XLA."""
    import tensorflow as tf

    seen: list[dict] = []
    real_fit = train.fit

    def recording_fit(model, train_data, val_data, train_config, **kwargs):
        record = {"model": type(model).__name__, "policy": keras.mixed_precision.global_policy().name,
                  "strategy": type(tf.distribute.get_strategy()).__name__, "config": train_config}
        history = real_fit(model, train_data, val_data, train_config, **kwargs)
        record["jit_compile"] = model.jit_compile
        seen.append(record)
        return history

    monkeypatch.setattr(train, "fit", recording_fit)
    yield seen
    train.configure_precision(False)


def assert_full_mock_run(family, store, fits: list[dict]) -> None:
    config = family.config("full", {"mock_data": MOCK_EXAMPLES, **ONE_OF_EACH.get(family.name, {})})
    run_pipeline(family, to_dict(config), run_key=f"{family.dag_id}/mock-test")

    client = store.client()
    experiment = client.get_experiment_by_name(family.experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    assert runs and all(run.info.status == "FINISHED" for run in runs)
    assert {run.data.tags[tracking.TAG_PROFILE] for run in runs} == {"full-mock"}
    assert all("mock data" in run.data.params["dataset.source"] for run in runs
               if run.data.params.get("dataset.source", "").startswith("tfds:"))

    # Registered under the mock names only, never promoted: no alias anywhere.
    registered = client.search_registered_models()
    assert registered and all(model.name.endswith("-mock") for model in registered)
    for model in registered:
        assert not model.aliases, model.name
        for version in client.search_model_versions(f"name = '{model.name}'"):
            assert version.tags["nnzoo.promotion.decision"] == "none"
            assert client.get_run(version.run_id).data.tags[tracking.TAG_PROFILE] == "full-mock"

    # The family's full combination of switches was in force during its fits; a family
    # that takes a model from another (fcn_deconv: the classifiers' CNN) trained that one
    # on mock data first, with that family's full switches. The RBMs of the unsupervised
    # family train in float32 on one device by design.
    own = _switches(config.train)
    allowed = {own} | {_switches(get_family(used.family).config("full", {"mock_data": MOCK_EXAMPLES}).train)
                       for used in family.uses}
    assert fits
    assert any(_switches(fit["config"]) == own for fit in fits if fit["model"] != "RBM")
    for fit in fits:
        if fit["model"] == "RBM":
            assert fit["policy"] == "float32" and fit["strategy"] != "MirroredStrategy"
            continue
        mixed, jit, distribute = _switches(fit["config"])
        assert (mixed, jit, distribute) in allowed, fit
        assert fit["policy"] == ("mixed_float16" if mixed else "float32"), fit
        assert (fit["strategy"] == "MirroredStrategy") == (distribute == "mirrored"), fit
        assert fit["jit_compile"] is jit, fit


def _switches(train_config) -> tuple[bool, bool, str]:
    return train_config.mixed_precision, train_config.jit_compile, train_config.distribute
