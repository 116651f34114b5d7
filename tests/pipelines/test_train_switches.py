"""The GPU-oriented switches work (here on the CPU): mixed precision, XLA compilation and
MirroredStrategy, each through one short fit of the trainer; a stage without them fits in
float32 on the default strategy. Each family's full combination in force during its
stages' fits: tests/pipelines/test_full_profile_mock.py."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models import build_model
from pipelines import tracking, train
from pipelines.config import apply_overrides, to_dict
from pipelines.configs.classifiers import FAMILY
from pipelines.data.prepared import tf_dataset
from pipelines.families import get_family
from pipelines.kit import prepare_data
from pipelines.stages import classifiers

SWITCHES = [{"train.mixed_precision": True}, {"train.jit_compile": True}, {"train.distribute": "mirrored"}]
SWITCH_IDS = ["mixed_precision", "xla", "mirrored"]


@pytest.fixture
def tiny_data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, size=64)
    return tf_dataset(images, labels, 16, shuffle=True), tf_dataset(images, labels, 32, shuffle=False)


@pytest.fixture(autouse=True)
def restore_policy():
    """Every test starts and leaves the process in float32, so a switch cannot pass on a
    policy an earlier test left behind and later tests do not inherit mixed precision."""
    train.configure_precision(False)
    yield
    train.configure_precision(False)


@pytest.mark.slow
@pytest.mark.parametrize("switches", SWITCHES, ids=SWITCH_IDS)
def test_switch_trains_and_keeps_float32_outputs(switches, tiny_data, capsys):
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
    assert model.jit_compile is config.train.jit_compile  # no augmentation layer here: XLA is on
    assert "XLA was asked for" not in capsys.readouterr().out


@pytest.mark.slow
def test_xla_that_keras_cannot_apply_is_said_not_dropped_silently(tiny_data, capsys):
    config = apply_overrides(get_family("classifiers").config("smoke"), {"train.jit_compile": True, "train.epochs": 1})
    # The CNN's RandomTranslation cannot be XLA-compiled: Keras drops XLA, the trainer says so.
    model = build_model("cnn", input_shape=(28, 28, 1), num_classes=10, filters=(4,), dense_units=8,
                        augment_shift=0.06)
    train.fit(model, *tiny_data, config.train)
    assert model.jit_compile is False
    assert "XLA was asked for (train.jit_compile) but Keras cannot compile RandomTranslation" in capsys.readouterr().out


@pytest.fixture
def fit_calls(monkeypatch):
    """Wrap the trainer's fit: record what is in force when the stage calls it, then fit."""
    import tensorflow as tf

    calls: list[dict] = []
    real_fit = train.fit

    def recording_fit(model, train_data, val_data, train_config, **kwargs):
        seen = {
            "policy": keras.mixed_precision.global_policy().name,
            "conv_compute_dtype": model.get_layer("conv_1_1").compute_dtype,
            "output_dtype": model.output.dtype,
            "has_strategy": tf.distribute.has_strategy(),
            "strategy": type(tf.distribute.get_strategy()).__name__,
            "config_jit_compile": train_config.jit_compile,
        }
        history = real_fit(model, train_data, val_data, train_config, **kwargs)
        seen["model_jit_compile"] = model.jit_compile
        seen["loss"] = history.history["loss"]
        calls.append(seen)
        return history

    monkeypatch.setattr(train, "fit", recording_fit)
    return calls


def _train_cnn_stage(switches: dict) -> dict:
    config = to_dict(apply_overrides(FAMILY.config("smoke"), {**switches, "train.epochs": 1}))
    data = prepare_data(FAMILY, config, {})
    return classifiers.train(config, {**data, "model": "cnn", "run_key": None})


def _fit_through_the_stage(switches: dict, fit_calls: list[dict]) -> tuple[dict, dict]:
    result = _train_cnn_stage(switches)
    assert len(fit_calls) == 1
    seen = fit_calls[0]
    assert len(seen["loss"]) == 1 and np.isfinite(seen["loss"][0])
    assert seen["output_dtype"] == "float32"  # softmax stays float32 under mixed precision too
    run = tracking.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    for key, value in switches.items():
        assert run.data.params[key] == str(value), key
    return seen, result


@pytest.mark.slow
def test_stage_without_switches_fits_in_float32_on_the_default_strategy_without_xla(store, fit_calls):
    seen, _ = _fit_through_the_stage({}, fit_calls)
    assert seen["policy"] == "float32"
    assert seen["conv_compute_dtype"] == "float32"
    assert seen["has_strategy"] is False
    assert seen["strategy"] != "MirroredStrategy"
    assert seen["config_jit_compile"] is False and seen["model_jit_compile"] is False


def test_unknown_distribution_is_refused():
    with pytest.raises(ValueError, match="distribute='tpu'"):
        train.distribution_scope("tpu")
