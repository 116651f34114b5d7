"""The generic trainer: NaN guard and failure bookkeeping, optimizers, device string."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipelines import tracking, train
from pipelines.config import to_dict
from pipelines.configs.classifiers import FAMILY
from pipelines.families import get_family
from pipelines.kit import TAG_MODEL_URI, prepare_data
from pipelines.stages import classifiers

# An absurd step size on a deep-ish ReLU MLP: the loss is NaN within the first epoch
# (checked for seeds 0..4; a shallow net with SGD saturates at a finite loss instead).
DIVERGING = {"optimizer": "sgd", "learning_rate": 1e6, "mlp.hidden_units": "256,256,256"}


@pytest.mark.slow
def test_diverging_training_fails_the_run_and_registers_nothing(store):
    config = to_dict(FAMILY.config("smoke", DIVERGING))
    data = prepare_data(FAMILY, config, {})
    with pytest.raises(train.TrainingDivergedError, match=r"loss became nan at epoch 1.*learning_rate=1000000"):
        classifiers.train(config, {**data, "model": "mlp", "run_key": "dag/nan"})

    client = store.client()
    experiment = client.get_experiment_by_name("nnzoo-classifiers")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    reason = run.data.tags[tracking.TAG_FAILURE]
    assert reason.startswith("TrainingDivergedError: loss became nan")
    assert TAG_MODEL_URI not in run.data.tags
    assert "failure/traceback.txt" in tracking.list_artifacts(run.info.run_id, "failure")
    assert client.search_logged_models([experiment.experiment_id]) == []
    assert client.search_registered_models() == []
    assert client.search_model_versions("name = 'nnzoo-classifiers-mlp'") == []
    # An orchestrator retry must train again, not reuse the failed run.
    assert tracking.find_run(experiment.experiment_id, "dag/nan/mlp").info.status == "FAILED"


def _tiny_data(poison: bool = False):
    from pipelines.data.prepared import tf_dataset

    rng = np.random.default_rng(0)
    images = rng.random((32, 4, 4, 1), dtype=np.float32)
    if poison:
        images[0, 0, 0, 0] = np.nan
    return tf_dataset(images, rng.integers(0, 3, 32), batch_size=8, shuffle=False)


def test_fit_raises_on_non_finite_loss_without_mlflow():
    data = _tiny_data(poison=True)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")])
    config = get_family("classifiers").config("smoke", {"epochs": 2, "early_stopping_patience": 0}).train
    with pytest.raises(train.TrainingDivergedError, match="loss became nan at epoch 1, batch 1"):
        train.fit(model, data, None, config, verbose=0)


def test_fit_trains_the_configured_epochs_with_a_checkpoint_dir(tmp_path):
    data = _tiny_data()
    train.set_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")])
    config = get_family("classifiers").config("smoke", {"epochs": 3, "early_stopping_patience": 0}).train
    history = train.fit(model, data, data, config, checkpoint_dir=tmp_path / "ckpt",
                        verbose=0)
    assert len(history.history["loss"]) == 3
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(np.isfinite(history.history["loss"]))
    assert not (tmp_path / "ckpt").exists()  # BackupAndRestore cleans up after a completed fit


def test_fit_runs_the_configured_steps_per_call_unless_the_caller_sets_them():
    data = _tiny_data()
    config = get_family("classifiers").config("smoke", {"epochs": 1, "steps_per_execution": 3}).train
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")])
    train.fit(model, data, None, config, verbose=0)
    assert model.steps_per_execution == 3
    train.fit(model, data, None, config, verbose=0, steps_per_execution=2)
    assert model.steps_per_execution == 2


class _NotesEagerness(keras.layers.Layer):
    """An identity layer that notes, at each call, whether it runs eagerly (a traced or
    XLA-compiled step calls it once, symbolically)."""

    def __init__(self, seen: list[bool]) -> None:
        super().__init__()
        self.note = seen.append  # a bound method: Keras would track (copy) a list attribute

    def call(self, inputs):
        import tensorflow as tf

        self.note(tf.executing_eagerly())
        return inputs


@pytest.mark.parametrize("overrides, eager", [({}, False), ({"run_eagerly": True}, True),
                                              ({"run_eagerly": True, "jit_compile": True}, False)],
                         ids=["graph", "eager", "xla-wins"])
def test_fit_runs_its_steps_eagerly_only_when_asked_and_never_under_xla(overrides, eager):
    seen: list[bool] = []
    model = keras.Sequential([keras.Input((4, 4, 1)), _NotesEagerness(seen), keras.layers.Flatten(),
                              keras.layers.Dense(3, "softmax")])
    config = get_family("classifiers").config("quick", {"epochs": 2, "early_stopping_patience": 0,
                                                        **overrides}).train
    seen.clear()  # building the model called the layer symbolically
    data = _tiny_data()
    train.fit(model, data, data, config, verbose=0)
    model.predict(np.zeros((2, 4, 4, 1), np.float32), verbose=0)
    assert seen and set(seen) == {eager}
    if eager:  # every step of both epochs, validation and the prediction: no graph traced at all
        assert len(seen) > 2 * (4 + 4)


def test_smoke_profiles_train_eagerly_except_the_rbms_and_no_other_profile_does():
    """Eager steps save the graph tracing that dominates a smoke training; an RBM's step
    (contrastive divergence, a loop of Gibbs steps) is far slower eagerly, so a family
    whose config trains RBMs (an ``rbm`` section) traces its graphs even in smoke runs."""
    from pipelines.families import all_families

    families = all_families()
    eager = {name for name, family in families.items() if family.config("smoke").train.run_eagerly}
    with_rbms = {name for name, family in families.items() if hasattr(family.config("smoke"), "rbm")}
    assert with_rbms and eager == set(families) - with_rbms
    for name, family in families.items():
        assert not family.config("quick").train.run_eagerly, name
        assert not family.config("full").train.run_eagerly, name


@pytest.mark.parametrize("name, cls", [("adam", "Adam"), ("sgd", "SGD"), ("rmsprop", "RMSprop")])
def test_make_optimizer(name, cls):
    optimizer = train.make_optimizer(name, 0.01)
    assert type(optimizer).__name__ == cls
    assert float(optimizer.learning_rate) == pytest.approx(0.01)


def test_make_optimizer_rejects_unknown_names():
    with pytest.raises(ValueError, match="optimizer='lbfgs'"):
        train.make_optimizer("lbfgs", 0.01)


def test_device_description_names_cpu_or_gpu():
    assert train.device_description().startswith(("CPU (", "GPU x "))


def test_set_seed_makes_initial_weights_repeat():
    from models import build_model

    train.set_seed(5)
    first = build_model("mlp", input_shape=(4, 4, 1), num_classes=3, hidden_units=(4,)).get_weights()
    train.set_seed(5)
    second = build_model("mlp", input_shape=(4, 4, 1), num_classes=3, hidden_units=(4,)).get_weights()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_cosine_schedule_decays_to_zero_over_the_total_steps():
    optimizer = train.make_optimizer("sgd", 0.1, "cosine", total_steps=100)
    optimizer.build([keras.Variable(1.0)])
    rates = []
    for step in (0, 50, 100):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    assert rates == pytest.approx([0.1, 0.05, 0.0], abs=1e-6)
    assert float(train.make_optimizer("sgd", 0.1).learning_rate) == pytest.approx(0.1)


@pytest.mark.parametrize("schedule, steps, message", [
    ("cosine", None, "total_steps=None"), ("cosine", 0, "total_steps=0"), ("linear", 10, "lr_schedule='linear'"),
])
def test_bad_schedules_are_rejected(schedule, steps, message):
    with pytest.raises(ValueError, match=message):
        train.make_optimizer("adam", 0.1, schedule, total_steps=steps)


def test_fit_with_cosine_schedule_ends_at_rate_zero_and_prints_one_line_per_epoch(capsys):
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")])
    config = get_family("classifiers").config(
        "smoke", {"epochs": 3, "early_stopping_patience": 0, "lr_schedule": "cosine"}).train
    train.fit(model, _tiny_data(), None, config, progress_label="tiny")
    assert int(model.optimizer.iterations) == 3 * 4  # 32 examples in batches of 8
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-7)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[nnzoo] tiny epoch")]
    assert [line.split()[3] for line in lines] == ["1/3", "2/3", "3/3"]
    assert all("loss=" in line for line in lines)


def test_stop_below_ends_the_fit_once_the_monitored_value_is_low_enough():
    import keras
    import numpy as np

    from pipelines.train import StopBelow

    x = np.linspace(-1, 1, 64, dtype="float32")[:, None]
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    stop = StopBelow("loss", 1e-3)
    history = model.fit(x, 3 * x, epochs=200, batch_size=64, verbose=0, callbacks=[stop])
    assert stop.stopped_at == len(history.history["loss"]) < 200
    assert history.history["loss"][-1] < 1e-3 <= history.history["loss"][-2]
