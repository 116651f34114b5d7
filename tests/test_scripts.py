"""The repository's own scripts: the test command installs only what the chosen tests need."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("args, installs", [(["-m", "not service"], False), ([], True)],
                         ids=["not-service", "all"])
def test_test_command_checks_the_browser_packages_only_when_service_tests_run(tmp_path, args, installs):
    # scripts/system_deps.sh starts by asking dpkg-query; a stub on PATH shows whether it ran.
    stubs = tmp_path / "bin"
    stubs.mkdir()
    marker = tmp_path / "asked"
    (stubs / "dpkg-query").write_text(f"#!/bin/sh\ntouch {marker}\necho 'install ok installed'\n")
    (stubs / "dpkg-query").chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "scripts/test.sh", *args, "--version"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert marker.exists() == installs
