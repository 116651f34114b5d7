"""Dataset registry and sources (bundled data; tfds without data fails fast)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from pipelines.data import dataset_names, get_dataset, load_arrays
from tests.conftest import run_python


@pytest.mark.parametrize("name, count, side", [("mnist_subset", 5000, 28), ("digits", 1797, 8)])
def test_bundled_datasets_load_as_uint8_images_and_int64_labels(name, count, side):
    loaded = load_arrays(name)
    assert set(loaded.arrays) == {"x", "y"}
    images, labels, class_names = loaded.arrays["x"], loaded.arrays["y"], loaded.class_names
    assert images.shape == (count, side, side, 1)
    assert images.dtype == np.uint8
    assert labels.shape == (count,)
    assert labels.dtype == np.int64
    assert class_names == tuple(str(d) for d in range(10))
    assert set(np.unique(labels)) == set(range(10))
    assert images.min() == 0
    assert images.max() > 200  # full 0..255 range, also for digits (stored 0..16 by scikit-learn)


def test_registry_knows_bundled_and_tfds_datasets():
    assert {"mnist_subset", "digits", "mnist", "fashion_mnist"} <= set(dataset_names())
    assert get_dataset("mnist").source == "tfds:mnist"
    assert get_dataset("digits").source.startswith("sklearn")


def test_load_arrays_passes_only_the_parameters_a_loader_takes():
    assert load_arrays("digits", sequence_length=5).params == {}  # image loaders take none
    loaded = load_arrays("adding_problem", sequence_length=6, examples=8, unrelated=1)
    assert loaded.arrays["x"].shape == (8, 6, 2)
    assert loaded.params == {"sequence_length": 6, "examples": 8, "seed": 0}  # defaults recorded too


def test_image_loaders_reject_images_that_are_not_uint8_nhwc(monkeypatch):
    from pipelines.data import registry, source_images
    from pipelines.data.registry import DatasetUnavailableError

    def flat_digits(data_dir=None):
        return source_images._labelled_images("flat", np.zeros((4, 64), np.uint8), np.zeros(4), ())

    monkeypatch.setitem(registry._DATASETS, "flat", registry.Dataset("flat", "", "test", flat_digits))
    with pytest.raises(DatasetUnavailableError, match=r"'flat'.*\(4, 64\).*expected uint8 \[N, height"):
        load_arrays("flat")


def test_unknown_dataset_raises_with_the_known_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'.*digits.*mnist_subset"):
        load_arrays("cifar")


def test_tfds_dataset_without_data_fails_fast_with_a_clear_error(tmp_path):
    data_dir = tmp_path / "tfds"
    code = f"""
import json, time
from pipelines.data import load_arrays
from pipelines.data.registry import DatasetUnavailableError
start = time.perf_counter()
try:
    load_arrays("mnist", {str(data_dir)!r})
    outcome = {{"error": None}}
except DatasetUnavailableError as error:
    outcome = {{"error": str(error)}}
outcome["seconds"] = time.perf_counter() - start
print(json.dumps(outcome))
"""
    started = time.perf_counter()
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["error"] is not None, "loading tfds mnist from an empty data_dir did not fail"
    assert "'mnist'" in outcome["error"]
    assert str(data_dir) in outcome["error"]
    assert "tfds build mnist" in outcome["error"]
    assert outcome["seconds"] < 30, f"took {outcome['seconds']:.0f}s to fail"
    assert time.perf_counter() - started < 90
