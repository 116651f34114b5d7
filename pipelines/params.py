"""Airflow trigger-form params derived from a family's typed config.

Light on purpose: DAG files import it at parse time. Each form field is a
JSON-schema spec (type, range or enum, pattern, title, description) taken from the
field's :func:`pipelines.config.knob` declaration, so the form and the config cannot
drift. A field left empty (null) means "the profile's default".

Every rule the config checks that JSON schema can express is in the spec, so Airflow's
server refuses a bad value when the run is triggered (HTTP 400 from the REST API, a red
banner in the UI) and creates no run: ranges and choices of scalars; for list fields,
which travel as comma-separated text, a pattern that holds each item's syntax, range
and choices and the number of items; and the few rules the config classes check in
their own ``__post_init__`` (listed in :data:`_EXTRA_RULES`). Rules that tie one field
to another (``digits_min <= digits_max``) cannot be written in one field's schema: the
description says so, and the config refuses them when the run's first task decodes
its params (``ConfigError``).

Airflow 3.3's form itself checks nothing while typing: its number widget clamps to
``minimum``/``maximum`` when the field loses focus, and the server validates on submit.
The description therefore spells out each field's range and every profile's default.
"""

from __future__ import annotations

import collections
import copy
import decimal
import functools
import re
import typing
from typing import Any

from pipelines.config import (
    PROFILES,
    ConfigError,
    Knob,
    _base_type,
    flatten,
    leaf_fields,
    owner_of,
    resolve_key,
    to_dict,
)
from pipelines.families import Family, get_family

_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}

# --- rules the config classes check in their own __post_init__ -----------------------------
#
# Keyed by (config class name, field name). ``items``: (fewest, most) list items;
# ``even``: each integer even; ``pattern``: for a text field, a regex the text must
# contain a match of; ``item``: the regex of one list item; ``note``: a rule JSON schema
# cannot express (it involves another field), said in the description.
_EXTRA_RULES: dict[tuple[str, str], dict[str, Any]] = {
    ("NeuronConfig", "classes"): {"items": (2, 2), "note": "the two classes must differ"},
    ("VanishingConfig", "depth"): {
        "even": True, "note": "at least 2 x (number of vanishing.widths) + 2"},
    ("DegradationConfig", "depths"): {
        "items": (2, 2), "even": True,
        "note": "shallow < deep, each at least 2 x (number of degradation.widths) + 2"},
    ("ScenesData", "digits_min"): {"note": "at most digits_max"},
    ("ScenesData", "digits_max"): {"note": "at least digits_min"},
    ("ScenesData", "scale_min"): {"note": "at most scale_max"},
    ("ScenesData", "scale_max"): {"note": "at least scale_min"},
    ("GeneratorConfig", "pose_scale_min"): {"note": "at most pose_scale_max"},
    ("GeneratorConfig", "pose_scale_max"): {"note": "at least pose_scale_min"},
    ("ClassifierSource", "classifier_version"): {"pattern": r"^(champion|[0-9]+)$",
                                                 "rule": "'champion' or a version number"},
    ("DetectionConfig", "heatmap_sizes"): {"item": r"[0-9]+x[0-9]+", "rule": "sizes HxW, e.g. 84x140"},
    ("StyleConfig", "style_image"): {"pattern": r"\S", "rule": "not blank"},
    ("FastConfig", "stylizer_filters"): {"items": (3, 3)},
    ("RBMConfig", "layers"): {"items": (1, 4)},  # MAX_RBM_LAYERS: checked by tests/pipelines/test_params.py
}


@functools.cache
def _walk(cls: type) -> dict[str, tuple[Any, Knob, type]]:
    """Every leaf field by dotted path: ``{path: (type hint, knob, the class that holds it)}``."""
    return {path: (hint, found, owner_of(cls, path)) for path, (hint, found) in leaf_fields(cls).items()}


# --- regular expressions for numbers in a range (list items travel as text) ----------------

_INT = "[0-9]"


