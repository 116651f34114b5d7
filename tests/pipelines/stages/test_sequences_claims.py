"""The sequence family's claims (C15, C16) on CI-sized data: driven through the family's
own stages (``plan_jobs``, ``train``, ``compare``) and judged by their declarations
(``pipelines/configs/sequences.py``) on the parent run's metrics as MLflow holds them;
then each is shown to FAIL once the feature it is about is taken away.

The fixture trains the adding problem at T=60 (6,000 sequences instead of 14,000 per
length; the simple RNN already stays near the constant baseline there) with all three
cells, and future-context tagging on 4,000 sequences for 20 epochs instead of 6,000 for
25 (the bidirectional LSTM has passed 0.95 by epoch 15 in calibration).
"""

from __future__ import annotations

import pytest

from pipelines import tracking
from pipelines.claims import FAIL
from pipelines.config import to_dict
from pipelines.configs.sequences import FAMILY
from pipelines.kit import run_tags
from pipelines.stages import sequences
from tests.claims_check import assert_claim, verdict

pytestmark = pytest.mark.slow

LENGTH = 60
CI = {"tasks": ("adding", "future_context"), "adding.lengths": (LENGTH,), "adding.examples": 6000,
      "future_context.examples": 4000, "future_context.max_epochs": 20}


def _parent(config: dict, name: str) -> str:
    """A parent run tagged as the pipeline's, where ``compare`` logs the claims' metrics."""
    return tracking.start_run(FAMILY.experiment_name, name,
                              tags=run_tags(FAMILY, FAMILY.load(config), "pipeline", "pipeline"))


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    from tests.conftest import new_store

    shared = new_store(tmp_path_factory.mktemp("sequences_claims"))
    config = to_dict(FAMILY.config("quick", CI))
    with pytest.MonkeyPatch.context() as patch:
        shared.activate(patch)
        jobs = sequences.plan_jobs(config, {"data_uri": None})
        parent = _parent(config, "claims")  # the trainings nest under a parent run, as in the pipeline
        results = [sequences.train(config, {**job, "run_key": None, "parent_run_id": parent}) for job in jobs]
        sequences.compare(config, {"parent_run_id": parent, "train": results})
        logged = dict(tracking.get_run(parent).data.metrics)
    return {"store": shared, "config": config, "results": results, "logged": logged,
            "by_key": {result["key"]: result["metrics"] for result in results}}


# --- C15 ----------------------------------------------------------------------------------


def test_c15_gated_cells_solve_the_longest_adding_problem_the_simple_rnn_does_not(stages):
    logged, trained = stages["logged"], stages["by_key"]
    assert_claim("C15", logged)
    assert logged["adding_longest_length"] == LENGTH
    mse = {cell: trained[f"adding-{cell}-uni-t{LENGTH}"]["test_mse"] for cell in ("rnn", "lstm", "gru")}
    assert logged["adding_longest_rnn_over_gated_mse"] == pytest.approx(mse["rnn"] / max(mse["lstm"], mse["gru"]))
    rnn = trained[f"adding-rnn-uni-t{LENGTH}"]
    assert 0.14 < rnn["baseline_mse"] < 0.19  # the constant prediction: about 1/6
    assert rnn["test_mse"] > 0.5 * rnn["baseline_mse"]


def test_c15_at_initialisation_the_gated_cells_pass_less_gradient_to_the_first_step(stages):
    # At initialisation the gates start half closed: the gated cells' loss reaches the first
    # step far less than the simple RNN's (docs/claims.md). What training does to it is not
    # asserted: it varies with the machine's floating point (after training at T=60 the
    # LSTM passed 2.6x and the GRU 0.6x the simple RNN's on an AVX2 machine, over 10x each
    # on an AVX-512 one).
    trained = stages["by_key"]
    gradients = {cell: trained[f"adding-{cell}-uni-t{LENGTH}"]["first_step_gradient_at_init"]
                 for cell in ("rnn", "lstm", "gru")}
    for cell in ("lstm", "gru"):
        assert gradients[cell] < 0.01 * gradients["rnn"], gradients


# --- C16 ----------------------------------------------------------------------------------


def test_c16_only_the_bidirectional_tagger_sees_the_future(stages):
    logged, trained = stages["logged"], stages["by_key"]
    assert_claim("C16", logged)
    uni = trained["future_context-lstm-uni"]
    assert uni["test_accuracy"] <= uni["causal_bound"] + 0.01
    assert uni["causal_bound"] == pytest.approx(0.7686, abs=1e-3)
    assert logged["future_context_causal_bound"] == pytest.approx(uni["causal_bound"])


# --- both claims without their feature ------------------------------------------------------


def test_c15_and_c16_fail_with_simple_rnns_for_the_gated_cells_and_a_one_directional_tagger(stages, monkeypatch):
    """``compare`` on the same trainings, with the simple RNN's result in the LSTM's and the
    GRU's places and the one-directional tagger's in the bidirectional one's."""
    stages["store"].activate(monkeypatch)
    by_key = {result["key"]: result for result in stages["results"]}
    rnn, uni = by_key[f"adding-rnn-uni-t{LENGTH}"], by_key["future_context-lstm-uni"]
    without = [result for result in stages["results"] if result["key"] not in (
        f"adding-lstm-uni-t{LENGTH}", f"adding-gru-uni-t{LENGTH}", "future_context-lstm-bi")]
    without += [{**rnn, "cell": cell, "key": f"adding-{cell}-uni-t{LENGTH}", "name": f"adding {cell} T={LENGTH}"}
                for cell in ("lstm", "gru")]
    without.append({**uni, "direction": "bi", "key": "future_context-lstm-bi", "name": "future_context biLSTM"})
    parent = _parent(stages["config"], "claims without their feature")
    logged = sequences.compare(stages["config"], {"parent_run_id": parent, "train": without})["metrics"]
    assert logged["adding_longest_rnn_over_gated_mse"] == pytest.approx(1.0)
    assert verdict("C15", logged) == FAIL
    assert verdict("C16", logged) == FAIL, logged["future_context_lstm_bi_accuracy"]
