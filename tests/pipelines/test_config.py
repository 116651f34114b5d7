"""Typed configs: overrides, string parsing, validation messages, dict round trips."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pipelines.config import (
    PROFILES,
    ConfigError,
    TrainConfig,
    apply_overrides,
    flatten,
    from_dict,
    leaf_fields,
    parse_value,
    resolve_key,
    to_dict,
)
from pipelines.configs.classifiers import ClassifiersConfig
from pipelines.families import all_families, get_family

FAMILY = get_family("classifiers")


@pytest.fixture
def smoke() -> ClassifiersConfig:
    return FAMILY.config("smoke")


def test_override_by_dotted_path_and_by_unique_leaf_name_agree(smoke):
    by_path = apply_overrides(smoke, {"train.epochs": 7})
    by_leaf = apply_overrides(smoke, {"epochs": 7})
    assert by_path == by_leaf
    assert by_path.train.epochs == 7
    assert smoke.train.epochs != 7  # frozen: the original is untouched
    assert by_path.cnn == smoke.cnn and by_path.data == smoke.data


def test_resolve_key_maps_leaf_names_and_rejects_ambiguous_ones():
    assert resolve_key(ClassifiersConfig, "epochs") == "train.epochs"
    assert resolve_key(ClassifiersConfig, "filters") == "cnn.filters"
    assert resolve_key(ClassifiersConfig, "mlp.activation") == "mlp.activation"
    with pytest.raises(ConfigError, match=r"'activation' is ambiguous.*cnn.activation.*mlp.activation"):
        resolve_key(ClassifiersConfig, "activation")


def test_unknown_override_lists_the_known_keys(smoke):
    with pytest.raises(ConfigError) as error:
        apply_overrides(smoke, {"nope": 1})
    message = str(error.value)
    assert "unknown parameter 'nope'" in message
    for known in ("train.epochs", "train.batch_size", "mlp.hidden_units", "data.dataset"):
        assert known in message


@pytest.mark.parametrize("key, text, expected", [
    ("epochs", "3", 3),
    ("learning_rate", "1e-4", 1e-4),
    ("learning_rate", "2", 2.0),
    ("batch_norm", "true", True),
    ("batch_norm", "no", False),
    ("batch_norm", "0", False),
    ("hidden_units", "64,32", (64, 32)),
    ("hidden_units", " 16 ", (16,)),
    ("filters", "8, 16,", (8, 16)),
    ("max_examples", "none", None),
    ("max_examples", "null", None),
    ("optimizer", "sgd", "sgd"),
])
def test_string_values_are_parsed_by_field_type(smoke, key, text, expected):
    path = resolve_key(ClassifiersConfig, key)
    assert parse_value(ClassifiersConfig, path, text) == expected
    section, leaf = path.split(".")
    value = getattr(getattr(apply_overrides(smoke, {key: text}), section), leaf)
    assert value == expected
    assert type(value) is type(expected)


def test_none_string_clears_an_optional_string_field(smoke):
    with_dir = apply_overrides(smoke, {"data_dir": "/some/where"})
    assert with_dir.data.data_dir == "/some/where"
    assert apply_overrides(with_dir, {"data_dir": "none"}).data.data_dir is None


@pytest.mark.parametrize("key, text, expected_in_message", [
    ("epochs", "abc", ["train.epochs='abc'", "expected int", ">= 1", "<= 1000"]),
    ("epochs", "2.5", ["train.epochs='2.5'", "expected int"]),
    ("batch_norm", "maybe", ["cnn.batch_norm='maybe'", "expected bool"]),
    ("hidden_units", "64,x", ["mlp.hidden_units='x'", "expected int"]),
])
def test_unparseable_strings_name_the_field_and_the_expected_type(smoke, key, text, expected_in_message):
    with pytest.raises(ConfigError) as error:
        apply_overrides(smoke, {key: text})
    for part in expected_in_message:
        assert part in str(error.value)


@pytest.mark.parametrize("overrides, expected_in_message", [
    ({"epochs": 0}, ["train.epochs=0", "out of range", ">= 1 and <= 1000"]),
    ({"epochs": 1001}, ["train.epochs=1001", "<= 1000"]),
    ({"batch_size": 5000}, ["train.batch_size=5000", ">= 1 and <= 4096"]),
    ({"learning_rate": 0.0}, ["train.learning_rate=0.0", "> 0.0"]),
    ({"learning_rate": "inf"}, ["train.learning_rate=inf", "finite"]),
    ({"optimizer": "lbfgs"}, ["train.optimizer='lbfgs'", "one of 'adam', 'sgd', 'rmsprop'"]),
    ({"dataset": "cifar"}, ["data.dataset='cifar'", "'mnist_subset'"]),
    ({"val_fraction": 0.6}, ["data.val_fraction=0.6", "<= 0.5"]),
    ({"test_fraction": 0.0}, ["data.test_fraction=0.0", "> 0.0"]),
    ({"max_examples": 5}, ["data.max_examples=5", ">= 10"]),
    ({"hidden_units": (32, 0)}, ["mlp.hidden_units=0", ">= 1"]),
    ({"hidden_units": ""}, ["mlp.hidden_units=()", "non-empty"]),
    ({"epochs": 2.0}, ["train.epochs=2.0", "expected an integer"]),
    ({"epochs": True}, ["train.epochs=True", "expected an integer"]),
    ({"batch_norm": 1}, ["cnn.batch_norm=1", "true or false"]),
    ({"promotion_tolerance": 2}, ["promotion_tolerance=2", "<= 1.0"]),
])
def test_validation_errors_name_the_field_and_the_allowed_range(smoke, overrides, expected_in_message):
    with pytest.raises(ConfigError) as error:
        apply_overrides(smoke, overrides)
    for part in expected_in_message:
        assert part in str(error.value), f"{part!r} not in {error.value}"


def test_direct_construction_validates_too():
    with pytest.raises(ConfigError, match=r"epochs=0: out of range"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match=r"epochs=None: a value is required"):
        TrainConfig(epochs=None)


def test_from_dict_rejects_unknown_keys_and_lists_known_ones():
    with pytest.raises(ConfigError) as error:
        from_dict(ClassifiersConfig, {"trian": {}})
    assert "['trian']" in str(error.value)
    assert "'train'" in str(error.value) and "'mlp'" in str(error.value)
    with pytest.raises(ConfigError, match=r"'nope'.*known.*'batch_size'.*'epochs'"):
        from_dict(ClassifiersConfig, {"train": {"nope": 1}})


def test_nested_errors_carry_the_section_path():
    with pytest.raises(ConfigError, match=r"^train\.epochs=0: out of range"):
        from_dict(ClassifiersConfig, {"train": {"epochs": 0}})


@pytest.mark.parametrize("name, profile", [(name, profile) for name in sorted(all_families()) for profile in PROFILES])
def test_to_dict_from_dict_round_trip_is_json_safe(name, profile):
    family = get_family(name)
    config = family.config(profile)
    data = to_dict(config)
    assert from_dict(family.config_cls, json.loads(json.dumps(data))) == config
    assert family.load(data) == config
    assert from_dict(family.config_cls, {}) == family.config_cls()  # missing keys take defaults


def test_flatten_gives_one_dotted_key_per_leaf_field(smoke):
    flat = flatten(to_dict(smoke))
    assert set(flat) == set(leaf_fields(ClassifiersConfig))
    assert flat["train.epochs"] == smoke.train.epochs
    assert flat["mlp.hidden_units"] == list(smoke.mlp.hidden_units)
    assert flat["profile"] == "smoke"
    assert flatten({"a": {"b": {"c": 1}}, "d": 2}) == {"a.b.c": 1, "d": 2}


@pytest.mark.parametrize("name", sorted(all_families()))
def test_every_field_has_help_text(name):
    for path, (_hint, field) in leaf_fields(get_family(name).config_cls).items():
        assert field.metadata.get("help"), f"{name}: {path} has no help text"


def test_config_is_frozen(smoke):
    with pytest.raises(ValidationError, match="frozen"):
        smoke.train.epochs = 3  # type: ignore[misc]
