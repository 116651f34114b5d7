"""Fixtures of the stage tests."""

from tests.pipelines.stages.full_mock import full_mock_fits  # noqa: F401 (a fixture, used by name)
