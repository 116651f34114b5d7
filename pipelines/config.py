"""Typed experiment configs: frozen dataclasses whose fields carry their own limits.

Every tunable value is declared once, with :func:`knob`, together with its allowed
range or choices and a one-line help text. The same declaration validates configs,
parses ``--param KEY=VALUE`` overrides, renders the Airflow trigger form
(:mod:`pipelines.params`) and is flattened into MLflow params.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from pipelines.errors import BadValueError

PROFILES = ("smoke", "quick", "full")
"""smoke: tiny, for tests (seconds). quick: CPU, bundled data (minutes).
full: tensorflow-datasets, GPU, paper-grade numbers."""


class ConfigError(BadValueError):
    """A config value is unknown, of the wrong type or out of its allowed range."""


def knob(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    choices: tuple | None = None,
) -> Any:
    """Declare a config field with its validation rules and help text."""
    meta = {"help": help, "minimum": minimum, "maximum": maximum,
            "exclusive_minimum": exclusive_minimum, "choices": choices}
    return dataclasses.field(default=default, metadata=meta)


def _describe_limits(meta: Mapping[str, Any]) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    low = meta.get("minimum")
    ex_low = meta.get("exclusive_minimum")
    high = meta.get("maximum")
    parts = []
    if low is not None:
        parts.append(f">= {low}")
    if ex_low is not None:
        parts.append(f"> {ex_low}")
    if high is not None:
        parts.append(f"<= {high}")
    return " and ".join(parts) or "any value"


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(underlying type, optional?) for a field annotation."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _check_scalar(path: str, value: Any, kind: Any, meta: Mapping[str, Any]) -> None:
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}={value!r}: expected true or false")
        return
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}={value!r}: expected an integer, {_describe_limits(meta)}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{path}={value!r}: expected a finite number, {_describe_limits(meta)}")
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}={value!r}: expected a string, {_describe_limits(meta)}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{path}={value!r}: expected {_describe_limits(meta)}")
    low, ex_low, high = meta.get("minimum"), meta.get("exclusive_minimum"), meta.get("maximum")
    if (low is not None and value < low) or (ex_low is not None and value <= ex_low) or (
        high is not None and value > high
    ):
        raise ConfigError(f"{path}={value!r}: out of range, expected {_describe_limits(meta)}")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every config: validates each field against its :func:`knob` rules."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kind, optional = _base_type(hints[field.name])
            if dataclasses.is_dataclass(kind):
                if not isinstance(value, kind):
                    raise ConfigError(f"{field.name}: expected a {kind.__name__} section")
                continue
            if value is None:
                if not optional:
                    raise ConfigError(f"{field.name}=None: a value is required")
                continue
            if typing.get_origin(kind) is tuple:
                (item_kind, *_rest) = typing.get_args(kind)
                if not isinstance(value, tuple) or not value:
                    raise ConfigError(f"{field.name}={value!r}: expected a non-empty list")
                for item in value:
                    _check_scalar(field.name, item, item_kind, field.metadata)
            else:
                _check_scalar(field.name, value, kind, field.metadata)


C = TypeVar("C", bound=Config)


def to_dict(config: Config) -> dict[str, Any]:
    """Nested plain dict (JSON-serialisable; tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    out: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        out[field.name] = to_dict(value) if isinstance(value, Config) else plain(value)
    return out


def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Inverse of :func:`to_dict`; unknown keys are an error, missing ones take defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kind, _ = _base_type(hints[name])
        if dataclasses.is_dataclass(kind):
            try:
                kwargs[name] = from_dict(kind, value)
            except ConfigError as error:
                # Field errors start with the field name ("epochs=0: ..."); prefix the section.
                text = str(error)
                raise ConfigError(f"{name}.{text}" if not text.startswith("unknown") else f"{name}: {text}") from None
        elif typing.get_origin(kind) is tuple and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


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


def leaf_fields(cls: type[Config], prefix: str = "") -> dict[str, tuple[Any, dataclasses.Field]]:
    """Every leaf field of a config class by dotted path: ``{path: (type hint, field)}``."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[Any, dataclasses.Field]] = {}
    for field in dataclasses.fields(cls):
        kind, _ = _base_type(hints[field.name])
        if dataclasses.is_dataclass(kind):
            out.update(leaf_fields(kind, f"{prefix}{field.name}."))
        else:
            out[f"{prefix}{field.name}"] = (hints[field.name], field)
    return out


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
        try:
            if item_kind is bool:
                lowered = item.lower()
                if lowered in ("true", "1", "yes", "on"):
                    return True
                if lowered in ("false", "0", "no", "off"):
                    return False
                raise ValueError(item)
            if item_kind is int:
                return int(item)
            if item_kind is float:
                return float(item)
        except ValueError:
            raise ConfigError(
                f"{path}={item!r}: expected {item_kind.__name__}, {_describe_limits(field.metadata)}"
            ) from None
        return item

    if typing.get_origin(kind) is tuple:
        item_kind = typing.get_args(kind)[0]
        return tuple(scalar(item_kind, part.strip()) for part in raw.split(",") if part.strip())
    return scalar(kind, raw)


def apply_overrides(config: C, overrides: Mapping[str, Any]) -> C:
    """A new config with ``overrides`` (dotted paths or unique leaf names) applied.

    String values are parsed by field type, so CLI input and typed values both work.
    """
    data = to_dict(config)
    for key, value in overrides.items():
        path = resolve_key(type(config), key)
        if isinstance(value, str):
            hint, _ = leaf_fields(type(config))[path]
            kind, optional = _base_type(hint)
            if kind is not str or optional:
                value = parse_value(type(config), path, value)
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return from_dict(type(config), data)


# --- sections shared by families ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataConfig(Config):
    """Which dataset, where tensorflow-datasets keeps it, and how it is split."""

    dataset: str = knob("mnist_subset", "Dataset name from the registry (`nnzoo list`).")
    data_dir: str | None = knob(None, "tensorflow-datasets data_dir (full profile); None: TFDS default.")
    val_fraction: float = knob(0.1, "Share of the data held out for validation.", minimum=0.0, maximum=0.5)
    test_fraction: float = knob(0.2, "Share held out for the final test.", exclusive_minimum=0.0, maximum=0.5)
    split_seed: int = knob(0, "Seed of the stratified split (fixed so runs compare).", minimum=0)
    max_examples: int | None = knob(None, "Use at most this many examples (smoke runs).", minimum=10)


@dataclasses.dataclass(frozen=True)
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


@dataclasses.dataclass(frozen=True)
class ExperimentConfig(Config):
    """Base of every family's top-level config."""

    profile: str = knob("quick", "Size profile: smoke (tests), quick (CPU), full (tfds, GPU).", choices=PROFILES)
    cache: bool = knob(False, "Reuse a finished run with the same config, model and data instead of training again.")
    promotion_tolerance: float = knob(
        0.0, "A new model becomes champion unless its metric is worse than the champion's by more than this.",
        minimum=0.0, maximum=1.0,
    )
