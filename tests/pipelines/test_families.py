"""Family registry and profiles."""

from __future__ import annotations

import pytest

from pipelines.config import PROFILES, ConfigError, resolve_key
from pipelines.families import Family, all_families, get_family, register_family

FAMILY = get_family("classifiers")
NAMES = sorted(all_families())


def _value(config, path):
    node = config
    for part in path.split("."):
        node = getattr(node, part)
    return node


def test_classifiers_family_is_discovered_with_its_names():
    assert "classifiers" in all_families()
    assert FAMILY.dag_id == "zoo_classifiers"
    assert FAMILY.experiment_name == "nnzoo-classifiers"
    assert FAMILY.stages == ("prepare_data", "train", "evaluate", "register")


def test_unknown_family_lists_known_ones():
    with pytest.raises(ConfigError, match=r"unknown family 'nope'.*classifiers"):
        get_family("nope")


@pytest.mark.parametrize("name", NAMES)
def test_every_family_follows_the_naming_convention_and_has_its_stages(name):
    import importlib

    family = get_family(name)
    assert (family.dag_id, family.experiment_name) == (f"zoo_{name}", f"nnzoo-{name}")
    assert importlib.import_module(f"pipelines.configs.{name}").FAMILY is family
    stages = importlib.import_module(f"pipelines.stages.{name}")
    for step in family.pipeline.steps:
        assert callable(getattr(stages, step.name, None)), f"pipelines.stages.{name} lacks {step.name}"
    assert family.headline, f"{name} declares no headline metrics"


@pytest.mark.parametrize("name, profile", [(name, profile) for name in NAMES for profile in PROFILES])
def test_each_profile_applies_its_declared_overrides(name, profile):
    family = get_family(name)
    config = family.config(profile)
    assert config.profile == profile
    declared = family.profiles[profile]
    assert declared, f"profile {profile} declares nothing"
    for key, value in declared.items():
        path = resolve_key(type(config), key)
        assert _value(config, path) == value, f"{profile}: {path}"
    untouched = [p for p in ("train.optimizer", "train.seed", "data.split_seed") if p not in declared]
    default = family.config_cls()
    for path in untouched:
        assert _value(config, path) == _value(default, path)


@pytest.mark.parametrize("name", NAMES)
def test_profiles_differ_from_each_other(name):
    configs = {profile: get_family(name).config(profile) for profile in PROFILES}
    assert len({repr(config) for config in configs.values()}) == len(PROFILES)
    # smoke works on less data (a subset, or fewer generated examples), full on other data
    assert configs["smoke"].data != configs["quick"].data
    assert configs["smoke"].train.epochs < configs["quick"].train.epochs
    assert configs["full"].data != configs["quick"].data


def test_config_applies_overrides_after_the_profile():
    config = FAMILY.config("smoke", {"epochs": "3", "mlp.hidden_units": "8,4"})
    assert config.train.epochs == 3
    assert config.mlp.hidden_units == (8, 4)
    assert config.data.max_examples == FAMILY.profiles["smoke"]["data.max_examples"]


def test_unknown_profile_is_a_config_error():
    with pytest.raises(ConfigError, match=r"profile='bogus'.*smoke, quick, full"):
        FAMILY.config("bogus")


def test_a_family_must_declare_every_profile():
    with pytest.raises(ValueError, match="lacks profiles"):
        Family("x", "x", FAMILY.config_cls, {"smoke": {}}, pipeline=FAMILY.pipeline)


def test_registering_another_family_under_a_taken_name_fails():
    other = Family("classifiers", "dup", FAMILY.config_cls, FAMILY.profiles, pipeline=FAMILY.pipeline)
    with pytest.raises(ValueError, match="registered twice"):
        register_family(other)
    assert get_family("classifiers") is FAMILY
