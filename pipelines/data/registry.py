"""Name -> dataset loader. Loaders import their heavy dependencies lazily."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from pipelines.errors import NnzooError


class DatasetUnavailableError(NnzooError, RuntimeError):
    """The dataset cannot be loaded here (not downloaded, no network, corrupt file)."""


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A whole dataset as named arrays, examples on axis 0: ``x`` the inputs, ``y`` integer
    labels when there are any; masks, boxes, sequences or no labels need no special case."""

    arrays: dict[str, np.ndarray]
    class_names: tuple[str, ...] = ()
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The loader's parameters, defaults included (filled by :func:`load_arrays`)."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    source: str
    """Where the data comes from, recorded with every run."""
    loader: Callable[..., Loaded]
    """``loader(data_dir, **params) -> Loaded``."""
    generator_version: str | None = None
    """Set for generated data (deterministic from a seed and the parameters); part of its fingerprint."""
    fit: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    """``fit({"train_x": ...}) -> extra arrays`` stored with the split: a tokenizer fitted on train only."""
    examples: int | None = None
    """How many examples the published dataset has (what a download brings), when known."""
    shape: tuple[int, ...] | None = None
    """One input example's shape, when fixed (images): what a dry run builds models for."""

    @property
    def tfds_name(self) -> str | None:
        """The tensorflow-datasets name the data comes from (``source`` ``tfds:<name>``), else None."""
        return self.source.removeprefix("tfds:") if self.source.startswith("tfds:") else None


_DATASETS: dict[str, Dataset] = {}


def register_dataset(name: str, description: str, source: str, *, generator_version: str | None = None, fit=None,
                     examples: int | None = None, shape: tuple[int, ...] | None = None):
    def decorate(loader):
        _DATASETS[name] = Dataset(name, description, source, loader, generator_version, fit, examples, shape)
        return loader

    return decorate


def _discover() -> None:
    from pathlib import Path

    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):  # this package's folder
        if module.name.startswith("source_"):
            importlib.import_module(f"pipelines.data.{module.name}")


def dataset_names() -> list[str]:
    _discover()
    return sorted(_DATASETS)


def get_dataset(name: str) -> Dataset:
    _discover()
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(sorted(_DATASETS))}")
    return _DATASETS[name]


def load_arrays(name: str, data_dir: str | None = None, **params: Any) -> Loaded:
    """The whole dataset; ``params`` the loader does not take are ignored, so one config
    can carry the parameters of several generators."""
    loader = get_dataset(name).loader
    signature = inspect.signature(loader)
    bound = signature.bind(data_dir, **{k: v for k, v in params.items() if k in signature.parameters})
    bound.apply_defaults()
    loaded = loader(*bound.args, **bound.kwargs)
    lengths = {key: len(value) if np.ndim(value) else 0 for key, value in loaded.arrays.items()} or {"x": 0}
    first = next(iter(lengths))
    for key, length in lengths.items():
        if length == 0 or length != lengths[first]:
            raise DatasetUnavailableError(f"dataset {name!r}: array {key!r} has {length} examples on axis 0; "
                                          f"expected at least 1, as many as {first!r} (lengths {lengths})")
    return dataclasses.replace(loaded, params=dict(list(bound.arguments.items())[1:]))  # all but data_dir


_MOCK_EXAMPLES: contextvars.ContextVar[int] = contextvars.ContextVar("nnzoo_tfds_mock_examples", default=0)


@contextlib.contextmanager
def tfds_mock(examples: int) -> Iterator[None]:
    """Within: every tensorflow-datasets load gets the library's mock data
    (``tfds.testing.mock_data``: the real builder's features, shapes and splits, random
    content drawn from a fixed seed, ``examples`` per load: the splits a loader asks
    for together get that many between them), offline, whether the dataset
    is prepared or not. Generated and bundled datasets are unaffected."""
    import tensorflow_datasets as tfds

    token = _MOCK_EXAMPLES.set(examples)
    try:
        with tfds.testing.mock_data(num_examples=examples, policy=tfds.testing.MockPolicy.USE_CODE):
            yield
    finally:
        _MOCK_EXAMPLES.reset(token)


def mock_examples() -> int:
    """Examples per load of the mock data in force (:func:`tfds_mock`); 0 when real data is loaded."""
    return _MOCK_EXAMPLES.get()


def load_tfds(name: str, data_dir: str | None, bundled: str, **kwargs: Any) -> Any:
    """``tfds.load(name, ...)`` for a dataset nnzoo splits itself (train and test
    together unless ``split`` is given). Prepared data is used as it is; a download is
    tried only where the user allows it (``NNZOO_TFDS_DOWNLOAD=1``), so an offline
    machine fails at once with the reason and what to do, naming the ``bundled``
    alternative."""
    import os

    import tensorflow_datasets as tfds

    download = os.environ.get("NNZOO_TFDS_DOWNLOAD", "0") == "1"
    whole = mock_examples() and kwargs.get("batch_size") == -1
    if whole:  # mock splits have no recorded size, which batch_size=-1 reads: batch them ourselves
        kwargs = {key: value for key, value in kwargs.items() if key != "batch_size"}
    try:
        loaded = tfds.load(name, **{"split": "train+test", **kwargs}, data_dir=data_dir, download=download)
        return loaded.batch(10**9).get_single_element() if whole else loaded
    except Exception as error:  # tfds raises many types; the user needs one message
        where = data_dir or "the tensorflow-datasets default data_dir (~/tensorflow_datasets)"
        raise DatasetUnavailableError(
            f"tensorflow-datasets could not load {name!r} from {where} "
            f"(download {'on' if download else 'off'}): {error}. "
            f"Prepare it once where there is network access (NNZOO_TFDS_DOWNLOAD=1, or "
            f"`tfds build {name} --data_dir DIR`) and pass data.data_dir=DIR, "
            f"or use a bundled dataset ({bundled})."
        ) from error


def load_tfds_supervised(name: str, data_dir: str | None, bundled: str) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, labels)`` of a tensorflow-datasets dataset, train and test together
    (nnzoo splits them itself), through :func:`load_tfds`."""
    import tensorflow_datasets as tfds

    inputs, labels = tfds.as_numpy(load_tfds(name, data_dir, bundled, as_supervised=True, batch_size=-1))
    return inputs, labels
