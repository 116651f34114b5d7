"""Airflow trigger-form params derived from the typed config."""

from __future__ import annotations

import pytest
from airflow.sdk import Param
from airflow.sdk.exceptions import ParamValidationError

from pipelines.config import PROFILES, ConfigError, to_dict
from pipelines.families import get_family
from pipelines.params import config_from_params, form_specs

SPECS = form_specs("classifiers")


def test_profile_comes_first_with_an_enum_of_the_profiles():
    assert next(iter(SPECS)) == "profile"
    assert SPECS["profile"]["enum"] == list(PROFILES)
    assert SPECS["profile"]["type"] == "string"


def test_form_shows_the_family_form_params_by_leaf_name():
    family = get_family("classifiers")
    assert set(SPECS) == {"profile", "cache", *(path.rsplit(".", 1)[-1] for path in family.form_params)}


def test_specs_carry_the_config_limits():
    assert SPECS["epochs"]["type"] == ["null", "integer"]
    assert SPECS["epochs"]["minimum"] == 1
    assert (SPECS["batch_size"]["minimum"], SPECS["batch_size"]["maximum"]) == (1, 4096)
    assert SPECS["learning_rate"]["type"] == ["null", "number"]
    assert SPECS["learning_rate"]["exclusiveMinimum"] == 0.0
    assert "minimum" not in SPECS["learning_rate"]
    assert SPECS["dataset"]["enum"][0] is None and "mnist_subset" in SPECS["dataset"]["enum"]
    for name, spec in SPECS.items():
        assert spec["title"] and spec["description"], name
        if name != "profile":
            assert spec["default"] is None, name


@pytest.mark.parametrize("name, value", [
    ("profile", "bogus"), ("profile", None), ("epochs", 0), ("epochs", 1001), ("epochs", "3"), ("epochs", 2.5),
    ("batch_size", "x"), ("batch_size", 0), ("batch_size", 4097), ("learning_rate", 0.0), ("learning_rate", -1),
    ("dataset", "cifar"), ("seed", -1),
])
def test_airflow_param_rejects_bad_values(name, value):
    with pytest.raises(ParamValidationError):
        Param(**SPECS[name]).resolve(value)


@pytest.mark.parametrize("name, value", [
    ("profile", "smoke"), ("epochs", None), ("epochs", 1), ("batch_size", 4096), ("learning_rate", 1e-4),
    ("learning_rate", None), ("dataset", None), ("dataset", "digits"), ("seed", 0),
])
def test_airflow_param_accepts_good_values_and_none(name, value):
    assert Param(**SPECS[name]).resolve(value) == value


def test_config_from_params_applies_non_null_params_to_the_profile():
    params = {"profile": "smoke", "epochs": 3, "batch_size": None, "learning_rate": "", "dataset": "digits",
              "seed": 7, "unrelated_switch": True}
    config = config_from_params("classifiers", params)
    smoke = to_dict(get_family("classifiers").config("smoke"))
    assert config["train"]["epochs"] == 3
    assert config["train"]["seed"] == 7
    assert config["data"]["dataset"] == "digits"
    assert config["train"]["batch_size"] == smoke["train"]["batch_size"]
    assert config["train"]["learning_rate"] == smoke["train"]["learning_rate"]
    assert config["data"]["max_examples"] == smoke["data"]["max_examples"]


def test_config_from_params_defaults_to_quick_and_validates():
    assert config_from_params("classifiers", {}) == to_dict(get_family("classifiers").config("quick"))
    with pytest.raises(ConfigError, match="profile='bogus'"):
        config_from_params("classifiers", {"profile": "bogus"})
    with pytest.raises(ConfigError, match=r"train.epochs=0"):
        config_from_params("classifiers", {"profile": "smoke", "epochs": 0})


def test_enum_fields_label_the_empty_choice_as_the_profile_default():
    spec = form_specs("classifiers")["dataset"]
    assert spec["enum"][0] is None
    assert spec["values_display"] == {"null": "(profile default)"}
    assert "values_display" not in form_specs("classifiers")["epochs"]
