"""Typed experiment configs: frozen pydantic models whose fields carry their own limits.

Every tunable value is declared once, with :func:`knob`: its type, default, allowed
range or choices and a one-line help text. Pydantic validates it (the knob becomes the
field's constraints: bounds, a ``Literal`` of the choices, non-empty lists of bounded
items) and gives its JSON schema; :class:`ConfigError` says what went wrong in one line
naming the value and what is allowed. The same declaration parses ``--param KEY=VALUE``
overrides, renders the Airflow trigger form (:mod:`pipelines.params`) and is flattened
into MLflow params. A rule that ties fields together goes in the class's ``check``.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from pipelines.errors import BadValueError

PROFILES = ("smoke", "quick", "full")
"""smoke: tiny, for tests (seconds). quick: CPU, bundled data (minutes).
full: tensorflow-datasets, GPU, paper-grade numbers."""

_LIMITS = ("minimum", "maximum", "exclusive_minimum", "choices")


class ConfigError(BadValueError):
    """A config value is unknown, of the wrong type or out of its allowed range."""


@dataclasses.dataclass(frozen=True)
class Knob:
    """One declared field as the form, the parser and the messages read it."""

    name: str
    default: Any
    metadata: Mapping[str, Any]
    """``help`` and the limits: ``minimum``, ``maximum``, ``exclusive_minimum``, ``choices``."""
    hint: Any = None
    """The declared type (``int``, ``tuple[int, ...]``, ``str | None``...)."""


def knob(default: Any, help: str, *, minimum: float | None = None, maximum: float | None = None,
         exclusive_minimum: float | None = None, choices: tuple | None = None, form: Mapping | None = None) -> Any:
    """Declare a config field with its limits and help text. ``form``: what the trigger
    form checks beyond the limits, for rules the class's ``check`` holds (``items``:
    (fewest, most) list items, ``even``, ``pattern`` + ``rule`` for text, ``item``: one
    list item's regex, ``note``: a rule that involves another field), see
    :mod:`pipelines.params`."""
    limits = dict(minimum=minimum, maximum=maximum, exclusive_minimum=exclusive_minimum, choices=choices, form=form)
    return Field(default, description=help, json_schema_extra={k: v for k, v in limits.items() if v is not None})


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(underlying type, optional?) for a field annotation."""
    args = typing.get_args(hint)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def _constrained(hint: Any, limits: Mapping[str, Any]) -> Any:
    """``hint`` with the knob's limits as pydantic constraints."""
    kind, optional = _base_type(hint)

    def one(item: Any) -> Any:
        if limits.get("choices"):
            return Literal[tuple(limits["choices"])]
        return Annotated[item, Field(ge=limits.get("minimum"), le=limits.get("maximum"),
                                     gt=limits.get("exclusive_minimum"))]

    if typing.get_origin(kind) is tuple:
        kind = Annotated[tuple[one(typing.get_args(kind)[0]), ...], annotated_types.MinLen(1)]
    else:
        kind = one(kind)
    return kind | None if optional else kind


def _describe_limits(meta: Mapping[str, Any]) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    parts = [f"{sign} {meta[key]}" for key, sign in (("minimum", ">="), ("exclusive_minimum", ">"), ("maximum", "<="))
             if meta.get(key) is not None]
    return " and ".join(parts) or "any value"


