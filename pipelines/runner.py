"""Runs a family's pipeline in-process (``nnzoo run``, the tests): the stage each step
calls, what it receives, and the steps in the order :func:`pipelines.pipeline.walk`
gives the DAG too.

A step ``s`` of family ``f`` calls ``pipelines.stages.<f>.<s>(config, inputs)``, the
kit's ``prepare_data`` and ``finish`` are in :mod:`pipelines.stages.common`; ``inputs``
holds the data reference, ``run_key``, and the output of each step it ``needs`` under
that step's name.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from pipelines.pipeline import FINISH, FINISH_STEP, PREPARE, Step, walk


def stage_function(family: Any, step: str) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]:
    """The stage a step calls: the kit's for ``prepare_data`` and ``finish``, else
    ``pipelines.stages.<family>.<step>``."""
    if step in (PREPARE, FINISH):
        from pipelines.stages import common

        return functools.partial(getattr(common, step), family)
    module = importlib.import_module(f"pipelines.stages.{family.name}")
    if not hasattr(module, step):
        raise ValueError(f"family {family.name!r} declares step {step!r} but {module.__name__} has no such function")
    return getattr(module, step)


def step_inputs(step: Step, data: dict[str, Any] | None, run_key: str | None, needs: dict[str, Any],
                item: Any = None, job: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a step's stage receives; the DAG's tasks and the in-process run build it alike."""
    inputs = {**(data or {}), "run_key": run_key, **needs, **(job or {})}
    if step.over:
        inputs[step.item] = item
    return inputs


def run_pipeline(family: Any, config: dict[str, Any], run_key: str | None = None) -> dict[str, Any]:
    """Every step in-process, in declaration order; returns ``{step name: output}``.

    A failure ends the parent run (if any) FAILED with the reason, then raises
    the error, which :func:`failed_at` marks with the step and the steps that finished.
    """
    finished: list[str] = []
    state: dict[str, Any] = {"step": PREPARE, "data": None}

    def call(step: Step, data: Any, needs: dict[str, Any], item: Any = None, index: int = 0,
             job: dict[str, Any] | None = None) -> Any:
        if step.name != state["step"]:
            finished.append(state["step"])
            state["step"] = step.name
        inputs = {"run_key": run_key} if step.name == PREPARE else step_inputs(step, data, run_key, needs, item, job)
        output = stage_function(family, step.name)(config, inputs)
        if step.name == PREPARE:
            state["data"] = output
        return output

    def call_mapped(step: Step, data: Any, needs: dict[str, Any], jobs: list[dict[str, Any]]) -> list[Any]:
        return [call(step, data, needs, job=job) for job in jobs]

    try:
        return walk(family.pipeline, call, call_mapped)
    except BaseException as error:
        failed, done = state["step"], list(finished)
        if family.pipeline.parent_run and state["data"] is not None and failed != FINISH:
            call(FINISH_STEP, state["data"], {}, job={"reason": f"{type(error).__name__}: {error}"})
        if isinstance(error, Exception):  # not KeyboardInterrupt or SystemExit
            failed_at(error, failed, done)
        raise


def failed_at(error: Exception, step: str, finished: list[str]) -> Exception:
    """Mark ``error`` with the step that raised it (``error.nnzoo_step``) and the steps
    that finished before it (``error.nnzoo_finished``): ``nnzoo run`` reports both."""
    if getattr(error, "nnzoo_step", None) is None:
        error.nnzoo_step, error.nnzoo_finished = step, finished  # type: ignore[attr-defined]
    return error
