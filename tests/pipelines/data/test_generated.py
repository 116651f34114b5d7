"""Named arrays beyond labelled images: generated data, unlabelled data, fit hooks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pipelines.config import DataConfig, knob
from pipelines.data import registry
from pipelines.data.prepared import SPLITS, load_prepared, prepare, record_latest
from pipelines.data.registry import DatasetUnavailableError, Loaded, get_dataset, load_arrays, register_dataset


class SequenceData(DataConfig):
    """A family's data config: the fields beyond DataConfig are the generator's parameters."""

    dataset: str = knob("adding_problem", "Dataset.")
    sequence_length: int = knob(7, "Time steps.", minimum=2)
    examples: int = knob(200, "Sequences.", minimum=1)


@pytest.fixture
def datasets(monkeypatch):
    """Datasets registered by a test are forgotten after it."""
    registry.dataset_names()
    monkeypatch.setattr(registry, "_DATASETS", dict(registry._DATASETS))
    return registry._DATASETS


def test_adding_problem_targets_are_the_sums_of_the_two_marked_values():
    loaded = load_arrays("adding_problem", sequence_length=10, examples=300, seed=3)
    x, y = loaded.arrays["x"], loaded.arrays["y"]
    assert x.shape == (300, 10, 2) and y.shape == (300,)
    assert x.dtype == y.dtype == np.float32
    values, markers = x[..., 0], x[..., 1]
    assert set(np.unique(markers).tolist()) == {0.0, 1.0}
    assert (markers[:, :5].sum(axis=1) == 1).all() and (markers[:, 5:].sum(axis=1) == 1).all()
    np.testing.assert_allclose(y, (values * markers).sum(axis=1), rtol=1e-6)
    assert 0.0 <= values.min() and values.max() < 1.0
    assert loaded.class_names == () and get_dataset("adding_problem").source == "generated:adding_problem"


def test_adding_problem_is_deterministic_for_its_seed():
    first, again, other = (load_arrays("adding_problem", examples=50, seed=s).arrays["x"] for s in (0, 0, 1))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_generator_parameters_come_from_the_data_config_fields(tmp_path):
    prepared = prepare(SequenceData(), root=tmp_path)
    assert prepared.image_shape == prepared.shape("x") == (7, 2)
    assert prepared.sizes == {"train": 140, "val": 20, "test": 40}
    meta = json.loads((tmp_path / "adding_problem" / prepared.fingerprint / "meta.json").read_text())
    assert meta["source"] == "generated:adding_problem"
    assert meta["generator"] == {"name": "adding_problem", "version": "1",
                                 "params": {"sequence_length": 7, "examples": 200, "seed": 0}}
    assert meta["arrays"] == {"x": {"shape": [7, 2], "dtype": "float32"}, "y": {"shape": [], "dtype": "float32"}}


def test_generated_fingerprint_is_stable_and_covers_parameters_and_version(tmp_path, datasets):
    first = prepare(SequenceData(), root=tmp_path)
    assert prepare(SequenceData(), root=tmp_path).fingerprint == first.fingerprint
    assert prepare(SequenceData(sequence_length=9), root=tmp_path).fingerprint != first.fingerprint
    datasets["adding_problem"] = dataclasses.replace(datasets["adding_problem"], generator_version="2")
    bumped = prepare(SequenceData(), root=tmp_path)
    for key, value in first.arrays.items():  # the same bytes ...
        np.testing.assert_array_equal(bumped.arrays[key], value)
    assert bumped.fingerprint != first.fingerprint  # ... but another generator
    assert load_prepared(bumped.uri).meta["generator"]["version"] == "2"
    assert load_prepared(first.uri).fingerprint == first.fingerprint


def test_float_targets_get_a_deterministic_random_split(tmp_path):
    first = prepare(SequenceData(max_examples=100), root=tmp_path / "a")
    again = prepare(SequenceData(max_examples=100), root=tmp_path / "b")
    assert first.sizes == {"train": 70, "val": 10, "test": 20}
    for split in SPLITS:
        x, y = first.split(split)
        assert len(x) == len(y) == first.sizes[split] and y.dtype == np.float32
        np.testing.assert_array_equal(x, again.split(split)[0])
    assert first.fingerprint == again.fingerprint
    assert first.fingerprint != prepare(SequenceData(max_examples=100, split_seed=1), root=tmp_path).fingerprint


def test_unlabelled_data_splits_at_random_and_has_no_y(tmp_path, datasets):
    @register_dataset("blobs", "unlabelled images", "test")
    def blobs(data_dir=None):
        return Loaded({"x": np.arange(50 * 4, dtype=np.uint8).reshape(50, 2, 2, 1)})

    prepared = prepare(DataConfig(dataset="blobs"), root=tmp_path)
    assert prepared.sizes == {"train": 35, "val": 5, "test": 10} and prepared.num_classes == 0
    x, y = prepared.split("train")
    assert y is None and x.shape == (35, 2, 2, 1)
    assert sorted(np.concatenate([prepared.split(s)[0][:, 0, 0, 0] // 4 for s in SPLITS]).tolist()) == list(range(50))
    with pytest.raises(KeyError, match=r"'blobs' has no array 'y' in split 'val'.*test_x, train_x, val_x"):
        prepared.get("val", "y")
    assert load_prepared(prepared.uri).split("test")[1] is None


def _vocabulary(split_arrays):
    """A tokenizer fitted on the training sentences only; token ids for every split (0: unknown)."""
    words = sorted({word for sentence in split_arrays["train_x"] for word in str(sentence).split()})
    index = {word: i + 1 for i, word in enumerate(words)}
    ids = {f"{split}_ids": np.array([[index.get(word, 0) for word in str(sentence).split()]
                                     for sentence in split_arrays[f"{split}_x"]], dtype=np.int32) for split in SPLITS}
    return {"vocabulary": np.array(words), **ids}


def _sentences(data_dir=None):
    words = [f"w{i}" for i in range(40)]
    sentences = np.array([f"{words[i % 40]} {words[(3 * i) % 40]}" for i in range(60)])
    return Loaded({"x": sentences, "y": np.arange(60) % 2}, ("odd", "even"))


def test_fit_output_is_stored_with_the_split_and_in_the_fingerprint(tmp_path, datasets):
    register_dataset("sentences", "text", "test", fit=_vocabulary)(_sentences)
    prepared = prepare(DataConfig(dataset="sentences"), root=tmp_path)
    loaded = load_prepared(prepared.uri)
    train_words = {word for sentence in loaded.get("train", "x") for word in sentence.split()}
    assert set(loaded.arrays["vocabulary"].tolist()) == train_words  # fitted on train only
    assert loaded.get("test", "ids").shape == (prepared.sizes["test"], 2)
    for key, value in prepared.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[key], value)
    register_dataset("sentences", "text", "test")(_sentences)  # the same data without the tokenizer
    assert prepare(DataConfig(dataset="sentences"), root=tmp_path).fingerprint != prepared.fingerprint


def test_fit_may_not_overwrite_the_split(tmp_path, datasets):
    register_dataset("sentences", "text", "test", fit=lambda arrays: {"train_x": arrays["train_x"]})(_sentences)
    with pytest.raises(ValueError, match=r"'sentences' returned \['train_x'\]"):
        prepare(DataConfig(dataset="sentences"), root=tmp_path)


@pytest.mark.parametrize("arrays, offender", [
    ({"x": np.zeros((10, 3)), "y": np.zeros(9)}, "'y' has 9 examples"),
    ({"x": np.zeros((10, 3)), "mask": np.float32(1.0)}, "'mask' has 0 examples"),
    ({"x": np.zeros((0, 3))}, "'x' has 0 examples"),
    ({}, "'x' has 0 examples"),
])
def test_arrays_of_unequal_or_no_length_are_a_clear_error(datasets, arrays, offender):
    register_dataset("broken", "bad loader", "test")(lambda data_dir=None: Loaded(arrays))
    with pytest.raises(DatasetUnavailableError, match=f"dataset 'broken': array {offender}"):
        load_arrays("broken")


def test_latest_is_recorded_per_generator_parameters(tmp_path):
    assert record_latest(SequenceData(sequence_length=7), "aaa", tmp_path)
    assert record_latest(SequenceData(sequence_length=9), "bbb", tmp_path)
    assert not record_latest(SequenceData(sequence_length=7), "aaa", tmp_path)
