"""Deterministic splits stored on disk with a content fingerprint, and tf.data input.

A prepared dataset is one ``.npz`` file (each named array cut into train, val and test as
``<split>_<name>``, plus what the dataset's ``fit`` hook made from them) and a JSON sidecar,
in ``<data dir>/<dataset>/<fingerprint>/``. Stages pass its URI, never the arrays.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import settings
from pipelines.config import DataConfig
from pipelines.data.registry import DatasetUnavailableError, get_dataset, load_arrays

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class PreparedData:
    uri: str
    name: str
    fingerprint: str
    class_names: tuple[str, ...]
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def source(self) -> str:
        return self.meta.get("source", "")

    @property
    def sizes(self) -> dict[str, int]:
        return self.meta.get("sizes", {})

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.shape("x")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def get(self, split: str, key: str) -> np.ndarray:
        if f"{split}_{key}" not in self.arrays:
            raise KeyError(f"prepared dataset {self.name!r} has no array {key!r} in split {split!r}; "
                           f"it has {', '.join(sorted(self.arrays))}")
        return self.arrays[f"{split}_{key}"]

    def shape(self, key: str) -> tuple[int, ...]:
        """The shape of one example of array ``key``."""
        return tuple(self.get("train", key).shape[1:])

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """``(x, y)``; y is None for data without labels."""
        return self.get(name, "x"), self.arrays.get(f"{name}_y")


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a stratified share of the labels: ``round(fraction * n_c)`` (at least
    one) of every class, drawn with ``seed``; the same for every init."""
    rng = np.random.default_rng([seed, int(round(fraction * 1_000_000))])
    chosen = []
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        chosen.append(rng.choice(index, size=max(1, int(round(fraction * len(index)))), replace=False))
    return np.sort(np.concatenate(chosen))


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int, max_examples: int | None = None
) -> dict[str, np.ndarray]:
    """Indices of train/val/test, stratified by label, deterministic for ``seed``.

    Each class is shuffled with its own generator and cut in the same proportions, so
    the split does not depend on the order of the source nor on the other classes.
    ``max_examples`` keeps a stratified subset first.
    """
    if not 0.0 <= val_fraction < 1.0 or not 0.0 < test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction={val_fraction}, test_fraction={test_fraction}: each in [0, 1) with a sum below 1"
        )
    classes = np.unique(labels)
    keep_share = 1.0 if max_examples is None else min(1.0, max_examples / len(labels))
    parts: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    for label in classes:
        index = np.flatnonzero(labels == label)
        rng = np.random.default_rng([seed, int(label)])
        index = rng.permutation(index)
        index = index[: max(3, int(round(len(index) * keep_share)))]
        n_test = max(1, int(round(len(index) * test_fraction)))
        n_val = int(round(len(index) * val_fraction))
        parts["test"].append(index[:n_test])
        parts["val"].append(index[n_test : n_test + n_val])
        parts["train"].append(index[n_test + n_val :])
    out = {}
    for split, chunks in parts.items():
        merged = np.concatenate(chunks)
        out[split] = np.random.default_rng([seed, 10**6]).permutation(merged)
    return out


def random_split(count: int, val_fraction: float, test_fraction: float, seed: int,
                 max_examples: int | None = None) -> dict[str, np.ndarray]:
    """Indices of train/val/test for data without labels: a stratified split with one class."""
    return stratified_split(np.zeros(count, np.int64), val_fraction, test_fraction, seed, max_examples)


def generator_params(data_config: Any) -> dict[str, Any]:
    """The fields a family's data config adds to :class:`DataConfig`: the generator's parameters."""
    fields = getattr(type(data_config), "model_fields", {})
    return {name: getattr(data_config, name) for name in fields if name not in DataConfig.model_fields}


def fingerprint_arrays(arrays: dict[str, np.ndarray], extra: Any = None) -> str:
    """sha256 over ``extra`` (JSON), names, shapes, dtypes and bytes; the first 16 hex digits. ``extra``
    is the generator of generated data, so another version or parameters never match stored bytes."""
    digest = hashlib.sha256()
    if extra is not None:
        digest.update(json.dumps(extra, sort_keys=True).encode())
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{value.shape}:{value.dtype}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:16]