def _same_length(low: str, high: str) -> str:
    """Digit strings of len(low) between ``low`` and ``high`` (same length, low <= high)."""
    if not low:
        return ""
    if low[0] == high[0]:
        return low[0] + _same_length(low[1:], high[1:])
    rest = len(low) - 1
    if low[1:] == "0" * rest and high[1:] == "9" * rest:
        return f"[{low[0]}-{high[0]}]" + (f"{_INT}{{{rest}}}" if rest else "")
    parts = [low[0] + _same_length(low[1:], "9" * rest)]
    if int(high[0]) - int(low[0]) > 1:
        parts.append(f"[{int(low[0]) + 1}-{int(high[0]) - 1}]" + (f"{_INT}{{{rest}}}" if rest else ""))
    parts.append(high[0] + _same_length("0" * rest, high[1:]))
    return "(?:" + "|".join(parts) + ")"


def int_range_regex(low: int, high: int | None) -> str:
    """A regex of the whole numbers ``low <= n <= high`` (``high`` None: no bound), in
    decimal without sign; leading zeros are allowed (``int()`` reads them)."""
    if low < 0:
        raise ValueError("negative bounds are not supported")
    parts = []
    top = high if high is not None else 10 ** len(str(low)) - 1
    for digits in range(len(str(low)), len(str(top)) + 1):
        start = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        end = min(top, 10 ** digits - 1)
        if start <= end:
            parts.append(_same_length(str(start), str(end)))
    if high is None:
        parts.append(f"[1-9]{_INT}{{{len(str(low))},}}")  # more digits than low
    return "0*(?:" + "|".join(parts) + ")"


def _split_decimal(value: float) -> tuple[int, str]:
    """(integer part, fraction digits without trailing zeros) of a non-negative number."""
    text = format(decimal.Decimal(repr(float(value))), "f")
    whole, _, fraction = text.partition(".")
    return int(whole), fraction.rstrip("0")


def _fraction_at_most(digits: str) -> str:
    """Fraction digits F with 0.F <= 0.``digits`` (``digits`` non-empty)."""
    parts = [digits[:i] + f"[0-{int(d) - 1}]{_INT}*" for i, d in enumerate(digits) if d != "0"]
    parts.append(digits + "0*")
    parts += [digits[:j] for j in range(len(digits))]  # shorter: padded with zeros
    return "(?:" + "|".join(parts) + ")"


def _fraction_above(digits: str, strict: bool) -> str:
    """Fraction digits F with 0.F > 0.``digits`` (or >= when not ``strict``); F non-empty."""
    parts = [digits[:i] + f"[{int(d) + 1}-9]{_INT}*" for i, d in enumerate(digits) if d != "9"]
    parts.append(digits + (f"{_INT}*[1-9]{_INT}*" if strict else f"{_INT}*"))
    return "(?:" + "|".join(parts) + ")"


def _whole(value: int) -> str:
    return "0*" + (str(value) if value else "")  # 0 may be written ".5"


def decimal_range_regex(low: float, high: float | None, *, exclusive_low: bool = False) -> str:
    """A regex of the non-negative decimals (``12``, ``0.5``, ``.5``, ``3.``; no sign, no
    exponent) from ``low`` (inclusive, or exclusive) to ``high`` (inclusive; None: none)."""
    if low < 0 or (high is not None and high < low):
        raise ValueError(f"unsupported range {low}..{high}")
    any_fraction = rf"(?:\.{_INT}*)?"
    low_whole, low_fraction = _split_decimal(low)
    # The value's whole part is above low's, or equal with a large enough fraction.
    if exclusive_low:
        equal = rf"\.{_fraction_above(low_fraction, True)}" if low_fraction else rf"\.{_INT}*[1-9]{_INT}*"
    else:
        equal = rf"\.{_fraction_above(low_fraction, False)}" if low_fraction else any_fraction
    above = f"(?:{int_range_regex(low_whole + 1, None)}{any_fraction}|{_whole(low_whole)}{equal})"
    if high is None:
        at_most = ""
    else:
        high_whole, high_fraction = _split_decimal(high)
        parts = []
        if high_whole > 0:
            parts.append(f"{int_range_regex(0, high_whole - 1)}{any_fraction}|\\.{_INT}+")
        tail = rf"(?:\.{_fraction_at_most(high_fraction)})?" if high_fraction else r"(?:\.0*)?"
        parts.append(_whole(high_whole) + tail)
        at_most = "(?=(?:" + "|".join(parts) + r")(?![0-9.]))"
    return rf"(?=\.?[0-9]){at_most}{above}"


# --- one field ---------------------------------------------------------------------------------


