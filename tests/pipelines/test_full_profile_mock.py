"""The full profile end to end on tensorflow-datasets' mock data: the full datasets'
shapes, the full models and the full profile's GPU switches (on the CPU here), through
every stage, tracking and registration under the ``-mock`` names; and the switches in
force during every fit. Families whose full pipelines take longer on mock data
(``Family.mock_seconds`` over ``SUITE_SECONDS``: one to several minutes on 2 cores, most
of it graph tracing of the full models) are run by ``nnzoo run FAMILY --profile full
--param mock_data=64`` outside the suite (docs/operations.md)."""

from __future__ import annotations

import keras
import pytest

from pipelines import tracking, train
from pipelines.config import to_dict
from pipelines.families import all_families, get_family
from pipelines.runner import run_pipeline

MOCK_EXAMPLES = 64
SUITE_SECONDS = 60.0
"""A family whose full run on mock data takes longer (``Family.mock_seconds``) is run by hand."""
IN_SUITE = sorted(name for name, family in all_families().items()
                  if family.mock_seconds is not None and family.mock_seconds <= SUITE_SECONDS)


@pytest.fixture
def fits(monkeypatch):
    """What is in force at each fit the pipeline makes: dtype policy, strategy, XLA."""
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


def test_the_suite_runs_some_families_on_mock_data_and_every_family_declares_its_cost():
    assert all(family.mock_seconds for family in all_families().values())
    assert IN_SUITE


@pytest.mark.slow
@pytest.mark.parametrize("name", IN_SUITE)
def test_full_profile_runs_end_to_end_on_mock_data_with_its_switches_in_force(name, store, fits):
    family = get_family(name)
    config = family.config("full", {"mock_data": MOCK_EXAMPLES})
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

    # The family's full combination of switches was in force during its fits (the RBMs of
    # the unsupervised family train in float32 on one device by design).
    switches = config.train
    assert fits
    for fit in fits:
        if fit["model"] == "RBM":
            assert fit["policy"] == "float32" and fit["strategy"] != "MirroredStrategy"
            continue
        assert fit["config"].mixed_precision == switches.mixed_precision
        assert fit["policy"] == ("mixed_float16" if switches.mixed_precision else "float32"), fit
        assert (fit["strategy"] == "MirroredStrategy") == (switches.distribute == "mirrored"), fit
        assert fit["jit_compile"] is switches.jit_compile, fit
