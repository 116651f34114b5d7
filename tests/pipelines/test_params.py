"""Airflow trigger-form params derived from the typed config: the JSON schema refuses what the
config refuses, and each description shows the range and every profile's default."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import jsonschema
import pytest
from airflow.sdk import Param
from airflow.sdk.exceptions import ParamValidationError

from pipelines import params as params_module
from pipelines.config import PROFILES, ConfigError, _base_type, flatten, to_dict
from pipelines.families import all_families, get_family
from pipelines.params import config_from_params, form_specs

SPECS = form_specs("classifiers")


def test_profile_comes_first_with_an_enum_of_the_profiles():
    assert next(iter(SPECS)) == "profile"
    assert SPECS["profile"]["enum"] == list(PROFILES)
    assert SPECS["profile"]["type"] == "string"


def test_form_shows_the_family_form_params_by_leaf_name():
    family = get_family("classifiers")
    assert set(SPECS) == {"profile", "cache", "mock_data", *(path.rsplit(".", 1)[-1] for path in family.form_params)}


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
    # Range keywords would be applied to the text, not to its numbers: the pattern holds the ranges.
    assert not {"minimum", "maximum", "exclusiveMinimum"} & set(spec)


@pytest.mark.parametrize("name, value", [
    ("layers", "500,500"), ("layers", " 64 , 32 "), ("layers", "10"), ("layers", None),
    ("label_fractions", "0.01, 0.1,1.0"), ("label_fractions", "1"), ("label_fractions", ".5,0.01"),
])
def test_list_fields_accept_comma_separated_numbers(name, value):
    assert Param(**UNSUPERVISED[name]).resolve(value) == value


@pytest.mark.parametrize("name, value", [
    ("layers", "500,x"), ("layers", "500,,500"), ("layers", "500;500"), ("layers", "1.5"), ("layers", "-1"),
    ("label_fractions", "0.1,abc"), ("label_fractions", "0.1 0.2"), ("label_fractions", "[0.1]"),
    ("layers", "0"), ("layers", "65537"), ("layers", "1,2,3,4,5"), ("label_fractions", "0,1"),
    ("label_fractions", "0.5,1.5"), ("label_fractions", "1e-2"),
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


# --- every family, every field: the schema refuses what the config refuses ----------------------

FAMILIES = sorted(all_families())


def server_accepts(spec: dict, value) -> bool:
    """What Airflow's api-server does with a conf value on trigger (SerializedParam.resolve:
    jsonschema.validate with a FormatChecker on the Param's schema)."""
    schema = {key: v for key, v in spec.items() if key not in ("default", "description")}
    try:
        jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())
    except jsonschema.ValidationError:
        return False
    return True


def _number(value) -> str:
    return params_module._number(value)


def bad_values(hint, field: dataclasses.Field, owner: type) -> list:
    """Values the config refuses for this field, derived from its knob and extra rules."""
    kind, _ = _base_type(hint)
    meta = field.metadata
    extra = field.metadata.get("form", {})
    low, ex_low, high = meta.get("minimum"), meta.get("exclusive_minimum"), meta.get("maximum")
    if typing.get_origin(kind) is tuple:
        item_kind = typing.get_args(kind)[0]
        fewest, most = extra.get("items", (1, None))
        if item_kind is str:
            good = (meta.get("choices") or ("84x140",))[0]
            bad = ["bogus!", f"{good};{good}", ","]
            if "item" in extra:
                bad.append("84by140")
            return bad
        good = _number(low if low is not None else 1)
        if extra.get("even") and int(good) % 2:
            good = str(int(good) + 1)
        bad = ["abc", f"{good},x", f"-{good}", f"[{good}]"]
        if item_kind is int:
            bad.append(f"{good}.5")
            if low is not None:
                bad.append(f"{good},{low - 1}" if low >= 1 else f"{good},-1")
            if high is not None:
                bad.append(f"{good},{high + 1}")
            if extra.get("even"):
                bad.append(f"{good},{int(good) + 1}")
        else:
            if ex_low is not None:
                bad.append(f"{good},{_number(ex_low)}")
            if low is not None and low > 0:
                bad.append(f"{good},{_number(low / 2)}")
            if high is not None:
                bad.append(f"{good},{_number(high * 1.5 + 1)}")
        if most is not None:
            bad.append(",".join([good] * (most + 1)))
        if fewest > 1:
            bad.append(",".join([good] * (fewest - 1)))
        return bad
    if kind is bool:
        return [1, "maybe"]
    if kind is str:
        bad = [5]
        if meta.get("choices"):
            bad.append("bogus")
        if (owner.__name__, field.name) == ("StyleConfig", "style_image"):
            bad.append("   ")
        if (owner.__name__, field.name) == ("ClassifierSource", "classifier_version"):
            bad += ["v2", "latest"]
        return bad
    bad = ["abc", True]
    if kind is int:
        bad.append(2.5)
        if extra.get("even"):
            bad.append(low + 1)
    else:
        bad += [float("inf"), float("-inf")]
    if low is not None:
        bad.append(low - 1)
    if ex_low is not None:
        bad += [ex_low, ex_low - 1]
    if high is not None:
        bad.append(high + 1)
    return bad


