"""Typed experiment configs: frozen pydantic models whose fields carry their own limits.

Every tunable value is declared once, with :func:`knob` (type, default, range or choices, help).
Pydantic validates it and gives its JSON schema; :class:`ConfigError` names a bad value and what is
allowed in one line. The same declaration parses ``--param KEY=VALUE`` overrides, renders the Airflow
trigger form (:mod:`pipelines.params`) and is flattened into MLflow params. A rule that ties fields
together goes in the class's ``check``.
"""

from __future__ import annotations

import functools
import sys
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from pipelines.errors import BadValueError

PROFILES = ("smoke", "quick", "full")
"""smoke: tiny, for tests (seconds). quick: CPU, bundled data (minutes). full: tfds, GPU, paper-grade numbers."""
GPU_SWITCHES = {"train.mixed_precision": True, "train.jit_compile": True, "train.distribute": "mirrored"}
"""What the full profile turns on for GPU workers (a family turns off what its models cannot
take, saying why): float16 compute, XLA, and data parallelism over the worker's GPUs."""
MOCK_SUFFIX = "-mock"
"""Appended to the profile tag and the registered model names of runs on mock data (``mock_data``)."""


class ConfigError(BadValueError):
    """A config value is unknown, of the wrong type or out of its allowed range."""


class Knob(NamedTuple):
    """One declared field: ``metadata`` holds ``help`` and the limits; ``hint``, its type; ``owner``, its class."""

    name: str
    default: Any
    metadata: Mapping[str, Any]
    hint: Any
    owner: type


def knob(default: Any, help: str, *, minimum: float | None = None, maximum: float | None = None,
         exclusive_minimum: float | None = None, choices: tuple | None = None, form: Mapping | None = None) -> Any:
    """Declare a config field with its limits and help text. ``form``: trigger-form checks for rules the
    class's ``check`` holds (``items``: (fewest, most) list items, ``even``, ``pattern`` + ``rule`` for
    text, ``item``: a list item's regex, ``note``: a rule involving another field), see :mod:`pipelines.params`."""
    limits = dict(minimum=minimum, maximum=maximum, exclusive_minimum=exclusive_minimum, choices=choices, form=form)
    return Field(default, description=help, json_schema_extra={k: v for k, v in limits.items() if v is not None})


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(underlying type, optional?) for a field annotation."""
    optional = type(None) in typing.get_args(hint)
    return (next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint), optional


def _constrained(hint: Any, limits: Mapping[str, Any]) -> Any:
    """``hint`` with the knob's limits as pydantic constraints. A tuple must be non-empty, with each
    item in the limits; a list is accepted for it (its items stay strict)."""
    kind, optional = _base_type(hint)
    is_list = typing.get_origin(kind) is tuple
    bounds = Field(ge=limits.get("minimum"), le=limits.get("maximum"), gt=limits.get("exclusive_minimum"))
    item = typing.get_args(kind)[0] if is_list else kind
    item = Literal[tuple(limits["choices"])] if limits.get("choices") else Annotated[item, bounds]
    if is_list:
        item = Annotated[tuple[item, ...], Field(min_length=1, strict=False)]
    return item | None if optional else item


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
        cls.__knobs__ = dict(getattr(cls, "__knobs__", {}))  # the inherited ones too
        for name, hint in cls.__dict__.get("__annotations__", {}).items():
            info = cls.__dict__.get(name)
            if isinstance(info, FieldInfo) and info.description:
                hint = eval(hint, vars(sys.modules[cls.__module__])) if isinstance(hint, str) else hint  # noqa: S307
                limits = dict(info.json_schema_extra or {})
                setattr(cls, name, Field(info.default, description=info.description))
                cls.__knobs__[name] = Knob(name, info.default, {"help": info.description, **limits}, hint, cls)
                cls.__annotations__[name] = _constrained(hint, limits)

    def __init__(self, **data: Any) -> None:
        # Each section explains its own errors; its parent puts the section's name in front.
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise ConfigError(_explain(type(self), error)) from None

    def model_post_init(self, context: Any) -> None:
        self.check()  # a ConfigError here becomes pydantic's value_error, which _explain passes on

    def check(self) -> None:
        """Rules that tie fields together; raise :class:`ConfigError`."""

    def replace(self, **changes: Any) -> Config:
        """A validated copy with ``changes``."""
        return type(self)(**{**dict(self), **changes})


def _explain(cls: type[Config], error: ValidationError) -> str:
    """The first problem of a validation error as one line: ``name=value: what is allowed``."""
    problems = error.errors()
    first, kind = problems[0], problems[0]["type"]
    # Each section explains its own errors: a location is one field's name (and a list item's index).
    name, value = str(first["loc"][0]) if first["loc"] else "", first["input"]
    if kind == "extra_forbidden":
        unknown = sorted(str(problem["loc"][0]) for problem in problems if problem["type"] == kind)
        return f"unknown config key(s) {unknown} for {cls.__name__}; known: {sorted(cls.model_fields)}"
    if kind == "value_error":  # a class's own check, or a section's error
        return f"{name}.{first['ctx']['error']}" if name else str(first["ctx"]["error"])
    if value is None:
        return f"{name}=None: a value is required"
    if kind == "model_type":
        return f"{name}: expected a {first['ctx']['class_name']} section"
    limits = _describe_limits(cls.__knobs__[name].metadata if name in cls.__knobs__ else {})
    number = f"expected a finite number, {limits}"
    what = {"int_type": f"expected an integer, {limits}", "float_type": number, "finite_number": number,
            "bool_type": "expected true or false", "string_type": f"expected a string, {limits}",
            "literal_error": f"expected {limits}", "too_short": "expected a non-empty list",
            "tuple_type": "expected a non-empty list"}.get(kind)
    out_of_range = f"out of range, expected {limits}" if kind.startswith(("greater_than", "less_than")) else None
    return f"{name}={value!r}: {what or out_of_range or first['msg']}"


C = TypeVar("C", bound=Config)


def to_dict(config: Config) -> dict[str, Any]:
    """Nested plain dict (JSON-serialisable; tuples become lists)."""
    return config.model_dump(mode="json")


def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Inverse of :func:`to_dict`; unknown keys are an error, missing ones take defaults."""
    return cls(**data)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 3}}`` -> ``{"train.epochs": 3}`` (what MLflow logs as params)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value})
    return out


