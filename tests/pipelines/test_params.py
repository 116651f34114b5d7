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


# --- unsupervised: list-valued fields and an ambiguous leaf -------------------------------

UNSUPERVISED = form_specs("unsupervised")


@pytest.mark.parametrize("name", ["layers", "label_fractions"])
def test_list_fields_travel_as_text_with_a_pattern(name):
    spec = UNSUPERVISED[name]
    assert spec["type"] == ["null", "string"]
    assert spec["pattern"].startswith("^") and spec["pattern"].endswith("$")
    assert "Comma-separated" in spec["description"]
    # Range keywords would be applied to the text, not to its numbers: the config checks those.
    assert not {"minimum", "maximum", "exclusiveMinimum"} & set(spec)


@pytest.mark.parametrize("name, value", [
    ("layers", "500,500"), ("layers", " 64 , 32 "), ("layers", "10"), ("layers", None),
    ("label_fractions", "0.01, 0.1,1.0"), ("label_fractions", "1"), ("label_fractions", ".5,1e-2"),
])
def test_list_fields_accept_comma_separated_numbers(name, value):
    assert Param(**UNSUPERVISED[name]).resolve(value) == value


@pytest.mark.parametrize("name, value", [
    ("layers", "500,x"), ("layers", "500,,500"), ("layers", "500;500"), ("layers", "1.5"), ("layers", "-1"),
    ("label_fractions", "0.1,abc"), ("label_fractions", "0.1 0.2"), ("label_fractions", "[0.1]"),
])
def test_list_fields_reject_other_text(name, value):
    with pytest.raises(ParamValidationError):
        Param(**UNSUPERVISED[name]).resolve(value)


def test_an_ambiguous_leaf_is_named_by_its_dotted_path():
    # train.epochs, rbm.epochs and rbm_features.epochs share the leaf "epochs".
    assert "epochs" not in UNSUPERVISED
    assert "rbm.epochs" in UNSUPERVISED
    assert UNSUPERVISED["rbm.epochs"]["type"] == ["null", "integer"]
    assert (UNSUPERVISED["rbm.epochs"]["minimum"], UNSUPERVISED["rbm.epochs"]["maximum"]) == (1, 1000)
    assert UNSUPERVISED["rbm.epochs"]["title"] == "Rbm: epochs"
    assert "(rbm.epochs)" in UNSUPERVISED["rbm.epochs"]["description"]
    # Leaves that only one section has keep their short name.
    assert {"layers", "label_fractions", "seeds", "steps", "bottleneck", "seed", "cache"} <= set(UNSUPERVISED)


def test_unsupervised_config_from_params_parses_lists_and_dotted_names():
    config = config_from_params("unsupervised", {"profile": "smoke", "layers": "64,32", "rbm.epochs": 3,
                                                 "label_fractions": "0.01, 0.1,1.0", "seeds": None})
    smoke = to_dict(get_family("unsupervised").config("smoke"))
    assert config["rbm"]["layers"] == [64, 32]
    assert config["rbm"]["epochs"] == 3
    assert config["finetune"]["label_fractions"] == [0.01, 0.1, 1.0]
    assert config["finetune"]["seeds"] == smoke["finetune"]["seeds"]
    assert config["train"]["epochs"] == smoke["train"]["epochs"]  # only the RBM's epochs changed
    assert config["rbm_features"]["epochs"] == smoke["rbm_features"]["epochs"]


def test_unsupervised_config_from_params_refuses_more_layers_than_the_dag_has():
    from pipelines.configs.unsupervised import MAX_RBM_LAYERS

    with pytest.raises(ConfigError, match=rf"at most {MAX_RBM_LAYERS} RBM layers"):
        config_from_params("unsupervised", {"profile": "smoke", "layers": "1,2,3,4,5"})
    four = ",".join(["8"] * MAX_RBM_LAYERS)
    assert config_from_params("unsupervised", {"profile": "smoke", "layers": four})["rbm"]["layers"] == [8] * 4


@pytest.mark.parametrize("params, message", [
    ({"layers": "500,x"}, r"rbm.layers"), ({"layers": "0"}, r"rbm.layers"),
    ({"label_fractions": "0,1"}, r"finetune.label_fractions"), ({"label_fractions": "0.5,1.5"}, r"label_fractions"),
    ({"rbm.epochs": 0}, r"rbm.epochs"),
])
def test_unsupervised_config_from_params_validates_list_items(params, message):
    with pytest.raises(ConfigError, match=message):
        config_from_params("unsupervised", {"profile": "smoke", **params})


# --- cnn_depth: a list of names from a fixed set -------------------------------------------


def test_a_list_of_names_accepts_known_names_only_and_the_config_gets_them_stripped():
    spec = form_specs("cnn_depth")["variants"]
    assert "enum" not in spec  # the enum would apply to the whole text, not to each name
    assert Param(**spec).resolve("max_pool, strided") == "max_pool, strided"
    for bad in ("max_pool,bogus", "max_pool;strided", "max_poolx"):
        with pytest.raises(ParamValidationError):
            Param(**spec).resolve(bad)
    config = config_from_params("cnn_depth", {"profile": "smoke", "variants": " strided , max_pool"})
    assert config["variants"] == ["strided", "max_pool"]
