"""Airflow trigger-form params derived from a family's typed config (DAG files import it at parse time).

Each form field is a JSON-schema spec taken from the field's :func:`pipelines.config.knob`, so form and
config cannot drift; empty (null) means "the profile's default". Airflow checks a run's params on
trigger (HTTP 400, a red banner in the UI, no run), so the spec holds every rule JSON schema can express:
ranges, choices, the knob's ``form`` rules and, for lists (comma-separated text), a pattern of the items
and their number. Rules across fields (``digits_min <= digits_max``) are described; the config refuses
them when the run starts. The form checks nothing while typing: descriptions give ranges and defaults.
"""

from __future__ import annotations

import collections
import copy
import functools
import re
import typing
from typing import Any

from pipelines.config import PROFILES, Knob, _base_type, flatten, leaf_fields, resolve_key, to_dict
from pipelines.families import get_family
from pipelines.number_patterns import DIGIT, decimal_range_regex, int_range_regex


def _walk(cls: type) -> dict[str, tuple[Any, Knob, type]]:
    """Every leaf field by dotted path: ``{path: (type hint, knob, the class that declares it)}``."""
    return {path: (hint, found, found.owner) for path, (hint, found) in leaf_fields(cls).items()}


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() and abs(value) < 1e15 else str(value)


def _shown(value: Any, choices: typing.Sequence = ()) -> str:
    """A value as the form takes it (lists comma-separated; one that holds every choice: ``all``)."""
    if isinstance(value, (list, tuple)):
        return "all" if len(value) > 1 and list(value) == list(choices) else ",".join(map(_shown, value)) or "(empty)"
    return str(value).lower() if isinstance(value, bool) or value is None else _number(value) or "(empty)"


def _range_text(meta: typing.Mapping[str, Any]) -> str:
    low, high = meta.get("minimum"), meta.get("maximum")
    if low is not None and high is not None:
        return f"{_number(low)}–{_number(high)}"
    signs = (("minimum", "≥"), ("exclusive_minimum", ">"), ("maximum", "≤"))
    return ", ".join(f"{sign} {_number(meta[key])}" for key, sign in signs if meta.get(key) is not None)


def _item_regex(item_kind: Any, meta: typing.Mapping[str, Any], extra: typing.Mapping[str, Any]) -> str:
    """One list item's syntax, range and choices."""
    if item_kind is str or "item" in extra:
        choices = meta.get("choices")
        return extra.get("item") or ("(?:" + "|".join(map(re.escape, choices)) + ")" if choices else r"[\w.-]+")
    low, ex_low, high = meta.get("minimum"), meta.get("exclusive_minimum"), meta.get("maximum")
    # The smallest allowed value; above an int's ``exclusive_minimum``: the next whole number.
    bottom = low if low is not None or ex_low is None else ex_low if item_kind is float else int(ex_low) + 1
    if bottom is None or bottom < 0:
        return f"-?{DIGIT}+" if item_kind is int else rf"-?(?:{DIGIT}+(?:\.{DIGIT}*)?|\.{DIGIT}+)"
    if item_kind is float:
        return decimal_range_regex(bottom, high, exclusive_low=low is None)
    even = rf"(?={DIGIT}*[02468](?![0-9]))" if extra.get("even") else ""
    return even + int_range_regex(int(bottom), None if high is None else int(high))


