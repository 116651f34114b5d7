"""The sequence family's stages: one smoke run of the declared pipeline, in-process with
a DAG-style run key, into a temporary MLflow store, inspected from several angles; and
the helpers on synthetic inputs. What trains is marked ``slow``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines import tracking
from pipelines.config import ConfigError, to_dict
from pipelines.configs.sequences import DIRECTIONS, FAMILY
from pipelines.data.source_sequences import tfidf_baseline
from pipelines.stages import sequences
from tests.conftest import smoke_run
from tests.pipelines.stages.full_mock import assert_full_mock_run

RUN_KEY = "zoo_sequences/test-run"
SMOKE = to_dict(FAMILY.config("smoke"))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return smoke_run(FAMILY, tmp_path_factory.mktemp("sequences"), RUN_KEY)


@pytest.fixture
def client(smoke, monkeypatch):
    smoke["store"].activate(monkeypatch)
    return smoke["store"].client()


def _results(smoke, task: str) -> list[dict]:
    return [r for r in smoke["out"]["train"] if r["task"] == task]


@pytest.mark.slow
def test_one_job_per_task_cell_direction_and_length_each_in_a_nested_finished_run(client, smoke):
    jobs = smoke["out"]["plan_jobs"]
    adding = SMOKE["adding"]
    expected = len(adding["lengths"]) * len(adding["cells"]) + 2 * len(SMOKE["future_context"]["cells"]) + \
        2 * len(SMOKE["sentiment"]["cells"])
    assert len(jobs) == expected == len(smoke["out"]["train"])
    assert len({job["key"] for job in jobs}) == len(jobs)  # run keys never collide
    assert {job["direction"] for job in jobs if job["task"] != "adding"} == set(DIRECTIONS)
    experiment = client.get_experiment_by_name(FAMILY.experiment_name).experiment_id
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{smoke['parent']}'")
    assert len(children) == len(jobs) and {c.info.status for c in children} == {"FINISHED"}
    assert client.get_run(smoke["parent"]).info.status == "FINISHED"
    for job in jobs:
        assert all(key not in job for key in ("x", "y", "text"))  # references, never arrays


@pytest.mark.slow
def test_adding_runs_log_mse_beside_the_constant_baseline_and_gradients_through_time(client, smoke):
    for result in _results(smoke, "adding"):
        metrics = client.get_run(result["run_id"]).data.metrics
        # the best constant predicts the training mean; on U[0,1] sums its MSE is about 1/6
        assert 0.12 < metrics["baseline_mse"] < 0.22
        assert metrics["mse_vs_baseline"] == pytest.approx(metrics["test_mse"] / metrics["baseline_mse"])
        assert metrics["flops"] > 0 and metrics["params"] > 0
        with open(client.download_artifacts(result["run_id"], "gradients/through_time.json")) as handle:
            recorded = json.load(handle)
        assert len(recorded["initialisation"]) == result["length"] == len(recorded["trained"])
        assert any(key.startswith("grad_norm.recurrent_1") for key in metrics)


@pytest.mark.slow
def test_future_context_runs_log_accuracy_beside_the_causal_bound(client, smoke):
    from pipelines.data.source_sequences import causal_bound

    settings = SMOKE["future_context"]
    for result in _results(smoke, "future_context"):
        metrics = client.get_run(result["run_id"]).data.metrics
        assert metrics["causal_bound"] == pytest.approx(causal_bound(settings["sequence_length"],
                                                                     settings["vocabulary"]))
        with open(client.download_artifacts(result["run_id"], "evaluation/accuracy_by_position.json")) as handle:
            by_position = json.load(handle)["accuracy_by_position"]
        assert len(by_position) == settings["sequence_length"]
        assert np.mean(by_position) == pytest.approx(metrics["test_accuracy"])


@pytest.mark.slow
def test_registered_sentiment_model_classifies_raw_strings_including_bad_ones(client, smoke):
    import tensorflow as tf

    decision = smoke["out"]["register"]["versions"]["sentiment"]
    version = client.get_model_version("nnzoo-sequences-sentiment", decision["version"])
    model = tracking.load_keras_model(f"models:/nnzoo-sequences-sentiment/{version.version}")
    texts = tf.constant(["a gripping, beautifully acted film", "", "dull " * 500, b"caf\xe9 was great"])
    probabilities = np.asarray(model(texts))
    assert probabilities.shape == (4, 2)
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    baseline = client.get_run(version.run_id).data.metrics["tfidf_test_accuracy"]
    assert 0.0 < baseline <= 1.0


@pytest.mark.slow
def test_parent_carries_the_comparison_plots_and_table(client, smoke):
    plots = {item.path for item in client.list_artifacts(smoke["parent"], "plots")}
    assert {"plots/mse_vs_length.png", "plots/gradient_through_time.png", "plots/future_context_accuracy.png",
            "plots/sentiment_accuracy.png"} <= plots
    with open(client.download_artifacts(smoke["parent"], "comparison/sequences.json")) as handle:
        rows = json.load(handle)["results"]
    assert len(rows) == len(smoke["out"]["train"])
    metrics = client.get_run(smoke["parent"]).data.metrics
    for length in SMOKE["adding"]["lengths"]:
        assert f"adding_lstm_t{length}_mse" in metrics
    longest = max(SMOKE["adding"]["lengths"])
    assert metrics["adding_longest_length"] == longest
    assert metrics["adding_longest_rnn_over_gated_mse"] == pytest.approx(metrics[f"adding_rnn_t{longest}_mse"] / max(
        metrics[f"adding_lstm_t{longest}_mse"], metrics[f"adding_gru_t{longest}_mse"]))


@pytest.mark.slow
def test_each_task_registers_its_best_model_once(client, smoke):
    versions = smoke["out"]["register"]["versions"]
    assert set(versions) == {"adding", "future_context", "sentiment"}
    longest = max(SMOKE["adding"]["lengths"])
    adding = [r for r in _results(smoke, "adding") if r["length"] == longest]
    assert versions["adding"]["run_id"] == min(adding, key=lambda r: r["metrics"]["test_mse"])["run_id"]
    again = sequences.register(SMOKE, {**smoke["out"]["prepare_data"], "run_key": RUN_KEY,
                                       "train": smoke["out"]["train"]})["versions"]
    assert {task: d["version"] for task, d in again.items()} == {task: d["version"] for task, d in versions.items()}


# --- helpers and refusals -------------------------------------------------------------------


def test_plan_prepares_generated_data_once_per_length_and_names_jobs_uniquely(store):
    config = to_dict(FAMILY.config("smoke", {"tasks": ("adding", "future_context")}))
    jobs = sequences.plan_jobs(config, {"data_uri": "unused"})
    by_length = {}
    for job in jobs:
        if job["task"] == "adding":
            by_length.setdefault(job["length"], set()).add(job["data_uri"])
    assert sorted(by_length) == sorted(SMOKE["adding"]["lengths"])
    assert all(len(uris) == 1 for uris in by_length.values())
    assert len({uri for uris in by_length.values() for uri in uris}) == len(by_length)
    assert sequences.plan_jobs(config, {"data_uri": "unused"}) == jobs  # stored data is found again


def test_c15_ratio_reads_the_worse_gated_cell_and_needs_all_three_cells():
    def row(cell, mse):
        return {"cell": cell, "length": 200, "metrics": {"test_mse": mse}}

    assert sequences.longest_rnn_over_gated([row("rnn", 0.16), row("lstm", 0.004), row("gru", 0.002)]) == \
        {"adding_longest_rnn_over_gated_mse": pytest.approx(40.0), "adding_longest_length": 200.0}
    assert sequences.longest_rnn_over_gated([row("rnn", 0.16), row("gru", 0.002)]) == {}


def test_tfidf_baseline_learns_a_separable_toy_corpus():
    texts = {"train": np.array(["good great fine"] * 20 + ["bad awful poor"] * 20),
             "val": np.array(["good fine", "bad poor"]), "test": np.array(["great good", "awful bad"])}
    labels = {"train": np.array([1] * 20 + [0] * 20), "val": np.array([1, 0]), "test": np.array([1, 0])}
    result = tfidf_baseline(texts, labels)
    assert result["test_accuracy"] == 1.0 and result["val_accuracy"] == 1.0
    assert result["min_df"] == 2


def test_tfidf_baseline_keeps_every_term_when_none_is_in_two_texts():
    # Mock data: every word of every review is new; dropping single-text terms drops all.
    texts = {"train": np.array([f"w{i} x{i}" for i in range(8)]), "val": np.array(["w1 q"]),
             "test": np.array(["x2 z"])}
    labels = {"train": np.array([0, 1] * 4), "val": np.array([1]), "test": np.array([0])}
    result = tfidf_baseline(texts, labels)
    assert result["min_df"] == 1 and 0.0 <= result["test_accuracy"] <= 1.0


def test_bad_tasks_and_unknown_task_are_refused():
    with pytest.raises(ConfigError, match="tasks="):
        FAMILY.config("smoke", {"tasks": ("adding", "translation")})
    with pytest.raises(ValueError, match="task='translation'"):
        sequences.train(SMOKE, {"task": "translation"})


def test_the_result_contract_holds_on_the_smoke_run(smoke):
    from tests.claims_check import assert_result_contract

    assert_result_contract(FAMILY, smoke["store"], RUN_KEY)


@pytest.mark.slow
def test_full_profile_runs_end_to_end_on_mock_data_with_its_switches_in_force(store, full_mock_fits):
    assert_full_mock_run(FAMILY, store, full_mock_fits)
