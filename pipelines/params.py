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
their own ``check`` (the knob's ``form``). Rules that tie one field
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
from pipelines.number_patterns import DIGIT, decimal_range_regex, int_range_regex


@functools.cache
def _walk(cls: type) -> dict[str, tuple[Any, Knob, type]]:
    """Every leaf field by dotted path: ``{path: (type hint, knob, the class that holds it)}``."""
    return {path: (hint, found, owner_of(cls, path)) for path, (hint, found) in leaf_fields(cls).items()}


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
            return f"-?{DIGIT}+"
        even = rf"(?={DIGIT}*[02468](?![0-9]))" if extra.get("even") else ""
        return even + int_range_regex(int(bottom), None if high is None else int(high))
    bottom = low if low is not None else ex_low
    if bottom is None or bottom < 0:
        return rf"-?(?:{DIGIT}+(?:\.{DIGIT}*)?|\.{DIGIT}+)"
    return decimal_range_regex(bottom, high, exclusive_low=low is None)


@functools.cache
def _pydantic_schema(owner: type) -> dict[str, Any]:
    return owner.model_json_schema()


def field_schema(hint: Any, field: Knob, owner: type) -> tuple[dict[str, Any], str]:
    """(JSON-schema keys, what is allowed in words) of one config field, as a form field."""
    kind, _ = _base_type(hint)
    meta = field.metadata
    extra = meta.get("form", {})
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
        # Pydantic's own schema of the field (type, bounds, choices), made nullable.
        own = _pydantic_schema(owner)["properties"][field.name]
        own = next(branch for branch in own.get("anyOf", [own]) if branch.get("type") != "null")
        schema = {key: own[key] for key in ("type", "enum", "minimum", "maximum", "exclusiveMinimum") if key in own}
        if "const" in own:  # a single choice
            schema["enum"] = [own["const"]]
        schema["type"] = ["null", schema["type"]]
        if "enum" in schema:
            schema["enum"] = [None, *schema["enum"]]
            # The form's dropdown would show the empty choice as the word "null".
            schema["values_display"] = {"null": "(profile default)"}
            rules.append("one of " + ", ".join(_shown(c) for c in meta["choices"]))
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
