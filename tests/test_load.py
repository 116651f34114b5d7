"""``make load`` at CI size: bench/load.py with 4 concurrent smoke runs of
``zoo_classifiers`` on a distributed stack of its own (two Celery workers, a Redis of its
own, PostgreSQL, an MLflow server; two trainings at a time), the worker a training runs on
SIGKILLed during it.
Every run must succeed, the killed training retried into the MLflow run it had
started, no run or registered version doubled, and ``champion`` on the best version.
The full size (16 runs, worker kill, MLflow and Redis restarts) is in docs/distributed.md."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.service, pytest.mark.slow]


def test_four_concurrent_runs_lose_nothing_and_double_nothing_when_a_worker_is_killed(tmp_path):
    result = subprocess.run([sys.executable, "bench/load.py", "--runs", "4", "--families", "classifiers",
                             "--faults", "worker-kill", "--training-slots", "2", "--heartbeat-timeout", "20",
                             "--retry-delay", "3", "--timeout", "900",
                             "--out", str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    output = result.stdout + result.stderr
    assert (tmp_path / "load.json").exists(), output[-6000:]
    report = json.loads((tmp_path / "load.json").read_text())
    assert result.returncode == 0 and not report["problems"], output[-6000:]
    assert report["succeeded"] == 4
    assert report["lost"] == {"runs_not_succeeded": 0, "task_instances_not_succeeded": 0}
    assert report["duplicates"] == {"mlflow_runs": 0, "versions": 0}
    assert set(report["versions_per_run"].values()) == {2}  # mlp and cnn of every run
    [fault] = report["faults"]
    assert fault["injected"] and fault["during"]["task"].startswith("train_"), fault
    # The killed training failed with its worker and its retry finished it.
    assert fault["task_outcome"] == {"state": "success", "tries": 2}, fault
    assert report["retries"] >= 1 and report["failed_tries"] >= 1
    assert report["champions"] and all(check["ok"] for check in report["champions"]), report["champions"]
    assert "| DAG runs succeeded | 4 / 4 |" in (tmp_path / "load.md").read_text()