class Config(BaseModel):
    """Base of every config section: strict types, frozen, no unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Before pydantic reads the class: each knob's limits become its field's constraints.
        super().__init_subclass__(**kwargs)
        namespace = vars(sys.modules[cls.__module__])
        knobs = {}
        for name, hint in cls.__dict__.get("__annotations__", {}).items():
            info = cls.__dict__.get(name)
            if isinstance(info, FieldInfo) and info.description:
                hint = eval(hint, namespace) if isinstance(hint, str) else hint  # noqa: S307 - the class's own code
                limits = dict(info.json_schema_extra or {})
                setattr(cls, name, Field(info.default, description=info.description))
                knobs[name] = Knob(name, info.default, {"help": info.description, **limits}, hint)
                cls.__annotations__[name] = _constrained(hint, limits)
        cls.__knobs__ = knobs

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise ConfigError(_explain(type(self), error)) from None

    @model_validator(mode="after")
    def _checked(self) -> Config:
        self.check()
        return self

    def check(self) -> None:
        """Rules that tie fields together; raise :class:`ConfigError`."""

    def replace(self, **changes: Any) -> Config:
        """A validated copy with ``changes``."""
        return type(self)(**{**{name: getattr(self, name) for name in type(self).model_fields}, **changes})


def _knob(cls: type[Config], name: str) -> Knob | None:
    return next((c.__dict__["__knobs__"][name] for c in cls.__mro__ if name in c.__dict__.get("__knobs__", {})), None)


def _section(cls: type[Config], name: str) -> type[Config] | None:
    kind = cls.model_fields[name].annotation
    return kind if isinstance(kind, type) and issubclass(kind, Config) else None


def _explain(cls: type[Config], error: ValidationError) -> str:
    """The first problem of a validation error as one line: ``path=value: what is allowed``."""
    problems = error.errors()
    first = problems[0]
    names = [str(part) for part in first["loc"] if not isinstance(part, int)]
    owner: Any = cls
    for name in names[:-1]:
        owner = _section(owner, name) if owner and name in owner.model_fields else None
    path, value, kind = ".".join(names), first["input"], first["type"]
    if kind == "extra_forbidden":
        unknown = sorted(str(p["loc"][-1]) for p in problems if p["type"] == kind and p["loc"][:-1] == first["loc"][:-1])
        text = f"unknown config key(s) {unknown} for {owner.__name__}; known: {sorted(owner.model_fields)}"
        return f"{'.'.join(names[:-1])}: {text}" if len(names) > 1 else text
    if kind == "value_error":  # a class's own check
        return f"{path}.{first['ctx']['error']}" if path else str(first["ctx"]["error"])
    found = _knob(owner, names[-1]) if owner and names and names[-1] in owner.model_fields else None
    limits = _describe_limits(found.metadata if found else {})
    if value is None:
        return f"{path}=None: a value is required"
    if kind == "model_type":
        return f"{path}: expected a {_section(owner, names[-1]).__name__} section"
    what = {"int_type": f"expected an integer, {limits}", "float_type": f"expected a finite number, {limits}",
            "finite_number": f"expected a finite number, {limits}", "bool_type": "expected true or false",
            "string_type": f"expected a string, {limits}", "literal_error": f"expected {limits}",
            "too_short": "expected a non-empty list", "tuple_type": "expected a non-empty list"}.get(kind)
    if what is None and kind in ("greater_than", "greater_than_equal", "less_than_equal", "less_than"):
        what = f"out of range, expected {limits}"
    return f"{path}={value!r}: {what or first['msg']}"


C = TypeVar("C", bound=Config)


def to_dict(config: Config) -> dict[str, Any]:
    """Nested plain dict (JSON-serialisable; tuples become lists)."""
    return config.model_dump(mode="json")


def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Inverse of :func:`to_dict`; unknown keys are an error, missing ones take defaults."""

    def typed(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: typed(item) for key, item in value.items()}
        return tuple(typed(item) for item in value) if isinstance(value, list) else value

    return cls(**typed(data))


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 3}}`` -> ``{"train.epochs": 3}`` (what MLflow logs as params)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def leaf_fields(cls: type[Config], prefix: str = "") -> dict[str, tuple[Any, Knob]]:
    """Every leaf field of a config class by dotted path: ``{path: (type hint, knob)}``."""
    out: dict[str, tuple[Any, Knob]] = {}
    for name, info in cls.model_fields.items():
        section = _section(cls, name)
        if section is not None:
            out.update(leaf_fields(section, f"{prefix}{name}."))
        else:
            found = _knob(cls, name) or Knob(name, info.default, {}, info.annotation)
            out[f"{prefix}{name}"] = (found.hint, found)
    return out


def owner_of(cls: type[Config], path: str) -> type[Config]:
    """The config class that holds the leaf field at ``path``."""
    for name in path.split(".")[:-1]:
        cls = _section(cls, name)
    return cls


def resolve_key(cls: type[Config], key: str) -> str:
    """Map a dotted path or a unique leaf name (``epochs``) to its dotted path."""
    leaves = leaf_fields(cls)
    if key in leaves:
        return key
    matches = [path for path in leaves if path.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"parameter {key!r} is ambiguous; use one of {sorted(matches)}")
    raise ConfigError(f"unknown parameter {key!r}; known: {', '.join(sorted(leaves))}")


