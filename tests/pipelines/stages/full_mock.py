"""The full profile of one family end to end on tensorflow-datasets' mock data: the full
datasets' shapes, the full models and the full profile's GPU switches (on the CPU here),
through every stage, tracking and registration under the ``-mock`` names, and the
switches in force during every fit. Each family's stage tests call
:func:`assert_full_mock_run` once (tests/pipelines/stages/test_<family>.py), so the
runs spread over the suite's workers; the classifiers' pipeline runs inside
fcn_deconv's, which takes its CNN (``Family.uses``), and is checked there. Where a
family trains one architecture several times over, its ``Family.mock_sample`` keeps
one of each."""

from __future__ import annotations

import keras
import pytest

from pipelines import tracking, train
from pipelines.config import to_dict
from pipelines.families import get_family
from pipelines.runner import run_pipeline

MOCK_EXAMPLES = 64
"""Examples per tfds load (``mock_data``)."""


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
    config = family.config("full", {"mock_data": MOCK_EXAMPLES, **family.mock_sample})
    run_pipeline(family, to_dict(config), run_key=f"{family.dag_id}/mock-test")

    # The family's runs, and those of each family it takes a model from (fcn_deconv runs
    # the classifiers' whole pipeline on mock data first: that is the classifiers' mock run).
    client = store.client()
    for name in (family.name, *(used.family for used in family.uses)):
        experiment = client.get_experiment_by_name(get_family(name).experiment_name)
        assert experiment is not None, f"no {name} runs"
        runs = client.search_runs([experiment.experiment_id])
        assert runs and all(run.info.status == "FINISHED" for run in runs), name
        assert {run.data.tags[tracking.TAG_PROFILE] for run in runs} == {"full-mock"}, name
        assert all("mock data" in run.data.params["dataset.source"] for run in runs
                   if run.data.params.get("dataset.source", "").startswith("tfds:")), name
        assert any(model.name.startswith(f"nnzoo-{name}-") for model in client.search_registered_models()), name

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
    theirs = {_switches(get_family(used.family).config("full", {"mock_data": MOCK_EXAMPLES}).train)
              for used in family.uses}
    allowed = {own} | theirs
    assert fits
    for switches in allowed:
        assert any(_switches(fit["config"]) == switches for fit in fits if fit["model"] != "RBM"), switches
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