def form_fields(family_name: str):
    """(form name, dotted path, hint, field, owner) of each config field in the family's form."""
    specs = form_specs(family_name)
    leaves = params_module._walk(get_family(family_name).config_cls)
    for name in specs:
        if name == "profile":
            continue
        path = name if name in leaves else next(p for p in leaves if p.rsplit(".", 1)[-1] == name)
        yield (name, path, *leaves[path])


FORM_FIELDS = [(family, name) for family in FAMILIES for name, *_ in form_fields(family)]


@pytest.mark.parametrize("family_name, name", FORM_FIELDS)
def test_the_schema_refuses_every_value_the_config_refuses(family_name, name):
    spec = form_specs(family_name)[name]
    [(_, path, hint, field, owner)] = [f for f in form_fields(family_name) if f[0] == name]
    bad = bad_values(hint, field, owner)
    assert bad, f"{family_name}.{path}: no bad value to try"
    for value in bad:
        with pytest.raises(ConfigError):
            config_from_params(family_name, {"profile": "smoke", name: value})
        assert not server_accepts(spec, value), f"{family_name}.{path}: the schema lets {value!r} through"
        with pytest.raises(ParamValidationError):
            Param(**spec).resolve(value)


@pytest.mark.parametrize("family_name", FAMILIES)
def test_every_config_field_of_every_family_has_a_schema_that_refuses_bad_values(family_name):
    # Beyond the form: the same derivation holds for every field the config declares.
    from pipelines.config import apply_overrides

    family = get_family(family_name)
    smoke = family.config("smoke")
    for path, (hint, field, owner) in params_module._walk(family.config_cls).items():
        schema, _ = params_module.field_schema(hint, field, owner)
        for value in bad_values(hint, field, owner):
            with pytest.raises(ConfigError):
                apply_overrides(smoke, {path: value})
            assert not server_accepts(schema, value), f"{path}: the schema lets {value!r} through"


def as_form_value(value):
    """A config value as it is typed into the form (lists as comma-separated text)."""
    if isinstance(value, list):
        return ",".join(_number(item) if isinstance(item, (int, float)) else str(item) for item in value)
    return value


@pytest.mark.parametrize("family_name", FAMILIES)
@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_default_passes_the_schema(family_name, profile):
    family = get_family(family_name)
    values = flatten(to_dict(family.config(profile)))
    specs = form_specs(family_name)
    for name, path, *_ in form_fields(family_name):
        value = as_form_value(values[path])
        assert server_accepts(specs[name], value), f"{path}={value!r} ({profile}) refused by the form's schema"
        assert server_accepts(specs[name], None)
        # ... and the config reads the typed text back to the same value.
        assert flatten(config_from_params(family_name, {"profile": profile, name: value}))[path] == values[path]
    for path, (hint, field, owner) in params_module._walk(family.config_cls).items():
        schema, _ = params_module.field_schema(hint, field, owner)
        if values[path] is not None and values[path] != "":
            assert server_accepts(schema, as_form_value(values[path])), f"{path}={values[path]!r} ({profile})"


@pytest.mark.parametrize("family_name, name", FORM_FIELDS)
def test_descriptions_carry_the_range_and_every_profile_default(family_name, name):
    family = get_family(family_name)
    description = form_specs(family_name)[name]["description"]
    [(_, path, hint, field, owner)] = [f for f in form_fields(family_name) if f[0] == name]
    meta = field.metadata
    if meta.get("minimum") is not None and meta.get("maximum") is not None:
        assert f"{_number(meta['minimum'])}–{_number(meta['maximum'])}" in description
    if meta.get("exclusive_minimum") is not None:
        assert f"> {_number(meta['exclusive_minimum'])}" in description
        assert f"≤ {_number(meta['maximum'])}" in description
    for choice in meta.get("choices") or ():
        assert choice in description
    for profile in PROFILES:
        value = flatten(to_dict(family.config(profile)))[path]
        shown = {True: "true", False: "false"}.get(value, as_form_value(value)) if isinstance(value, bool) \
            else as_form_value(value)
        if isinstance(value, list) and list(value) == list(meta.get("choices") or ()):
            shown = "all"
        assert f"{profile} {shown}" in description, (profile, description)
    assert f"({path})" in description


def test_classifiers_epochs_description_reads_as_the_form_shows_it():
    assert SPECS["epochs"]["description"] == (
        "Training epochs (upper bound when early stopping). 1–1000; smoke 2, quick 20, full 30. "
        "Empty: the profile's default (train.epochs).")
    assert "> 0, ≤ 1000000; smoke 0.003, quick 0.001, full 0.001." in SPECS["learning_rate"]["description"]
    assert "One of mnist_subset, digits, mnist, fashion_mnist; smoke mnist_subset, quick mnist_subset, full mnist." \
        in SPECS["dataset"]["description"]


