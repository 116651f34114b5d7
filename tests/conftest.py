"""Shared fixtures: isolated nnzoo/MLflow stores, subprocess environments, helpers.

Every test that touches MLflow or data gets its own ``NNZOO_HOME`` and SQLite MLflow
store under pytest's tmp dir; nothing is written to the repository's ``var/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# Set before anything imports TensorFlow or Airflow (test modules are imported after this file).
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
for _name in ("NNZOO_DATA_DIR", "NNZOO_WORK_DIR", "NNZOO_ARTIFACT_ROOT", "NNZOO_TRAINING_QUEUE",
              "NNZOO_TRAINING_POOL"):
    os.environ.pop(_name, None)
# Safety net: a test that forgets its own store still never writes to <repo>/var or ~/airflow.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="nnzoo-tests-"))
os.environ["NNZOO_HOME"] = str(_SESSION_TMP / "home")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_TMP / 'home' / 'mlflow.db'}"
os.environ["AIRFLOW_HOME"] = str(_SESSION_TMP / "airflow")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


# --- order and distribution -------------------------------------------------------------------
# tests/service shares one running stack (tests/service/conftest.py), started by its first
# test and stopped after its last: its tests stay together, in one process.
SERVICE_SCOPE = "tests/service"


def _cost_rank(scope: str) -> int:
    """Longest work units first (0), so that the two workers of scripts/test.sh end
    together instead of one finishing a long file alone: the service stack, then the
    claim tests on quick data, then the files that run whole pipelines; the rest after,
    most tests first. Only the order depends on this."""
    if scope == SERVICE_SCOPE:
        return 0
    if scope.endswith("_claims.py"):
        return 1
    if scope in ("tests/test_end_to_end.py", "tests/test_load.py") or scope.startswith("tests/pipelines/stages/"):
        return 2
    return 3


def scope_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return SERVICE_SCOPE if path.startswith(SERVICE_SCOPE + "/") else path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the service tests together (at the place of the first one) in a serial run."""
    service = [item for item in items if scope_of(item.nodeid) == SERVICE_SCOPE]
    if service:
        first = items.index(service[0])
        rest = [item for item in items if scope_of(item.nodeid) != SERVICE_SCOPE]
        items[:] = rest[:first] + service + rest[first:]


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With ``--dist loadfile`` (scripts/test.sh): one work unit per file, but one for all
    of tests/service, and the longest units (``_cost_rank``) handed out first."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LongestFirst(LoadFileScheduling):
        _ordered = False

        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

        def _assign_work_unit(self, node) -> None:
            if not self._ordered:
                self._ordered = True
                units = sorted(self.workqueue.items(), key=lambda unit: _cost_rank(unit[0]))
                self.workqueue.clear()
                self.workqueue.update(units)
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


@dataclasses.dataclass(frozen=True)
class Store:
    """An isolated nnzoo home with its SQLite MLflow store."""

    home: Path
    uri: str

    def activate(self, monkeypatch: pytest.MonkeyPatch) -> Store:
        monkeypatch.setenv("NNZOO_HOME", str(self.home))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", self.uri)
        return self

    def client(self):
        """A client on this store only. The registry URI is explicit: MlflowClient would
        otherwise use the process-wide registry URI, which an earlier test may have set."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess that writes into this store."""
        return {**os.environ, "NNZOO_HOME": str(self.home), "MLFLOW_TRACKING_URI": self.uri,
                "AIRFLOW_HOME": str(self.home / "airflow"), "TF_CPP_MIN_LOG_LEVEL": "2",
                "PYTHONPATH": str(REPO_ROOT), **extra}


_TEMPLATE_DB: Path | None = None


def _template_db() -> Path:
    """An MLflow SQLite database with every table created, made once per test process:
    MLflow creates a new store's tables by running its migrations, a second or two each
    time, and the suite makes a store per test."""
    global _TEMPLATE_DB
    if _TEMPLATE_DB is None:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        path = Path(tempfile.mkdtemp(prefix="template-", dir=_SESSION_TMP)) / "mlflow.db"
        # Runs the migrations; the default experiment keeps its artifacts beside the template.
        SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "artifacts"))
        _TEMPLATE_DB = path
    return _TEMPLATE_DB


def new_store(root: Path) -> Store:
    """A store under ``root``: a copy of the migrated template database (what MLflow
    would create on first use, without the wait) and an empty nnzoo home."""
    root.mkdir(parents=True, exist_ok=True)
    database = root / "mlflow.db"
    if not database.exists():
        shutil.copyfile(_template_db(), database)
    return Store(home=root / "home", uri=f"sqlite:///{database}")


@contextlib.contextmanager
def prepared_in(store: Store, family, config: dict):
    """``store`` active and the family's ``prepare_data`` run (no run key): the inputs
    its steps get, for a claims fixture that calls the stages one by one."""
    from pipelines import kit

    with pytest.MonkeyPatch.context() as patch:
        store.activate(patch)
        yield {**kit.prepare_data(family, config, {"run_key": None}), "run_key": None}


def smoke_run(family, root: Path, run_key: str) -> dict:
    """A family's declared pipeline once, smoke profile, in-process with a DAG-style run
    key, into a fresh store under ``root``: ``{"store", "out" (step -> output), "parent"}``."""
    from pipelines.config import to_dict
    from pipelines.runner import run_pipeline

    shared = new_store(root)
    with pytest.MonkeyPatch.context() as patch:
        shared.activate(patch)
        out = run_pipeline(family, to_dict(family.config("smoke")), run_key=run_key)
    return {"store": shared, "out": out, "parent": out["prepare_data"].get("parent_run_id")}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A fresh store, active for this test (NNZOO_HOME and MLFLOW_TRACKING_URI set)."""
    return new_store(tmp_path / "store").activate(monkeypatch)


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this venv, from the repository root."""
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env or {**os.environ},
                          capture_output=True, text=True, timeout=timeout)
