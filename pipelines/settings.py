"""Where nnzoo keeps its state: one root folder, overridable by environment.

Everything a run produces (prepared datasets, the local MLflow store, the Airflow
home of the embedded mode, checkpoints) lives under ``NNZOO_HOME``, which defaults
to ``var/`` at the repository root. Distributed deployments point the individual
locations elsewhere with the variables below.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def home() -> Path:
    """Root folder for everything a run writes (``NNZOO_HOME``, default ``<repo>/var``)."""
    return Path(os.environ.get("NNZOO_HOME", REPO_ROOT / "var")).resolve()


def data_dir() -> Path:
    """Prepared datasets (``NNZOO_DATA_DIR``, default ``$NNZOO_HOME/data``)."""
    return Path(os.environ.get("NNZOO_DATA_DIR", home() / "data")).resolve()


def work_dir() -> Path:
    """Checkpoints and scratch space of training runs (``$NNZOO_HOME/work``)."""
    return Path(os.environ.get("NNZOO_WORK_DIR", home() / "work")).resolve()


def mlflow_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store under ``$NNZOO_HOME/mlflow``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{home() / 'mlflow' / 'mlflow.db'}"


def seconds_setting(variable: str, default: float) -> float:
    """A duration in seconds from the environment; a ValueError naming ``variable`` for
    anything but a number >= 0."""
    value = os.environ.get(variable, str(default))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ValueError(f"{variable}={value!r}: expected a number of seconds >= 0")
    return seconds


def mlflow_wait_seconds() -> float:
    """How long a task waits for an unreachable MLflow tracking server before it fails
    (``NNZOO_MLFLOW_WAIT_S``, default 30: long enough for the server to restart)."""
    return seconds_setting("NNZOO_MLFLOW_WAIT_S", 30)


def mlflow_artifact_root() -> str | None:
    """Artifact root for new experiments: ``NNZOO_ARTIFACT_ROOT``, or a local folder
    beside a file-based store; ``None`` lets a tracking server choose."""
    root = os.environ.get("NNZOO_ARTIFACT_ROOT")
    if root:
        return root
    if mlflow_tracking_uri().startswith(("sqlite:", "file:")) or "://" not in mlflow_tracking_uri():
        return (home() / "mlflow" / "artifacts").as_uri()
    return None


def ensure_writable_dir(path: Path, what: str, variable: str) -> Path:
    """Create ``path`` if needed and prove it is writable, or say which setting to change."""
    from pipelines.errors import StoreUnavailableError

    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".nnzoo-write-test-", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise StoreUnavailableError(
            f"{what} {path} is not writable ({error.strerror or error}); set {variable} to a writable folder"
        ) from error
    return path


def mlflow_artifact_root_for(experiment: str) -> str | None:
    """Artifact location of a new experiment, or None to let the server decide."""
    root = mlflow_artifact_root()
    return None if root is None else f"{root.rstrip('/')}/{experiment}"


# --- the MLflow UI (links from Airflow tasks and from `make ui`) ----------------------

MLFLOW_UI_VARIABLE = "NNZOO_MLFLOW_UI_URL"


def mlflow_ui_url(env: Mapping[str, str] | None = None) -> str | None:
    """Base URL of the MLflow UI: ``NNZOO_MLFLOW_UI_URL``, else the tracking server's
    when ``MLFLOW_TRACKING_URI`` is one (a file or SQLite store has no UI of its own)."""
    env = os.environ if env is None else env
    url = (env.get(MLFLOW_UI_VARIABLE) or "").strip()
    if not url:
        tracking = (env.get("MLFLOW_TRACKING_URI") or "").strip()
        url = tracking if tracking.startswith(("http://", "https://")) else ""
    return url.rstrip("/") or None


ML_VIEW = "workflowType=machine_learning"
"""MLflow 3.17's UI shows every experiment in its GenAI view unless the URL (or the
user's sidebar switch, remembered by the browser) asks for the model-training view;
the experiment's ``mlflow.experimentKind`` tag does not change that in this version.
Links nnzoo gives out therefore ask for it."""


def mlflow_run_url(experiment_id: str, run_id: str, env: Mapping[str, str] | None = None) -> str | None:
    base = mlflow_ui_url(env)
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{ML_VIEW}" if base else None


def mlflow_experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's runs in MLflow's model-training view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{ML_VIEW}"
