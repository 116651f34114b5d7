"""Name -> dataset loader. Loaders import their heavy dependencies lazily."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable

import numpy as np

from pipelines.errors import NnzooError


class DatasetUnavailableError(NnzooError, RuntimeError):
    """The dataset cannot be loaded here (not downloaded, no network, corrupt file)."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    source: str
    """Where the data comes from, recorded with every run."""
    loader: Callable[[str | None], tuple[np.ndarray, np.ndarray, tuple[str, ...]]]
    """``loader(data_dir) -> (images uint8 [N,H,W,C], labels int64 [N], class_names)``."""


_DATASETS: dict[str, Dataset] = {}


def register_dataset(name: str, description: str, source: str):
    def decorate(loader):
        _DATASETS[name] = Dataset(name, description, source, loader)
        return loader

    return decorate


def _discover() -> None:
    import pipelines.data as package

    for module in pkgutil.iter_modules(package.__path__):
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


def load_arrays(name: str, data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The whole dataset as ``(images, labels, class_names)``; see :class:`Dataset`."""
    images, labels, class_names = get_dataset(name).loader(data_dir)
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(labels):
        raise DatasetUnavailableError(
            f"dataset {name!r} loaded with unexpected shape/dtype {images.shape}/{images.dtype}"
        )
    return images, labels.astype(np.int64), class_names
