"""Name -> builder lookup, filled by the ``@register_model`` decorator.

Builder modules are found by walking this package, so adding ``models/foo.py`` with a
decorated builder is all it takes to make ``build_model("foo", ...)`` work.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

_BUILDERS: dict[str, Callable[..., Any]] = {}


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"model {name!r} registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorate


def _discover() -> None:
    import models as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "registry":
            importlib.import_module(f"models.{module.name}")


def model_names() -> list[str]:
    _discover()
    return sorted(_BUILDERS)


def get_builder(name: str) -> Callable[..., Any]:
    _discover()
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name]


def build_model(name: str, /, **kwargs: Any) -> Any:
    """Build the registered model ``name`` with the builder's keyword arguments."""
    return get_builder(name)(**kwargs)