def _number(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def _shown(value: Any) -> str:
    """A value as the form takes it (lists comma-separated)."""
    if value is None:
        return "none"
    if value == "":
        return "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_shown(item) for item in value) or "(empty)"
    return _number(value) if isinstance(value, (int, float)) else str(value)


def _range_text(meta: typing.Mapping[str, Any]) -> str:
    low, ex_low, high = meta.get("minimum"), meta.get("exclusive_minimum"), meta.get("maximum")
    if low is not None and high is not None:
        return f"{_number(low)}–{_number(high)}"
    parts = []
    if low is not None:
        parts.append(f"≥ {_number(low)}")
    if ex_low is not None:
        parts.append(f"> {_number(ex_low)}")
    if high is not None:
        parts.append(f"≤ {_number(high)}")
    return ", ".join(parts)


def _item_regex(item_kind: Any, meta: typing.Mapping[str, Any], extra: typing.Mapping[str, Any]) -> str:
    if "item" in extra:
        return extra["item"]
    if item_kind is str:
        choices = meta.get("choices")
        return "(?:" + "|".join(re.escape(c) for c in choices) + ")" if choices else r"[\w.-]+"
    low, ex_low, high = meta.get("minimum"), meta.get("exclusive_minimum"), meta.get("maximum")
    if item_kind is int:
        bottom = low if low is not None else (int(ex_low) + 1 if ex_low is not None else None)
        if bottom is None or bottom < 0:
            return f"-?{_INT}+"
        even = rf"(?={_INT}*[02468](?![0-9]))" if extra.get("even") else ""
        return even + int_range_regex(int(bottom), None if high is None else int(high))
    bottom = low if low is not None else ex_low
    if bottom is None or bottom < 0:
        return rf"-?(?:{_INT}+(?:\.{_INT}*)?|\.{_INT}+)"
    return decimal_range_regex(bottom, high, exclusive_low=low is None)


def field_schema(hint: Any, field: Knob, owner: type) -> tuple[dict[str, Any], str]:
    """(JSON-schema keys, what is allowed in words) of one config field, as a form field."""
    kind, _ = _base_type(hint)
    meta = field.metadata
    extra = _EXTRA_RULES.get((owner.__name__, field.name), {})
    schema: dict[str, Any] = {}
    rules: list[str] = []
    if typing.get_origin(kind) is tuple:
        # A list travels as text ("500,500"): the form's array widget yields strings.
        item_kind = typing.get_args(kind)[0]
        item = _item_regex(item_kind, meta, extra)
        fewest, most = extra.get("items", (1, None))
        repeat = f"{{{fewest - 1},{'' if most is None else most - 1}}}"
        schema["type"] = ["null", "string"]
        # The empty text is allowed: like null, it means "the profile's default".
        schema["pattern"] = rf"^$|^\s*{item}(?:\s*,\s*{item}){repeat}\s*$"
        count = (f"exactly {fewest}" if fewest == most else f"at most {most}" if most else "")
        if meta.get("choices"):
            rules.append("comma-separated names from " + ", ".join(meta["choices"]))
        elif item_kind in (int, float):
            what = ("even " if extra.get("even") else "") + ("whole numbers" if item_kind is int else "decimals")
            rules.append(f"comma-separated {what} {_range_text(meta)}".rstrip())
        else:
            rules.append("comma-separated " + extra.get("rule", "names"))
        if count:
            rules.append(f"{count} item{'s' if most != 1 else ''}")
    else:
        schema["type"] = ["null", _JSON_TYPES.get(kind, "string")]
        if meta.get("choices"):
            schema["enum"] = [None, *meta["choices"]]
            # The form's dropdown would show the empty choice as the word "null".
            schema["values_display"] = {"null": "(profile default)"}
            rules.append("one of " + ", ".join(_shown(c) for c in meta["choices"]))
        for key, schema_key in (("minimum", "minimum"), ("maximum", "maximum"),
                                ("exclusive_minimum", "exclusiveMinimum")):
            if meta.get(key) is not None:
                schema[schema_key] = meta[key]
        if extra.get("even"):
            schema["multipleOf"] = 2
        if "pattern" in extra:
            # The empty text is allowed: like null, it means "the profile's default".
            schema["pattern"] = f"^$|{extra['pattern']}"
            rules.append(extra["rule"])
        text = _range_text(meta)
        if text:
            rules.append(("even, " if extra.get("even") else "") + text)
    if extra.get("note"):
        rules.append(f"{extra['note']} (checked when the run starts)")
    return schema, "; ".join(rules)


@functools.cache
def _profile_values(family_name: str) -> dict[str, dict[str, Any]]:
    """``{profile: {dotted path: value}}``: what ``family.config(profile)`` holds, read
    from the config's defaults and the profile's overrides without building and
    validating three configs (DAG files call this at parse time; the tests compare it
    with ``family.config``)."""
    family = get_family(family_name)
    defaults = flatten(to_dict(family.config_cls()))
    out: dict[str, dict[str, Any]] = {}
    for profile in PROFILES:
        values = dict(defaults, profile=profile)
        for key, value in family.profiles[profile].items():
            values[key if key in defaults else resolve_key(family.config_cls, key)] = (
                list(value) if isinstance(value, tuple) else value)
        out[profile] = values
    return out


def profile_defaults_text(family_name: str, path: str) -> str:
    """``smoke 2, quick 30, full 30``: the field's value in each profile (a list of
    names that holds every choice: ``all``)."""
    values = _profile_values(family_name)
    choices = _walk(get_family(family_name).config_cls)[path][1].metadata.get("choices")

    def shown(value: Any) -> str:
        if isinstance(value, list) and choices and len(value) > 1 and list(value) == list(choices):
            return "all"
        return _shown(value)

    return ", ".join(f"{profile} {shown(values[profile][path])}" for profile in PROFILES)


def _form_paths(family: Family) -> tuple[str, ...]:
    # Every family's form offers step caching, after its own fields.
    return (*family.form_params, *[p for p in ("cache",) if p not in family.form_params])


@functools.cache
def _form_specs(family_name: str) -> dict[str, dict[str, Any]]:
    family = get_family(family_name)
    specs: dict[str, dict[str, Any]] = {
        "profile": {
            "default": "quick", "type": "string", "enum": list(PROFILES), "title": "Profile",
            "description": "smoke: tiny, seconds (tests). quick: CPU, minutes, bundled data. "
                           "full: tensorflow-datasets, GPU, paper-grade numbers.",
        },
    }
    leaves = _walk(family.config_cls)
    leaf_counts = collections.Counter(path.rsplit(".", 1)[-1] for path in leaves)
    for path in _form_paths(family):
        hint, field, owner = leaves[path]
        leaf = path.rsplit(".", 1)[-1]
        # A field is named by its leaf ("epochs") unless another section has one too.
        name = leaf if leaf_counts[leaf] == 1 else path
        schema, rules = field_schema(hint, field, owner)
        allowed = f"{rules[0].upper()}{rules[1:]}; " if rules else ""
        spec: dict[str, Any] = {
            "default": None,
            "title": (leaf if name == leaf else path).replace("_", " ").replace(".", ": ").capitalize(),
            "description": (f"{field.metadata.get('help', '')} {allowed}"
                            f"{profile_defaults_text(family_name, path)}. "
                            f"Empty: the profile's default ({path})."),
            **schema,
        }
        specs[name] = spec
    return specs


def form_specs(family_name: str) -> dict[str, dict[str, Any]]:
    """``{param name: Param kwargs}`` for the family's DAG (``profile`` first)."""
    return copy.deepcopy(_form_specs(family_name))


def config_from_params(family_name: str, params: typing.Mapping[str, Any]) -> dict[str, Any]:
    """The validated config dict for a DAG run's params (empty fields: profile default)."""
    family = get_family(family_name)
    specs = _form_specs(family_name)
    leaves = _walk(family.config_cls)
    overrides = {}
    for key, value in params.items():
        if key not in specs:
            continue  # params a DAG adds for itself (e.g. cache switches) are not config
        if key != "profile" and value is not None and value != "":
            path = key if key in leaves else next(p for p in _form_paths(family) if p.rsplit(".", 1)[-1] == key)
            # JSON has one kind of number: the schema's "integer" accepts 2.0, so the config does too.
            if _base_type(leaves[path][0])[0] is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            overrides[key] = value
    profile = params.get("profile") or "quick"
    if profile not in PROFILES:
        raise ConfigError(f"profile={profile!r}: expected one of {', '.join(PROFILES)}")
    return to_dict(family.config(profile, overrides))
