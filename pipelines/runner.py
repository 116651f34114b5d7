"""Runs a family's pipeline in-process (``nnzoo run``, the tests): the stage each step
calls, what it receives, and the steps in the order :func:`pipelines.pipeline.walk`
gives the DAG too.

A step ``s`` of family ``f`` calls ``pipelines.stages.<f>.<s>(config, inputs)``, the
kit's ``prepare_data`` and ``finish`` are in :mod:`pipelines.kit`; ``inputs``
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
        from pipelines import kit

        function = functools.partial(getattr(kit, step), family)
    else:
        module = importlib.import_module(f"pipelines.stages.{family.name}")
        if not hasattr(module, step):
            raise ValueError(f"family {family.name!r} declares step {step!r} but {module.__name__} has no such "
                             "function")
        function = getattr(module, step)

    @functools.wraps(function)
    def stage(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        examples = (config or {}).get("mock_data") or 0
        if not examples:
            return function(config, inputs)
        from pipelines.data.registry import tfds_mock

        with tfds_mock(examples):  # the whole step: loading and reading the data
            return function(config, inputs)

    return stage


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


def usable(trained_on: str | None, wanted: str) -> bool:
    """A model trained on profile ``trained_on`` serves a run of profile ``wanted`` when
    that profile is at least as large (smoke < quick < full)."""
    from pipelines.config import PROFILES

    return trained_on in PROFILES and PROFILES.index(trained_on) >= PROFILES.index(wanted)


def described(version: Any, trained_here: bool) -> dict[str, Any]:
    """What :func:`model_from` returns for a registered ``version``."""
    from pipelines import tracking

    profile = tracking.get_run(version.run_id).data.tags.get(tracking.TAG_PROFILE) if version.run_id else None
    return {"name": version.name, "version": str(version.version), "run_id": version.run_id, "profile": profile,
            "model_uri": f"models:/{version.name}/{version.version}", "trained_here": trained_here}


def model_from(family: Any, typed: Any, inputs: dict[str, Any], name: str) -> dict[str, Any]:
    """The model ``family`` declares it takes from another family under ``name``
    (``Family.uses``): the version its knob pins; else that family's champion when it
    was trained on this run's profile or a larger one; else that family's pipeline runs
    here, its runs keyed under this run's key (``<run key>/<name>``), and the version
    it registered is used. Returns ``name``, ``version``, ``run_id``, ``profile``,
    ``model_uri`` and ``trained_here``, which the caller records."""
    from pipelines import tracking
    from pipelines.config import to_dict
    from pipelines.errors import BadValueError
    from pipelines.families import get_family

    use = next(use for use in family.uses if use.name == name)
    if typed.mock_data:
        return _mock_model_from(use, typed, inputs, name)
    wanted = typed
    for part in use.version.split("."):
        wanted = getattr(wanted, part)

    if wanted != tracking.CHAMPION:
        pinned = tracking.model_version(use.registered, wanted)
        if pinned is None:
            raise BadValueError(f"{use.version.rsplit('.', 1)[-1]}={wanted}: {use.registered} has no version {wanted} "
                                f"in the registry ({tracking.configure()}); use 'champion' or an existing version")
        return described(pinned, False)
    champion = tracking.model_version(use.registered, tracking.CHAMPION)
    if champion is not None:
        found = described(champion, False)
        if usable(found["profile"], typed.profile):
            return found
        print(f"[nnzoo] {use.registered} champion v{found['version']} was trained on the {found['profile']} profile, "
              f"smaller than {typed.profile}: running {use.family} ({typed.profile}) first", flush=True)
    else:
        print(f"[nnzoo] {use.registered} has no champion yet: running {use.family} ({typed.profile}) first", flush=True)
    other = get_family(use.family)
    base = inputs.get("run_key")
    key = f"{base}/{name}" if base else None
    run_pipeline(other, to_dict(other.config(typed.profile)), run_key=key)
    made = tracking.versions_of_run_key(use.registered, key) if key else []
    version = made[-1] if made else tracking.model_version(use.registered, tracking.CHAMPION)
    if version is None:
        raise RuntimeError(f"{use.family}'s pipeline ran but registered no {use.registered}")
    return described(version, True)


def _mock_model_from(use: Any, typed: Any, inputs: dict[str, Any], name: str) -> dict[str, Any]:
    """On mock data a family takes the other family's newest mock version (mock versions
    have no champion), or runs that family's pipeline on mock data first."""
    from pipelines import tracking
    from pipelines.config import to_dict
    from pipelines.families import get_family, registered_name

    registered = registered_name(use.family, use.model, mock=True)

    def newest() -> Any | None:
        found = tracking.client().search_model_versions(f"name = '{registered}'", order_by=["version_number DESC"],
                                                        max_results=1)
        return found[0] if found else None

    version = newest()
    if version is not None:
        return described(version, False)
    print(f"[nnzoo] {registered} has no version yet: running {use.family} (full, mock data) first", flush=True)
    other = get_family(use.family)
    base = inputs.get("run_key")
    run_pipeline(other, to_dict(other.config(typed.profile, {"mock_data": typed.mock_data})),
                 run_key=f"{base}/{name}" if base else None)
    version = newest()
    if version is None:
        raise RuntimeError(f"{use.family}'s pipeline ran but registered no {registered}")
    return described(version, True)