def field_schema(hint: Any, field: Knob, owner: type) -> tuple[dict[str, Any], str]:
    """(JSON-schema keys, what is allowed in words) of one config field, as a form field."""
    kind, _ = _base_type(hint)
    meta, extra = field.metadata, field.metadata.get("form", {})
    even, rules = "even " if extra.get("even") else "", []
    if typing.get_origin(kind) is tuple:
        # A list travels as text ("500,500"): the form's array widget yields strings. The empty text
        # is allowed: like null, it means "the profile's default".
        item_kind = typing.get_args(kind)[0]
        item = _item_regex(item_kind, meta, extra)
        fewest, most = extra.get("items", (1, None))
        repeat = f"{{{fewest - 1},{'' if most is None else most - 1}}}"
        schema = {"type": ["null", "string"], "pattern": rf"^$|^\s*{item}(?:\s*,\s*{item}){repeat}\s*$"}
        numbers = f"{even}{'whole numbers' if item_kind is int else 'decimals'} {_range_text(meta)}".rstrip()
        what = numbers if item_kind in (int, float) else extra.get("rule", "names")
        rules.append("comma-separated " + ("names from " + ", ".join(meta["choices"]) if meta.get("choices") else what))
        if most:
            rules.append(f"{'exactly' if fewest == most else 'at most'} {most} item{'s' if most != 1 else ''}")
    else:
        # Pydantic's own schema of the field (type, bounds), made nullable.
        own = owner.model_json_schema()["properties"][field.name]
        own = next(branch for branch in own.get("anyOf", [own]) if branch.get("type") != "null")
        schema = {"type": ["null", own["type"]], **{k: own[k] for k in ("minimum", "maximum", "exclusiveMinimum")
                                                     if k in own}}
        if meta.get("choices"):
            # The form's dropdown would show the empty choice as the word "null".
            schema.update(enum=[None, *meta["choices"]], values_display={"null": "(profile default)"})
            rules.append("one of " + ", ".join(_shown(c) for c in meta["choices"]))
        if even:
            schema["multipleOf"] = 2
        if "pattern" in extra:
            schema["pattern"] = f"^$|{extra['pattern']}"  # the empty text, like null: the profile's default
            rules.append(extra["rule"])
        if text := _range_text(meta):
            rules.append(f"{even.strip()}, {text}" if even else text)
    if extra.get("note"):
        rules.append(f"{extra['note']} (checked when the run starts)")
    return schema, "; ".join(rules)


@functools.cache
def _form_specs(family_name: str) -> dict[str, dict[str, Any]]:
    family = get_family(family_name)
    specs: dict[str, dict[str, Any]] = {"profile": {
        "default": "quick", "type": "string", "enum": list(PROFILES), "title": "Profile",
        "description": "smoke: tiny, seconds (tests). quick: CPU, minutes, bundled data. "
                       "full: tensorflow-datasets, GPU, paper-grade numbers."}}
    leaves = _walk(family.config_cls)
    values = {profile: flatten(to_dict(family.config(profile))) for profile in PROFILES}
    leaf_counts = collections.Counter(path.rsplit(".", 1)[-1] for path in leaves)
    # Every family's form offers step caching and mock data, after its own fields.
    for path in (*family.form_params, *[p for p in ("cache", "mock_data") if p not in family.form_params]):
        hint, field, owner = leaves[path]
        leaf = path.rsplit(".", 1)[-1]
        # A field is named by its leaf ("epochs") unless another section has one too.
        name = leaf if leaf_counts[leaf] == 1 else path
        schema, rules = field_schema(hint, field, owner)
        allowed = f"{rules[:1].upper()}{rules[1:]}; " if rules else ""
        # Every profile's value: "smoke 2, quick 30, full 30".
        defaults = ", ".join(f"{p} {_shown(values[p][path], field.metadata.get('choices') or ())}" for p in PROFILES)
        specs[name] = {
            "default": None, "title": name.replace("_", " ").replace(".", ": ").capitalize(),
            "description": f"{field.metadata.get('help', '')} {allowed}{defaults}. "
                           f"Empty: the profile's default ({path}).", **schema}
    return specs


def form_specs(family_name: str) -> dict[str, dict[str, Any]]:
    """``{param name: Param kwargs}`` for the family's DAG (``profile`` first)."""
    return copy.deepcopy(_form_specs(family_name))


def config_from_params(family_name: str, params: typing.Mapping[str, Any]) -> dict[str, Any]:
    """The validated config dict for a DAG run's params (empty fields: profile default; params a
    DAG adds for itself, e.g. cache switches, are not config)."""
    family = get_family(family_name)
    overrides = {}
    for key, value in params.items():
        if key in _form_specs(family_name) and key != "profile" and value not in (None, ""):
            # JSON has one kind of number: the schema's "integer" accepts 2.0, so the config does too.
            is_int = _base_type(leaf_fields(family.config_cls)[resolve_key(family.config_cls, key)][0])[0] is int
            overrides[key] = int(value) if is_int and isinstance(value, float) and value.is_integer() else value
    return to_dict(family.config(params.get("profile") or "quick", overrides))
