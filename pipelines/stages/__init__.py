"""Stages: one plain function per DAG step, ``stage(config: dict, inputs: dict) -> dict``.

``config`` is a family's config as a nested dict (:func:`pipelines.config.to_dict`);
``inputs`` holds references produced by earlier stages (URIs, run ids). What a stage
returns is small and JSON-serialisable, so Airflow can pass it through XCom.

Each family has a module here named after it, with its stages and a ``run`` function
registered with :func:`register_runner` that chains them in-process (the CLI's
``nnzoo run FAMILY``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

Runner = Callable[[dict[str, Any]], dict[str, Any]]
_RUNNERS: dict[str, Runner] = {}


def register_runner(family: str) -> Callable[[Runner], Runner]:
    def decorate(function: Runner) -> Runner:
        _RUNNERS[family] = function
        return function

    return decorate


def get_runner(family: str) -> Runner:
    """The in-process runner of ``family`` (imports ``pipelines.stages.<family>``)."""
    if family not in _RUNNERS:
        try:
            importlib.import_module(f"pipelines.stages.{family}")
        except ModuleNotFoundError as error:
            if error.name != f"pipelines.stages.{family}":
                raise
    if family not in _RUNNERS:
        raise ValueError(f"family {family!r} has no stages module registering a runner")
    return _RUNNERS[family]