@functools.cache
def leaf_fields(cls: type[Config], prefix: str = "") -> dict[str, tuple[Any, Knob]]:
    """Every leaf field of a config class by dotted path: ``{path: (type hint, knob)}`` (cached: read only)."""
    out: dict[str, tuple[Any, Knob]] = {}
    for name, info in cls.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, Config):
            out.update(leaf_fields(info.annotation, f"{prefix}{name}."))
        else:
            found = cls.__knobs__.get(name) or Knob(name, info.default, {}, info.annotation, cls)
            out[f"{prefix}{name}"] = (found.hint, found)
    return out


def resolve_key(cls: type[Config], key: str) -> str:
    """Map a dotted path or a unique leaf name (``epochs``) to its dotted path."""
    leaves = leaf_fields(cls)
    matches = [key] if key in leaves else [path for path in leaves if path.rsplit(".", 1)[-1] == key]
    if len(matches) > 1:
        raise ConfigError(f"parameter {key!r} is ambiguous; use one of {sorted(matches)}")
    if not matches:
        raise ConfigError(f"unknown parameter {key!r}; known: {', '.join(sorted(leaves))}")
    return matches[0]


def parse_value(cls: type[Config], path: str, text: str) -> Any:
    """Parse a command-line string into the type of the field at ``path``, in pydantic's lax mode
    (``3``, ``1e-4``, ``true``/``yes``/``on``/``1``...); a list is comma-separated."""
    hint, field = leaf_fields(cls)[path]
    kind, optional = _base_type(hint)
    if optional and text.strip().lower() in ("none", "null", ""):
        return None
    is_list = typing.get_origin(kind) is tuple
    item_kind = typing.get_args(kind)[0] if is_list else kind
    try:
        items = [part.strip() for part in text.split(",") if part.strip()]
        return TypeAdapter(kind).validate_python(items if is_list else text.strip(), strict=False)
    except ValidationError as error:
        item, limits = error.errors()[0]["input"], _describe_limits(field.metadata)
        raise ConfigError(f"{path}={item!r}: expected {item_kind.__name__}, {limits}") from None


def apply_overrides(config: C, overrides: Mapping[str, Any]) -> C:
    """A new config with ``overrides`` (dotted paths or unique leaf names) applied; string values
    are parsed by field type, so CLI input and typed values both work."""
    data = to_dict(config)
    for key, value in overrides.items():
        path = resolve_key(type(config), key)
        kind, optional = _base_type(leaf_fields(type(config))[path][0])
        if isinstance(value, str) and (kind is not str or optional):
            value = parse_value(type(config), path, value)
        *parents, leaf = path.split(".")
        functools.reduce(dict.__getitem__, parents, data)[leaf] = value
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
    early_stopping_patience: int = knob(5, "Epochs without val-loss improvement before stopping; 0 disables.",
                                        minimum=0, maximum=1000)
    seed: int = knob(0, "Seed for weights, shuffling and dropout.", minimum=0, maximum=2**31 - 1)
    mixed_precision: bool = knob(False, "Compute in float16 (GPU) with float32 weights.")
    jit_compile: bool = knob(False, "Compile train and predict steps with XLA.")
    steps_per_execution: int = knob(1, "Batches per call into the compiled step.", minimum=1, maximum=1000)
    run_eagerly: bool = knob(False, "Run the training, evaluation and prediction steps eagerly instead of tracing "
                                    "a graph first: faster for the few tiny steps of the smoke profile, much slower "
                                    "for anything bigger. XLA needs the graph: ignored with jit_compile.")
    distribute: str = knob("none", "Multi-GPU in one worker: none, or mirrored (tf.distribute.MirroredStrategy).",
                           choices=("none", "mirrored"))


class ExperimentConfig(Config):
    """Base of every family's top-level config."""

    profile: str = knob("quick", "Size profile: smoke (tests), quick (CPU), full (tfds, GPU).", choices=PROFILES)
    cache: bool = knob(False, "Reuse a finished run with the same config, model and data instead of training again.")
    promotion_tolerance: float = knob(0.0, "A new model becomes champion unless its metric is worse than the "
                                      "champion's by more than this.", minimum=0.0, maximum=1.0)
    mock_data: int = knob(0, "Full profile only: tensorflow-datasets' mock data (the real features and shapes, random "
                          "content, this many examples of each) in place of every tfds dataset, and the family's "
                          "mock counts (few epochs, examples, steps), to test the full path offline. Runs are tagged "
                          "profile full-mock and registered as nnzoo-<family>-<model>-mock, never champion. 0: real "
                          "data.", minimum=0, maximum=10000)

    def check(self) -> None:
        super().check()
        if self.mock_data and self.profile != "full":
            raise ConfigError(f"mock_data={self.mock_data}: mock data stands in for tensorflow-datasets, which only "
                              f"the full profile loads; profile is {self.profile!r}")

    @property
    def profile_label(self) -> str:
        """The profile runs are tagged with: ``full-mock`` for mock data, so no report,
        promotion or model lookup ever takes a mock run for a real full one."""
        return f"{self.profile}{MOCK_SUFFIX}" if self.mock_data else self.profile
