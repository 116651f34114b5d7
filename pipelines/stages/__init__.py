"""Stages: one plain function per pipeline step, ``stage(config: dict, inputs: dict) -> dict``.

``config`` is a family's config as a nested dict (:func:`pipelines.config.to_dict`);
``inputs`` holds references produced by earlier steps (URIs, run ids). What a stage
returns is small and JSON-serialisable, so Airflow can pass it through XCom.

Each family has a module (or package) here named after it with one function per step
of its pipeline declaration (:mod:`pipelines.pipeline`); :mod:`.common` is the kit they
share: data preparation, parent runs, the training skeleton, registration.
"""
