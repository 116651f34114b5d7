"""Pretrained weights a family can use, and where they come from.

Like a tensorflow-datasets dataset, a weights file is downloaded once into a cache and
used offline afterwards; nnzoo downloads one only when the user allows it
(``NNZOO_ALLOW_DOWNLOAD=1``). Today: the ImageNet VGG19 convolutional weights that the
style-transfer family's loss network can start from.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from pipelines.errors import NnzooError

IMAGENET_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_WEIGHTS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
                        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")
IMAGENET_WEIGHTS_HASH = "253f8cb515780f3b799900260a226db6"
DOWNLOAD_VARIABLE = "NNZOO_ALLOW_DOWNLOAD"


class LossNetworkUnavailableError(NnzooError, RuntimeError):
    """The ImageNet loss network was asked for and its weights cannot be had here."""


@dataclasses.dataclass(frozen=True)
class LossNetChoice:
    name: str
    """``imagenet`` or ``random``: the net actually used."""
    weights_path: str | None
    seed: int
    reason: str


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def imagenet_obtainable() -> bool:
    """Whether a run could use the ImageNet weights here: in the Keras cache, or downloads allowed."""
    return (keras_cache_dir() / IMAGENET_WEIGHTS_FILE).is_file() or os.environ.get(DOWNLOAD_VARIABLE) == "1"


def missing_imagenet_weights() -> str:
    """Why the ImageNet weights cannot be had here and what to do; empty when they can."""
    if imagenet_obtainable():
        return ""
    return (f"the ImageNet VGG19 weights are not in {keras_cache_dir() / IMAGENET_WEIGHTS_FILE} and downloads are "
            f"off: run once with {DOWNLOAD_VARIABLE}=1 where there is network access (about 80 MB)")


def choose_loss_network(choice: str, seed: int = 0) -> LossNetChoice:
    """Resolve ``auto`` / ``imagenet`` / ``random`` to the net that will be used.

    ImageNet weights are taken from the Keras cache; they are downloaded only when the
    user allows it (``NNZOO_ALLOW_DOWNLOAD=1``). ``imagenet`` without them is an error that
    says what to do; ``auto`` falls back to the seeded random net and says so.
    """
    if choice not in ("auto", "imagenet", "random"):
        raise ValueError(f"loss_net={choice!r}: expected auto, imagenet or random")
    cached = keras_cache_dir() / IMAGENET_WEIGHTS_FILE
    if choice == "random":
        return LossNetChoice("random", None, seed, "asked for")
    if cached.is_file():
        return LossNetChoice("imagenet", str(cached), seed, f"ImageNet weights from {cached}")
    if os.environ.get(DOWNLOAD_VARIABLE) == "1":
        import keras

        path = keras.utils.get_file(IMAGENET_WEIGHTS_FILE, IMAGENET_WEIGHTS_URL, cache_subdir="models",
                                    cache_dir=str(keras_cache_dir().parent), file_hash=IMAGENET_WEIGHTS_HASH)
        return LossNetChoice("imagenet", str(path), seed, f"ImageNet weights downloaded to {path}")
    missing = (f"the ImageNet VGG19 weights are not in the Keras cache ({cached}) and downloads are off "
               f"({DOWNLOAD_VARIABLE}=1 allows one, about 80 MB)")
    from pipelines.data.registry import mock_examples

    if choice == "imagenet" and mock_examples():
        path = mock_imagenet_weights(seed)
        return LossNetChoice("imagenet", str(path), seed, f"mock data run: random weights in the ImageNet file's "
                                                          f"format ({path}); {missing}")
    if choice == "imagenet":
        raise LossNetworkUnavailableError(f"loss_net=imagenet: {missing}; or choose loss_net=random")
    return LossNetChoice("random", None, seed, f"auto: {missing}")


def mock_imagenet_weights(seed: int = 0) -> Path:
    """A stand-in for the ImageNet VGG19 file in runs on mock data: the same layers and
    format, seeded random values, written once under the work dir (never the Keras cache,
    so it can never pass for the real weights)."""
    import tempfile

    from pipelines import settings

    folder = settings.work_dir() / "mock-weights"
    path = folder / f"seed{seed}-{IMAGENET_WEIGHTS_FILE}"
    if not path.is_file():
        import keras

        folder.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(seed)
        vgg = keras.applications.VGG19(include_top=False, weights=None)
        import h5py
        from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

        # The layout of Keras' published file (per-layer groups), which VGG19(weights=path) reads.
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".h5.tmp", delete=False) as handle:
            temporary = handle.name
        with h5py.File(temporary, "w") as file:
            save_weights_to_hdf5_group(file, vgg)
        os.replace(temporary, path)
    return path
