"""The GPU-oriented switches of the trainer work (here on the CPU): mixed precision,
XLA compilation and MirroredStrategy, each through one short fit."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models import build_model
from pipelines import train
from pipelines.config import apply_overrides
from pipelines.data.prepared import tf_dataset
from pipelines.families import get_family


@pytest.fixture
def tiny_data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, size=64)
    return tf_dataset(images, labels, 16, shuffle=True), tf_dataset(images, labels, 32, shuffle=False)


@pytest.fixture(autouse=True)
def restore_policy():
    yield
    train.configure_precision(False)


@pytest.mark.parametrize("switches", [
    {"train.mixed_precision": True},
    {"train.jit_compile": True},
    {"train.distribute": "mirrored"},
], ids=["mixed_precision", "xla", "mirrored"])
def test_switch_trains_and_keeps_float32_outputs(switches, tiny_data):
    config = apply_overrides(get_family("classifiers").config("smoke"), {**switches, "train.epochs": 1})
    train.configure_devices()
    train.configure_precision(config.train.mixed_precision)
    with train.distribution_scope(config.train.distribute):
        model = build_model("cnn", input_shape=(28, 28, 1), num_classes=10, filters=(4,), dense_units=8)
        history = train.fit(model, *tiny_data, config.train)
    assert np.isfinite(history.history["loss"][0])
    if config.train.mixed_precision:
        assert keras.mixed_precision.dtype_policy().name == "mixed_float16"
        assert model.get_layer("conv_1_1").compute_dtype == "float16"
    assert model.output.dtype == "float32"  # softmax stays float32 under mixed precision


def test_unknown_distribution_is_refused():
    with pytest.raises(ValueError, match="distribute='tpu'"):
        train.distribution_scope("tpu")