def parse_value(cls: type[Config], path: str, text: str) -> Any:
    """Parse a command-line string into the type of the field at ``path``."""
    hint, field = leaf_fields(cls)[path]
    kind, optional = _base_type(hint)
    raw = text.strip()
    if optional and raw.lower() in ("none", "null", ""):
        return None

    def scalar(item_kind: Any, item: str) -> Any:
        words = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False,
                 "off": False}
        try:
            if item_kind is bool:
                return words[item.lower()]
            return item_kind(item) if item_kind in (int, float) else item
        except (KeyError, ValueError):
            raise ConfigError(f"{path}={item!r}: expected {item_kind.__name__}, "
                              f"{_describe_limits(field.metadata)}") from None

    if typing.get_origin(kind) is tuple:
        item_kind = typing.get_args(kind)[0]
        return tuple(scalar(item_kind, part.strip()) for part in raw.split(",") if part.strip())
    return scalar(kind, raw)


def apply_overrides(config: C, overrides: Mapping[str, Any]) -> C:
    """A new config with ``overrides`` (dotted paths or unique leaf names) applied.

    String values are parsed by field type, so CLI input and typed values both work.
    """
    data = to_dict(config)
    leaves = leaf_fields(type(config))
    for key, value in overrides.items():
        path = resolve_key(type(config), key)
        kind, optional = _base_type(leaves[path][0])
        if isinstance(value, str) and (kind is not str or optional):
            value = parse_value(type(config), path, value)
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return from_dict(type(config), data)


# --- sections shared by families ---------------------------------------------------


class DataConfig(Config):
    """Which dataset, where tensorflow-datasets keeps it, and how it is split."""

    dataset: str = knob("mnist_subset", "Dataset name from the registry (`nnzoo list`).")
    data_dir: str | None = knob(None, "tensorflow-datasets data_dir (full profile); None: TFDS default.")
    val_fraction: float = knob(0.1, "Share of the data held out for validation.", minimum=0.0, maximum=0.5)
    test_fraction: float = knob(0.2, "Share held out for the final test.", exclusive_minimum=0.0, maximum=0.5)
    split_seed: int = knob(0, "Seed of the stratified split (fixed so runs compare).", minimum=0)
    max_examples: int | None = knob(None, "Use at most this many examples (smoke runs).", minimum=10)


class TrainConfig(Config):
    """Options of the generic trainer (:mod:`pipelines.train`)."""

    epochs: int = knob(10, "Training epochs (upper bound when early stopping).", minimum=1, maximum=1000)
    batch_size: int = knob(64, "Examples per gradient step.", minimum=1, maximum=4096)
    learning_rate: float = knob(1e-3, "Optimizer step size.", exclusive_minimum=0.0, maximum=1e6)
    optimizer: str = knob("adam", "Optimizer.", choices=("adam", "sgd", "rmsprop"))
    lr_schedule: str = knob("constant", "Learning-rate schedule: constant, or cosine decay to 0 over all epochs.",
                            choices=("constant", "cosine"))
    early_stopping_patience: int = knob(
        5, "Epochs without val-loss improvement before stopping; 0 disables.", minimum=0, maximum=1000
    )
    seed: int = knob(0, "Seed for weights, shuffling and dropout.", minimum=0, maximum=2**31 - 1)
    mixed_precision: bool = knob(False, "Compute in float16 (GPU) with float32 weights.")
    jit_compile: bool = knob(False, "Compile train and predict steps with XLA.")
    distribute: str = knob("none", "Multi-GPU in one worker: none, or mirrored (tf.distribute.MirroredStrategy).",
                           choices=("none", "mirrored"))


class ExperimentConfig(Config):
    """Base of every family's top-level config."""

    profile: str = knob("quick", "Size profile: smoke (tests), quick (CPU), full (tfds, GPU).", choices=PROFILES)
    cache: bool = knob(False, "Reuse a finished run with the same config, model and data instead of training again.")
    promotion_tolerance: float = knob(
        0.0, "A new model becomes champion unless its metric is worse than the champion's by more than this.",
        minimum=0.0, maximum=1.0,
    )
