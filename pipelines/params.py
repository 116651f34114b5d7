"""Airflow trigger-form params derived from a family's typed config.

Light on purpose: DAG files import it at parse time. Each form field is a
JSON-schema spec (type, range or enum, title, description) taken from the field's
:func:`pipelines.config.knob` declaration, so the form and the config cannot drift.
A field left empty (null) means "the profile's default".
"""

from __future__ import annotations

import collections
import re
import typing
from typing import Any

from pipelines.config import PROFILES, ConfigError, _base_type, leaf_fields, to_dict
from pipelines.families import get_family

_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def form_specs(family_name: str) -> dict[str, dict[str, Any]]:
    """``{param name: Param kwargs}`` for the family's DAG (``profile`` first)."""
    family = get_family(family_name)
    specs: dict[str, dict[str, Any]] = {
        "profile": {
            "default": "quick", "type": "string", "enum": list(PROFILES), "title": "Profile",
            "description": "smoke: tiny, seconds (tests). quick: CPU, minutes, bundled data. "
                           "full: tensorflow-datasets, GPU, paper-grade numbers.",
        },
    }
    leaves = leaf_fields(family.config_cls)
    leaf_counts = collections.Counter(path.rsplit(".", 1)[-1] for path in leaves)
    # Every family's form offers step caching, after its own fields.
    for path in (*family.form_params, *[p for p in ("cache",) if p not in family.form_params]):
        hint, field = leaves[path]
        kind, _ = _base_type(hint)
        meta = field.metadata
        leaf = path.rsplit(".", 1)[-1]
        # A field is named by its leaf ("epochs") unless another section has one too.
        name = leaf if leaf_counts[leaf] == 1 else path
        spec: dict[str, Any] = {
            "default": None,
            "title": (leaf if name == leaf else path).replace("_", " ").replace(".", ": ").capitalize(),
            "description": f"{meta.get('help', '')} Empty: the profile's default ({path}).",
        }
        if typing.get_origin(kind) is tuple:
            # A list travels as text ("500,500"): the form's array widget yields strings.
            item = typing.get_args(kind)[0]
            if item is str:  # names from a fixed list, e.g. variants
                number = "(" + "|".join(re.escape(choice) for choice in meta.get("choices") or ()) + ")"
                number = number if meta.get("choices") else r"[\w.-]+"
            else:
                number = r"\d+" if item is int else r"\d*\.?\d+(e-?\d+)?"
            spec["type"] = ["null", "string"]
            spec["pattern"] = rf"^\s*{number}(\s*,\s*{number})*\s*$"
            spec["description"] += " Comma-separated, e.g. " + ",".join(str(v) for v in field.default) + "."
        else:
            spec["type"] = ["null", _JSON_TYPES.get(kind, "string")]
        if meta.get("choices") and "pattern" not in spec:
            spec["enum"] = [None, *meta["choices"]]
            # The form's dropdown would show the empty choice as the word "null".
            spec["values_display"] = {"null": "(profile default)"}
        for key, schema_key in (("minimum", "minimum"), ("maximum", "maximum"),
                                ("exclusive_minimum", "exclusiveMinimum")):
            if meta.get(key) is not None and "pattern" not in spec:
                spec[schema_key] = meta[key]
        specs[name] = spec
    return specs


def config_from_params(family_name: str, params: typing.Mapping[str, Any]) -> dict[str, Any]:
    """The validated config dict for a DAG run's params (empty fields: profile default)."""
    family = get_family(family_name)
    known = set(form_specs(family_name))
    overrides = {}
    for key, value in params.items():
        if key not in known:
            continue  # params a DAG adds for itself (e.g. cache switches) are not config
        if key != "profile" and value is not None and value != "":
            overrides[key] = value
    profile = params.get("profile") or "quick"
    if profile not in PROFILES:
        raise ConfigError(f"profile={profile!r}: expected one of {', '.join(PROFILES)}")
    return to_dict(family.config(profile, overrides))
