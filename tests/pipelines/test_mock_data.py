"""Runs on tensorflow-datasets' mock data (``mock_data``): what it changes in a config,
where the data comes from, and what it never touches (real data caches, promotion)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.config import ConfigError, flatten, to_dict
from pipelines.data.registry import get_dataset, load_arrays, mock_examples, tfds_mock
from pipelines.families import all_families, get_family

COUNT_WORDS = ("epochs", "examples", "steps", "scenes", "poses", "iterations", "seeds", "repeats", "every")


@pytest.mark.parametrize("name", sorted(all_families()))
def test_mock_config_is_the_full_profile_with_fewer_examples_and_steps(name):
    family = get_family(name)
    full = flatten(to_dict(family.config("full")))
    mock = flatten(to_dict(family.config("full", {"mock_data": 16})))
    changed = {key for key in full if full[key] != mock[key]}
    assert changed - {"mock_data"}, f"{name} declares no mock counts"
    assert changed <= set(family.mock) | {"mock_data"}
    for key in changed - {"mock_data"}:
        # Only counts, only fewer: datasets, shapes, models and switches stay the full profile's.
        assert any(word in key.rsplit(".", 1)[-1] for word in COUNT_WORDS), key
        assert isinstance(mock[key], int) and mock[key] < full[key], key
    assert family.config("full", {"mock_data": 16}).profile_label == "full-mock"


@pytest.mark.parametrize("name", [name for name, family in sorted(all_families().items()) if family.mock_sample])
def test_the_mock_sample_only_narrows_the_full_profiles_selections(name):
    family = get_family(name)
    full = flatten(to_dict(family.config("full")))
    sampled = flatten(to_dict(family.config("full", {"mock_data": 16, **family.mock_sample})))
    for key, chosen in family.mock_sample.items():
        assert isinstance(full[key], (list, tuple)) and list(sampled[key]) == list(chosen), key
        assert chosen and set(chosen) < set(full[key]), f"{key}: {chosen!r} is not a part of {full[key]!r}"


def test_mock_counts_stay_under_the_users_own_overrides():
    family = get_family("classifiers")
    assert family.config("full", {"mock_data": 8, "train.epochs": 3}).train.epochs == 3
    assert family.config("full", {"mock_data": 8}).train.epochs == 1


def test_mock_data_is_refused_outside_the_full_profile():
    with pytest.raises(ConfigError, match="mock_data=8: .*only the full profile loads; profile is 'quick'"):
        get_family("classifiers").config("quick", {"mock_data": 8})


def test_mock_data_is_a_trigger_form_field_of_every_family():
    from pipelines.params import config_from_params, form_specs

    for name in all_families():
        assert "mock_data" in form_specs(name)
    config = config_from_params("classifiers", {"profile": "full", "mock_data": 12})
    assert config["mock_data"] == 12 and config["train"]["epochs"] == 1


def test_mock_data_stands_in_for_tfds_offline_with_the_real_shapes_and_says_so(tmp_path):
    from pipelines.config import DataConfig
    from pipelines.data.prepared import prepare

    assert mock_examples() == 0
    with tfds_mock(6):
        assert mock_examples() == 6
        loaded = load_arrays("cifar10", str(tmp_path / "nothing-here"))
        prepared = prepare(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "nothing-here"),
                                      val_fraction=0.0, test_fraction=0.25), root=tmp_path / "data")
    assert mock_examples() == 0
    assert loaded.arrays["x"].shape == (6, *get_dataset("cifar10").shape)  # train + test together
    assert loaded.arrays["x"].dtype == np.uint8 and loaded.arrays["y"].max() < 10
    assert prepared.source == "tfds:cifar10 (mock data: random content, 6 examples)"
    # Outside the context the real loader runs again: offline and not prepared, a clear error.
    from pipelines.data.registry import DatasetUnavailableError

    with pytest.raises(DatasetUnavailableError, match="could not load 'cifar10'.*NNZOO_TFDS_DOWNLOAD=1"):
        load_arrays("cifar10", str(tmp_path / "nothing-here"))


def test_held_out_digits_of_mock_and_real_data_are_never_mixed_up():
    from pipelines.data.source_scenes import held_out_digits

    with tfds_mock(20):
        few, _ = held_out_digits("mnist", 0.5)
    with tfds_mock(40):
        more, _ = held_out_digits("mnist", 0.5)
    assert len(more) > len(few)  # a cached earlier load was not reused for other data


def test_scenes_from_too_few_digits_say_what_to_change():
    from pipelines.data.registry import DatasetUnavailableError

    with tfds_mock(4), pytest.raises(DatasetUnavailableError, match="digits_from=mnist: .*leaves none"):
        load_arrays("mnist_scenes", None, digits_from="mnist", digit_holdout=0.25, scenes=10)


def test_the_imagenet_loss_network_on_mock_data_is_a_stand_in_file_never_the_keras_cache(tmp_path, monkeypatch):
    from pipelines.data.source_weights import choose_loss_network, keras_cache_dir

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("NNZOO_WORK_DIR", str(tmp_path / "work"))
    with tfds_mock(4):
        chosen = choose_loss_network("imagenet", seed=0)
    assert chosen.name == "imagenet" and "mock data run" in chosen.reason
    assert chosen.weights_path.startswith(str(tmp_path / "work")) and not keras_cache_dir().exists()
    from models.style import build_loss_network

    network = build_loss_network(chosen.weights_path)  # the file reads as Keras' published format
    assert network.name == "vgg19_imagenet"


def test_too_few_examples_for_a_split_is_named_before_any_training(tmp_path):
    from pipelines.config import DataConfig
    from pipelines.data.prepared import prepare
    from pipelines.data.registry import DatasetUnavailableError

    with tfds_mock(12), pytest.raises(DatasetUnavailableError,
                                      match="'mnist': 12 examples leave the val split.* empty at val_fraction=0.1"):
        prepare(DataConfig(dataset="mnist", val_fraction=0.1, test_fraction=0.15), root=tmp_path)


def test_pet_masks_are_folded_into_the_trimap_on_mock_data_and_refused_outside_it_otherwise(monkeypatch):
    from pipelines.data import registry
    from pipelines.data.registry import DatasetUnavailableError

    with tfds_mock(4):
        loaded = load_arrays("oxford_iiit_pet", None, side=16)
        assert loaded.arrays["mask"].shape == (4, 16, 16) and set(np.unique(loaded.arrays["mask"])) <= {0, 1, 2}
        monkeypatch.setattr(registry, "mock_examples", lambda: 0)  # the same random bytes read as real data
        with pytest.raises(DatasetUnavailableError, match="oxford_iiit_pet: segmentation masks hold values .* "
                                                          "outside the trimap's 1..3"):
            load_arrays("oxford_iiit_pet", None, side=16)


def test_a_single_neuron_slice_missing_a_class_is_named_before_any_run(tmp_path):
    from pipelines.config import to_dict
    from pipelines.data.prepared import prepare
    from pipelines.data.registry import DatasetUnavailableError
    from pipelines.stages import cnn_depth

    family = get_family("cnn_depth")
    config = family.config("full", {"mock_data": 24})
    with tfds_mock(24):
        data = prepare(config.data, root=tmp_path)
    train_labels = data.split("train")[1]
    absent = next(label for label in range(10) if not (train_labels == label).any())  # a few random labels
    config = config.replace(neuron=config.neuron.replace(classes=(0, absent)))
    with pytest.raises(DatasetUnavailableError, match=r"neuron.classes=\(.*\): the (train|test) split of cifar10 .* "
                                                      "need both classes"):
        cnn_depth.single_neuron(to_dict(config), {"data_uri": data.uri})