def prepare(data_config: Any, root: Path | None = None, params: Mapping[str, Any] | None = None) -> PreparedData:
    """Load, split (stratified by integer labels ``y``, else at random) and store; reuse a
    stored copy. ``params``: the generator's arguments, when not the config's own fields
    (a dataset a step prepares besides the family's: ``prepare(DataConfig(dataset=...),
    params={...})``)."""
    dataset = get_dataset(data_config.dataset)
    params = generator_params(data_config) if params is None else params
    loaded = load_arrays(dataset.name, data_config.data_dir, **params)
    labels = loaded.arrays.get("y")
    cut = (data_config.val_fraction, data_config.test_fraction, data_config.split_seed, data_config.max_examples)
    labelled = labels is not None and labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer)
    index = stratified_split(labels, *cut) if labelled else random_split(len(next(iter(loaded.arrays.values()))), *cut)
    empty = [split for split in SPLITS if not len(index[split]) and (split != "val" or data_config.val_fraction > 0)]
    if empty:
        total = len(next(iter(loaded.arrays.values())))
        raise DatasetUnavailableError(
            f"dataset {dataset.name!r}: {total} examples leave the {' and '.join(empty)} split(s) empty at "
            f"val_fraction={data_config.val_fraction}, test_fraction={data_config.test_fraction}"
            f"{f', max_examples={data_config.max_examples}' if data_config.max_examples else ''}; use more examples "
            "(or more mock_data on mock data) or larger fractions")
    arrays = {f"{split}_{key}": value[index[split]] for split in SPLITS for key, value in loaded.arrays.items()}
    fitted = dataset.fit(dict(arrays)) if dataset.fit else {}
    if clash := sorted(fitted.keys() & arrays.keys()):
        raise ValueError(f"fit of dataset {dataset.name!r} returned {clash}, names the split has; use new names")
    arrays.update(fitted)
    meta = {
        "dataset": dataset.name,
        "source": _source(dataset.source),
        "fingerprint": "",
        "class_names": list(loaded.class_names),
        "sizes": {split: int(len(index[split])) for split in SPLITS},
        "arrays": {key: {"shape": list(value.shape[1:]), "dtype": str(value.dtype)}
                   for key, value in loaded.arrays.items()},
        "split_seed": data_config.split_seed,
    }
    if dataset.generator_version is not None:
        meta["generator"] = {"name": dataset.name, "version": dataset.generator_version, "params": loaded.params}
    meta = json.loads(json.dumps(meta))  # as read back, so a stored copy compares equal
    meta["fingerprint"] = fingerprint_arrays(arrays, meta.get("generator"))
    folder = (root or settings.data_dir()) / dataset.name / meta["fingerprint"]
    target = folder / "data.npz"
    if not _is_complete(target, meta):
        settings.ensure_writable_dir(folder, "data folder", "NNZOO_DATA_DIR or NNZOO_HOME")
        # Write to a temporary file and rename, so a killed task never leaves half a file.
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".npz.tmp", delete=False) as handle:
            np.savez_compressed(handle, **arrays)
        os.replace(handle.name, target)
        (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    return PreparedData(target.as_uri(), dataset.name, meta["fingerprint"], tuple(loaded.class_names), arrays, meta)


def _source(source: str) -> str:
    """Where the data came from; tensorflow-datasets' mock data says so."""
    from pipelines.data.registry import mock_examples

    examples = mock_examples()
    if examples and source.startswith("tfds:"):
        return f"{source} (mock data: random content, {examples} examples)"
    return source


def latest_path(dataset: str, root: Path | None = None) -> Path:
    """``<data dir>/<dataset>/latest.json``: the current fingerprint of each split of
    the dataset. Its location is the URI of the dataset's Airflow Asset."""
    return (root or settings.data_dir()) / dataset / "latest.json"


def record_latest(data_config: Any, fingerprint: str, root: Path | None = None) -> bool:
    """Record ``fingerprint`` as the current content of this split of the dataset.

    Returns True when it is new (first materialisation, or the data changed): that is
    when the dataset's Asset gets an event and retraining DAGs run.
    """
    import fcntl

    path = latest_path(data_config.dataset, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    split = (f"val={data_config.val_fraction},test={data_config.test_fraction},"
             f"seed={data_config.split_seed},max={data_config.max_examples}")
    split += "".join(f",{key}={value}" for key, value in sorted(generator_params(data_config).items()))
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            current = {}
        if current.get(split) == fingerprint:
            return False
        current[split] = fingerprint
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(current, indent=2, sort_keys=True))
        os.replace(temporary, path)
    return True


def _is_complete(target: Path, meta: dict[str, Any]) -> bool:
    """Both files are there, the sidecar is the one ``prepare`` would write and the data matches it."""
    try:
        if json.loads((target.parent / "meta.json").read_text()) != meta:
            return False
        with np.load(target) as stored:
            arrays = {key: stored[key] for key in stored.files}
        return fingerprint_arrays(arrays, meta.get("generator")) == meta["fingerprint"]
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def load_prepared(uri: str) -> PreparedData:
    """Read a prepared dataset back; a missing or altered file is a clear error."""
    path = Path(uri.removeprefix("file://"))
    meta_path = path.parent / "meta.json"
    if not path.exists() or not meta_path.exists():
        raise DatasetUnavailableError(f"prepared dataset not found at {path}; run the prepare_data stage first")
    try:
        meta = json.loads(meta_path.read_text())
        meta["fingerprint"], meta["dataset"], meta["class_names"]  # noqa: B018 - required keys
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DatasetUnavailableError(f"prepared dataset metadata {meta_path} is unreadable ({error}); "
                                      "prepare it again") from error
    try:
        with np.load(path) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DatasetUnavailableError(f"prepared dataset {path} is unreadable ({error}); prepare it again") from error
    if fingerprint_arrays(arrays, meta.get("generator")) != meta["fingerprint"]:
        raise DatasetUnavailableError(
            f"prepared dataset {path} does not match its fingerprint {meta['fingerprint']}; prepare it again"
        )
    return PreparedData(path.as_uri(), meta["dataset"], meta["fingerprint"], tuple(meta["class_names"]), arrays, meta)


def normalize_images(images):
    """uint8 0..255 -> float32 0..1; works on numpy arrays and tf tensors alike."""
    if isinstance(images, np.ndarray):
        return images.astype(np.float32) / np.float32(255.0)
    import tensorflow as tf

    return tf.cast(images, tf.float32) / 255.0


def tf_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0):
    """(image, label) batches, images normalised: :func:`batches` of the pair."""
    return batches((images, labels), batch_size, shuffle=shuffle, seed=seed)


def batches(arrays: Any, batch_size: int, *, shuffle: bool = False, seed: int = 0, repeat: bool = False,
            normalize: bool = True, each: Any = None, batched: Any = None):
    """The ``tf.data`` pipeline of every training: ``arrays`` (an array, or a nest of
    arrays of one length) cached; shuffled anew each pass (``shuffle``, seeded); endless
    (``repeat``); ``each`` mapped over examples; batched; the first array's uint8 images
    normalised to [0, 1] (``normalize``); ``batched`` mapped over batches; prefetched."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices(arrays).cache()
    if shuffle:
        data = data.shuffle(len(tf.nest.flatten(arrays)[0]), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        data = data.repeat()
    if each is not None:
        data = data.map(each, num_parallel_calls=tf.data.AUTOTUNE)
    data = data.batch(batch_size)
    if normalize:
        data = data.map(lambda x, *rest: (normalize_images(x), *rest) if rest else normalize_images(x),
                        num_parallel_calls=tf.data.AUTOTUNE)
    if batched is not None:
        data = data.map(batched, num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)