@pytest.mark.parametrize("family_name, params, message", [
    ("cnn_depth", {"depths": "8,6"}, "shallow < deep"),
    ("cnn_depth", {"depths": "8,8"}, "shallow < deep"),
    ("unsupervised", {}, None),
])
def test_cross_field_rules_pass_the_schema_are_described_and_the_config_refuses_them(family_name, params, message):
    specs = form_specs(family_name)
    for name, value in params.items():
        assert server_accepts(specs[name], value)  # JSON schema cannot compare two items or two fields
        assert "checked when the run starts" in specs[name]["description"]
    if message:
        with pytest.raises(ConfigError, match=message):
            config_from_params(family_name, {"profile": "smoke", **params})


def test_cross_field_rules_of_fields_outside_the_form_are_caught_by_the_config():
    fcn = get_family("fcn_deconv")
    with pytest.raises(ConfigError, match="digits_min=5 > digits_max=4"):
        fcn.config("quick", {"digits_min": 5})
    with pytest.raises(ConfigError, match="pose_scale_min"):
        fcn.config("quick", {"pose_scale_min": 1.5})
    with pytest.raises(ConfigError, match="need exactly two different class indices"):
        get_family("cnn_depth").config("quick", {"neuron.classes": "3,3"})
    with pytest.raises(ConfigError, match="must be even and give at least one block"):
        get_family("cnn_depth").config("quick", {"vanishing.widths": "4,4,4,4,4", "vanishing.depth": 8})


def test_the_rbm_layer_limit_in_the_schema_is_the_dag_s():
    from pipelines.configs.unsupervised import MAX_RBM_LAYERS

    assert params_module._walk(get_family("unsupervised").config_cls)["rbm.layers"][1].metadata["form"]["items"] == (1, MAX_RBM_LAYERS)


def test_an_integral_float_for_an_integer_field_is_read_as_the_integer():
    # JSON has one number type: jsonschema's "integer" accepts 2.0, so the config must too.
    assert server_accepts(SPECS["epochs"], 2.0)
    assert config_from_params("classifiers", {"profile": "smoke", "epochs": 2.0})["train"]["epochs"] == 2


def test_nan_passes_the_number_schema_and_the_config_refuses_it():
    # jsonschema compares NaN with the bounds, which is always false; JSON proper has no NaN.
    assert server_accepts(SPECS["learning_rate"], float("nan"))
    with pytest.raises(ConfigError, match="expected a finite number"):
        config_from_params("classifiers", {"profile": "smoke", "learning_rate": float("nan")})


def test_regexes_of_number_ranges_match_exactly_the_numbers_in_range():
    # Decimals in plain notation only: an exponent ("1e-2") is refused.
    import decimal
    import re

    for low, high in [(0, 9), (1, 1000), (4, 200), (1, 65536), (2, 5000), (7, 7), (10, 12), (100, None)]:
        regex = re.compile(rf"^{params_module.int_range_regex(low, high)}$")
        for n in [*range(0, 5200), *range(65000, 66000), 99999, 100000]:
            assert bool(regex.match(str(n))) == (n >= low and (high is None or n <= high)), (low, high, n)
        assert regex.match("0" + str(low)) and not regex.match("") and not regex.match(f"{low}.0")
    texts = {w + ("" if f is None else "." + f) for w in ("", "0", "00", "1", "2", "7", "8", "9", "12")
             for f in (None, "", "0", "5", "25", "24", "26", "1", "01", "001", "9", "99", "2501", "0001")}
    for low, high, exclusive in [(0, 1, True), (0.25, 8.0, False), (0, 0.9, False), (0.05, 2.5, True), (1, None, False)]:
        regex = re.compile(rf"^{params_module.decimal_range_regex(low, high, exclusive_low=exclusive)}$")
        for text in texts | {"1e-2", "-0.5", "+1", " 1"}:
            try:
                value = decimal.Decimal("0" + text if text.startswith(".") else text) if text not in ("", ".") \
                    and text.strip() == text and text[0] not in "+-" and "e" not in text else None
            except decimal.InvalidOperation:
                value = None
            lo = decimal.Decimal(repr(float(low)))
            ok = value is not None and (value > lo if exclusive else value >= lo) and (
                high is None or value <= decimal.Decimal(repr(float(high))))
            assert bool(regex.match(text)) == ok, (low, high, exclusive, text)


def test_form_specs_are_fast_and_import_nothing_heavy():
    # DAG files build their forms at parse time: every family's form, in a fresh interpreter.
    code = ("import sys, time\n"
            "t = time.perf_counter()\n"
            "from pipelines.families import all_families\n"
            "from pipelines.params import form_specs\n"
            "names = list(all_families())\n"
            "t1 = time.perf_counter()\n"
            "for name in names: form_specs(name)\n"
            "t2 = time.perf_counter()\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules]\n"
            "print(f'{t1 - t:.3f} {t2 - t1:.3f} {heavy}')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    specs, heavy = float(out[1]), " ".join(out[2:])
    assert heavy == "[]"
    assert specs < 0.2, f"form_specs of every family took {specs:.3f}s"
