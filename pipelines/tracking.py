"""The only module that talks to MLflow.

Runs, params, metrics, artifacts, model logging and the registry go through here, so
the rest of the code never depends on MLflow's API directly. Every run started with
:func:`run` ends FINISHED, or FAILED with the reason in the ``nnzoo.failure_reason``
tag and a traceback artifact, even when the code inside raises.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import io
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from pipelines import settings
from pipelines.config import PROFILES


def tag(name: str) -> str:
    """The tag a family's label is stored under: ``task`` -> ``nnzoo.task`` (a dotted name
    such as ``mlflow.note.content`` stays as it is)."""
    return name if "." in name else f"nnzoo.{name}"


TAG_FAMILY = "nnzoo.family"
TAG_MODEL = "nnzoo.model"
TAG_PROFILE = "nnzoo.profile"
TAG_RUN_KEY = "nnzoo.run_key"
TAG_FAILURE = "nnzoo.failure_reason"
TAG_STAGE = "nnzoo.stage"
TAG_DATASET = "nnzoo.dataset"
CHAMPION = "champion"
CHALLENGER = "challenger"
# MLflow's own tags: the experiment's kind (its UI opens "custom_model_development"
# experiments in the model-training view), its description, a run's source and user.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
TAG_NOTE = "mlflow.note.content"
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"
TAG_USER = "mlflow.user"

_origin: dict[str, str] = {}

_configured_uri: str | None = None


def configure() -> str:
    """Point MLflow at the configured store and create it if needed; returns the URI.

    A fresh SQLite store is created under an exclusive file lock: several processes
    (parallel Airflow tasks) opening it at once would otherwise race on creating its
    tables ("table experiments already exists").
    """
    global _configured_uri
    uri = settings.mlflow_tracking_uri()
    if _configured_uri != uri:
        _check_store(uri)
        if uri.startswith("sqlite:///"):
            _initialise_sqlite_store(uri)
        _configured_uri = uri
    # Download progress bars would garble task logs and the CLI's progress lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # The fluent API (model logging and loading) reads these process-wide settings.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _check_store(uri: str) -> None:
    """Fail within ``NNZOO_MLFLOW_WAIT_S`` seconds (default 30: a tracking server that
    restarts comes back within it), naming the setting, instead of after minutes of
    HTTP retries or halfway through a run when the first artifact is written."""
    from pipelines.errors import StoreUnavailableError

    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        deadline, delay = time.monotonic() + settings.mlflow_wait_seconds(), 1.0
        while True:
            try:
                urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10).close()
                break
            except urllib.error.HTTPError:
                break  # it answers (a proxy or auth may refuse /health): reachable
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", error)
                if time.monotonic() + delay > deadline:
                    raise StoreUnavailableError(
                        f"MLflow tracking server {uri} is not reachable ({reason}); "
                        "start it or fix MLFLOW_TRACKING_URI") from error
                print(f"[nnzoo] MLflow tracking server {uri} is not reachable ({reason}); trying again in "
                      f"{delay:.0f}s", flush=True)
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
    elif uri.startswith("sqlite:///"):
        settings.ensure_writable_dir(Path(uri.removeprefix("sqlite:///")).parent, "MLflow store folder",
                                     "MLFLOW_TRACKING_URI or NNZOO_HOME")
    root = settings.mlflow_artifact_root()
    if root and root.startswith("file://"):
        settings.ensure_writable_dir(Path(root.removeprefix("file://")), "MLflow artifact folder",
                                     "NNZOO_ARTIFACT_ROOT or NNZOO_HOME")


def _initialise_sqlite_store(uri: str) -> None:
    import fcntl

    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            # The first client on a new file runs the schema migrations.
            MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def client() -> MlflowClient:
    uri = configure()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def set_origin(tags: Mapping[str, Any] | None) -> None:
    """Who makes the runs of this process: an Airflow task sets its DAG, run, task, try
    and URL (``airflow.*``) plus ``mlflow.source.*``/``mlflow.user``; every run created or
    resumed and every model version registered afterwards carries them. ``None``: back
    to the command line's origin."""
    _origin.clear()
    _origin.update({key: str(value) for key, value in (tags or {}).items()})


def origin_tags() -> dict[str, str]:
    """The tags of :func:`set_origin`, or those of a local command (``LOCAL``, its
    command line, the OS user)."""
    if _origin:
        return dict(_origin)
    command = " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:4]]).strip()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {TAG_SOURCE_TYPE: "LOCAL", TAG_SOURCE_NAME: command[:500], TAG_USER: user}


def ensure_experiment(name: str, description: str | None = None) -> str:
    """Get or create the experiment (tagged for MLflow's model-training view, with
    ``description`` as its note); safe when several processes race to create it."""
    mlflow_client = client()
    for attempt in range(5):
        found = mlflow_client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                mlflow_client.restore_experiment(found.experiment_id)
            _describe_experiment(found, description)
            return found.experiment_id
        try:
            created = mlflow_client.create_experiment(name, artifact_location=settings.mlflow_artifact_root_for(name),
                                                      tags=_experiment_tags(description))
            return created
        except MlflowException:
            # Another process created it (or the store's tables) first; look again.
            time.sleep(0.2 * (attempt + 1))
        except Exception as error:  # sqlalchemy IntegrityError / OperationalError on a fresh store
            if "already exists" not in str(error) and "locked" not in str(error):
                raise
            time.sleep(0.2 * (attempt + 1))
    found = mlflow_client.get_experiment_by_name(name)
    if found is None:
        raise RuntimeError(f"could not create MLflow experiment {name!r} at {configure()}")
    return found.experiment_id


def _experiment_tags(description: str | None) -> dict[str, str]:
    tags = {TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}
    if description:
        tags[TAG_NOTE] = description
    return tags


def _describe_experiment(experiment: Any, description: str | None) -> None:
    """Add what an experiment made by an older release (or by hand) lacks; a kind or
    description someone set in the UI is left as it is."""
    for key, value in _experiment_tags(description).items():
        if key not in experiment.tags:
            client().set_experiment_tag(experiment.experiment_id, key, value)


@dataclasses.dataclass
class RunHandle:
    run_id: str
    experiment_id: str
    resumed: bool = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        log_params(self.run_id, params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        log_metrics(self.run_id, metrics, step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        set_tags(self.run_id, tags)


def find_runs_by_tag(experiment_id: str, tag: str, value: str, status: str | None = None) -> list[Any]:
    """Runs carrying ``tag = value`` (optionally only with ``status``), newest first."""
    query = f"tags.`{tag}` = '{value}'"
    if status:
        query += f" and attributes.status = '{status}'"
    return client().search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time DESC"])


def max_logged_step(run_id: str, key: str) -> int:
    """The highest step of metric ``key`` on the run (0 if never logged)."""
    return max((m.step for m in client().get_metric_history(run_id, key)), default=0)


def find_run(experiment_id: str, run_key: str) -> Any | None:
    """The newest run carrying ``nnzoo.run_key = run_key``, or None."""
    runs = find_runs_by_tag(experiment_id, TAG_RUN_KEY, run_key)
    return runs[0] if runs else None


@contextlib.contextmanager
def run(
    experiment: str,
    run_name: str,
    *,
    tags: Mapping[str, Any] | None = None,
    run_key: str | None = None,
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
) -> Iterator[RunHandle]:
    """Start (or resume) a run; it ends FAILED with the reason if the body raises.

    ``run_key`` identifies the run across retries of the same DAG task: the caller can
    look it up with :func:`find_run` to reuse or resume instead of duplicating.
    """
    mlflow_client = client()
    experiment_id = ensure_experiment(experiment)
    if resume_run_id:
        previous = mlflow_client.get_run(resume_run_id)
        mlflow_client.update_run(resume_run_id, status="RUNNING")
        if TAG_FAILURE in previous.data.tags:
            # Keep the earlier failure visible, but it no longer describes the run.
            mlflow_client.set_tag(resume_run_id, "nnzoo.previous_failure", previous.data.tags[TAG_FAILURE])
            mlflow_client.delete_tag(resume_run_id, TAG_FAILURE)
        origin = origin_tags()
        if previous.data.tags.get("airflow.task_id", origin.get("airflow.task_id")) == origin.get("airflow.task_id"):
            # A later try of the task that made the run: the link back now leads to it.
            # (A later step that reopens the run to add results, e.g. an evaluation, leaves it.)
            set_tags(resume_run_id, origin)
        handle = RunHandle(resume_run_id, experiment_id, resumed=True)
    else:
        handle = RunHandle(_create_run(experiment_id, run_name, tags, run_key, parent_run_id), experiment_id)
    try:
        yield handle
    except BaseException as error:
        reason = f"{type(error).__name__}: {error}"
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        with contextlib.suppress(Exception):
            mlflow_client.set_tag(handle.run_id, TAG_FAILURE, reason[:4000])
            mlflow_client.log_text(handle.run_id, traceback.format_exc(), "failure/traceback.txt")
        mlflow_client.set_terminated(handle.run_id, status=status)
        raise
    else:
        mlflow_client.set_terminated(handle.run_id, status="FINISHED")


def _create_run(experiment_id: str, run_name: str, tags: Mapping[str, Any] | None, run_key: str | None,
                parent_run_id: str | None) -> str:
    all_tags = {**origin_tags(), **{key: str(value) for key, value in (tags or {}).items()}}
    if run_key:
        all_tags[TAG_RUN_KEY] = run_key
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    else:
        # Top-level runs of the same family and profile would all be "cnn-smoke": the
        # start time tells them apart in the runs list (nested runs are told apart by parent).
        run_name = f"{run_name} {time.strftime('%m-%d %H:%M:%S', time.gmtime())}"
    return client().create_run(experiment_id, run_name=run_name, tags=all_tags).info.run_id


def start_run(experiment: str, run_name: str, *, tags: Mapping[str, Any] | None = None,
              run_key: str | None = None) -> str:
    """A run that stays RUNNING across tasks: a pipeline's parent run, under which each
    task nests its own runs (``run(..., parent_run_id=...)``). With ``run_key`` a retry
    gets the run created the first time. End it with :func:`end_run`."""
    experiment_id = ensure_experiment(experiment)
    if run_key:
        earlier = find_run(experiment_id, run_key)
        if earlier is not None:
            # Its status is left alone: the pipeline's last step sets it again.
            return earlier.info.run_id
    origin = origin_tags()
    if "airflow.url" in origin:
        # The pipeline's run belongs to the whole DAG run, not to the task that opened it.
        tags = {"airflow.url": origin["airflow.url"].partition("/tasks/")[0], **(tags or {})}
    return _create_run(experiment_id, run_name, tags, run_key, None)


def end_run(run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
    """End a run started by :func:`start_run`; a FAILED or KILLED one records ``reason``."""
    if status not in ("FINISHED", "FAILED", "KILLED"):
        raise ValueError(f"status={status!r}: expected FINISHED, FAILED or KILLED")
    mlflow_client = client()
    if reason:
        mlflow_client.set_tag(run_id, TAG_FAILURE, reason[:4000])
    elif status == "FINISHED":
        previous = mlflow_client.get_run(run_id).data.tags.get(TAG_FAILURE)
        if previous is not None:
            # A rerun succeeded: keep the earlier failure visible, but not as this run's.
            mlflow_client.set_tag(run_id, "nnzoo.previous_failure", previous)
            mlflow_client.delete_tag(run_id, TAG_FAILURE)
    mlflow_client.set_terminated(run_id, status=status)


def child_runs(experiment_id: str, parent_run_id: str) -> list[Any]:
    """Runs nested under ``parent_run_id``."""
    return client().search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                max_results=1000)


def rename_run(run_id: str, run_name: str) -> None:
    client().update_run(run_id, name=run_name)


def get_run(run_id: str) -> Any:
    return client().get_run(run_id)


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return text[:6000]


def log_params(run_id: str, params: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Log params in batches. Params already on the run are kept (MLflow params are
    immutable): a resumed run on another worker may report a different ``device``.
    Returns those conflicts ``{key: (logged, new)}`` and records them in a tag."""
    existing = client().get_run(run_id).data.params
    conflicts = {key: (existing[key], _param_value(value)) for key, value in params.items()
                 if key in existing and existing[key] != _param_value(value)}
    items = [Param(key, _param_value(value)) for key, value in params.items() if key not in existing]
    for start in range(0, len(items), 100):
        client().log_batch(run_id, params=items[start : start + 100])
    if conflicts:
        client().set_tag(run_id, "nnzoo.param_conflicts", json.dumps(conflicts)[:4000])
    return conflicts


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
    now = int(time.time() * 1000)
    items = [Metric(key, float(value), now, step or 0) for key, value in metrics.items()
             if value is not None and math.isfinite(float(value))]
    if items:
        client().log_batch(run_id, metrics=items)


def set_tags(run_id: str, tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        client().set_tag(run_id, key, str(value))


def log_figure(run_id: str, figure: Any, artifact_file: str) -> None:
    """Log a matplotlib figure as a PNG and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    log_bytes(run_id, buffer.getvalue(), artifact_file)


def log_image(run_id: str, image: Any, artifact_file: str) -> None:
    """Log an RGB image (uint8, or float in [0, 1]) as a PNG."""
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8)
    client().log_image(run_id, pixels, artifact_file)


def log_summary(run_id: str, model: Any, artifact_file: str = "model_summary.txt") -> None:
    """Log a Keras model's layer table (``model.summary()``) as text."""
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    log_bytes(run_id, "\n".join(lines).encode(), artifact_file)


def log_bytes(run_id: str, data: bytes, artifact_file: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_bytes(data)
        folder = str(Path(artifact_file).parent)
        client().log_artifact(run_id, str(path), None if folder == "." else folder)


def log_dict(run_id: str, data: Mapping[str, Any], artifact_file: str) -> None:
    client().log_dict(run_id, dict(data), artifact_file)


def log_dataset(run_id: str, name: str, digest: str, source: str, *, context: str = "training",
                sizes: Mapping[str, int] | None = None) -> None:
    """Record the dataset a run used as an MLflow dataset input (the runs list's
    Datasets column: name, digest, source), once per run and context."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    logged = client().get_run(run_id).inputs.dataset_inputs
    if any(item.dataset.name == name and item.dataset.digest == digest
           and {tag.key: tag.value for tag in item.tags}.get(MLFLOW_DATASET_CONTEXT) == context for item in logged):
        return  # a resumed or retried run
    source_type = "local" if source.startswith("file:") or "://" not in source else source.split("://", 1)[0]
    dataset = Dataset(name=name, digest=digest[:36], source_type=source_type, source=json.dumps({"uri": source}),
                      profile=json.dumps({"num_rows": dict(sizes)}) if sizes else None)
    client().log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])])


def list_artifacts(run_id: str, path: str | None = None) -> list[str]:
    return [item.path for item in client().list_artifacts(run_id, path)]


def log_keras_model(run_id: str, model: Any, input_example: Any, name: str = "model") -> str:
    """Log a Keras model with its signature (inferred from ``input_example``: a batch, or
    a list of batches for a model with several inputs); returns its URI."""
    import mlflow.keras
    from mlflow.models import infer_signature

    if isinstance(input_example, (list, tuple)):
        # Several inputs: MLflow wants one named tensor each (the Keras input names).
        names = [tensor.name.split(":")[0] for tensor in model.inputs]
        if len(names) != len(input_example):
            raise ValueError(f"model {model.name!r} has {len(names)} inputs; the example has {len(input_example)}")
        input_example = {name: np.asarray(value) for name, value in zip(names, input_example, strict=True)}
    # A direct call, not predict(): Keras' predict refuses arrays of strings (raw-text models).
    signature = infer_signature(input_example, np.asarray(model(input_example, training=False)))
    # State the requirements: MLflow would infer them by loading the model in a fresh
    # interpreter (about 6 s per model here), which also does not know nnzoo's own
    # classes (e.g. the RBM). A Keras model needs Keras and its backend to load.
    with _active(run_id):
        info = mlflow.keras.log_model(model, name=name, signature=signature,
                                      pip_requirements=_framework_requirements())
    return info.model_uri


def _framework_requirements() -> list[str]:
    from importlib import metadata

    found = []
    for dist in ("keras", "tensorflow", "tensorflow-cpu"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{dist}=={metadata.version(dist)}")
    return found


def load_keras_model(model_uri: str, compile: bool = False) -> Any:
    """The Keras model logged at ``model_uri``, for inference: not compiled (no loss, no
    optimizer) unless ``compile``. The stages only predict with a loaded model or build
    a new one from its layers; a compiled load would rebuild the optimizer, and under
    mixed precision drop its saved state with a warning (the saved loss-scale optimizer
    holds variables that a plain one does not). Without compile, Keras chooses XLA by
    device (on a GPU, not on a CPU) instead of using the training's setting."""
    import mlflow.keras

    from models import model_names

    # Importing every model module registers the project's own Keras objects (the RBM,
    # the text standardizer) that a saved model may name.
    model_names()
    configure()
    return mlflow.keras.load_model(model_uri, load_model_kwargs={"compile": compile})


@contextlib.contextmanager
def _active(run_id: str) -> Iterator[None]:
    """Make ``run_id`` the fluent API's active run without changing its status."""
    configure()
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield
        return
    mlflow.start_run(run_id=run_id)
    try:
        yield
    finally:
        # end_run would mark the run FINISHED; the owner of the run decides that, so
        # leave the fluent stack without touching the run's status.
        stack = getattr(mlflow.tracking.fluent, "_active_run_stack", None)
        if stack is not None and hasattr(stack, "get") and stack.get():
            stack.get().pop()
        else:
            mlflow.end_run()
            client().update_run(run_id, status="RUNNING")


def keras_epoch_logger(run_id: str, prefix: str = "", start_step: int = 0, skip_through: int = 0) -> Any:
    """A Keras callback that logs every epoch's metrics (``loss``, ``val_loss`` ...)
    to ``run_id`` with the epoch number as step, in one batch call per epoch.

    Steps up to ``skip_through`` are not logged again: a resumed training that repeats
    an epoch whose metrics reached MLflow before the kill leaves no duplicate."""
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            step = start_step + epoch + 1
            if step <= skip_through:
                return
            metrics = {f"{prefix}{key}": float(value) for key, value in (logs or {}).items()
                       if isinstance(value, (int, float)) or hasattr(value, "__float__")}
            log_metrics(run_id, metrics, step=step)

    return EpochLogger()


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every logged value of ``key``, in step order."""
    return sorted((m.step, m.value) for m in client().get_metric_history(run_id, key))


def load_json(run_id: str, artifact_file: str) -> Any | None:
    """A JSON artifact of the run (None: the run has no such file)."""
    import mlflow.artifacts

    configure()
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact_file}")
    except (MlflowException, OSError, ValueError):
        return None


def load_image(run_id: str, artifact_file: str) -> Any:
    """An image artifact of the run, as a PIL image."""
    import mlflow.artifacts

    configure()
    return mlflow.artifacts.load_image(f"runs:/{run_id}/{artifact_file}")


def load_artifact(run_id: str, artifact_file: str) -> bytes | None:
    """The bytes of an artifact of the run (None: the run has no such file)."""
    import mlflow.artifacts

    configure()
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_file, dst_path=folder)
        except (MlflowException, OSError):
            return None
        return Path(local).read_bytes()


# --- registry -------------------------------------------------------------------------


def model_version(name: str, version: str) -> Any | None:
    """Version ``version`` of registered model ``name`` (``champion``: the alias's), or None."""
    try:
        if version == CHAMPION:
            return client().get_model_version_by_alias(name, CHAMPION)
        return client().get_model_version(name, str(version))
    except MlflowException:
        return None


def versions_of_run_key(name: str, key: str) -> list[Any]:
    """Versions of registered model ``name`` made by runs whose run key starts with
    ``key`` (a pipeline run under that key), oldest first."""
    found = []
    for version in client().search_model_versions(f"name = '{name}'", max_results=1000):
        if version.run_id and (get_run(version.run_id).data.tags.get(TAG_RUN_KEY) or "").startswith(f"{key}/"):
            found.append(version)
    return sorted(found, key=lambda version: int(version.version))


def newest_versions() -> list[Any]:
    """The newest version of every registered model."""
    mlflow_client = client()
    newest = []
    for registered in mlflow_client.search_registered_models(max_results=1000):
        newest += mlflow_client.search_model_versions(f"name = '{registered.name}'", max_results=1,
                                                      order_by=["version_number DESC"])
    return newest


def register_model_version(model_uri: str, name: str, run_id: str, tags: Mapping[str, Any] | None = None) -> Any:
    """Register ``model_uri`` under ``name`` once per run: a retry returns the version
    already registered for ``run_id`` instead of adding another."""
    mlflow_client = client()
    try:
        mlflow_client.get_registered_model(name)
    except MlflowException:
        with contextlib.suppress(MlflowException):
            mlflow_client.create_registered_model(name, description=f"nnzoo model {name}")
    for version in mlflow_client.search_model_versions(f"name = '{name}'"):
        if version.run_id == run_id:
            return version
    # A logged model's URI (models:/m-<id>) needs its model_id: a tracking server refuses it without.
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    version = mlflow_client.create_model_version(name, model_uri, run_id=run_id, model_id=model_id, tags={
        **origin_tags(), **{key: str(value) for key, value in (tags or {}).items()}})
    return version


def lineage_alias(profile: str, dataset: str) -> str:
    """The alias of the best version trained on this profile and dataset (``champion-quick-digits``)."""
    import re

    return re.sub(r"[^\w-]", "_", f"{CHAMPION}-{profile}-{dataset}")


def _lineage(mlflow_client: MlflowClient, version: Any) -> tuple[str | None, str | None]:
    """(profile, dataset) a version was trained on: its tags, else its run's."""
    profile, dataset = version.tags.get(TAG_PROFILE), version.tags.get(TAG_DATASET)
    if (profile is None or dataset is None) and version.run_id:
        with contextlib.suppress(MlflowException):
            run = mlflow_client.get_run(version.run_id)
            profile = profile or run.data.tags.get(TAG_PROFILE)
            dataset = dataset or run.data.params.get("dataset.name")
    return profile, dataset


def _by_alias(mlflow_client: MlflowClient, name: str, alias: str) -> Any | None:
    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


@dataclasses.dataclass(frozen=True)
class Standing:
    """A registered version as a promotion sees it: its number, its value of the
    metric (None: never measured) and what it was trained on."""

    version: str
    value: float | None = None
    profile: str | None = None
    dataset: str | None = None


def decide_promotion(
    candidate: Standing, metric: str, *, best: Standing | None, served: Standing | None,
    higher_is_better: bool = True, tolerance: float = 0.0,
) -> dict[str, Any]:
    """Where ``candidate`` goes, from what the registry holds; no MLflow call.

    ``best``: the champion of the candidate's lineage (same profile and dataset, alias
    :func:`lineage_alias`); ``served``: the version holding ``champion``. The candidate
    becomes the lineage's champion unless its value is worse than ``best``'s by more
    than ``tolerance``; it takes ``champion`` when it leads its lineage and the served
    champion is of the same lineage, or of a smaller profile (smoke < quick < full).
    Returns ``lineage_champion``, ``promoted``, ``reason`` and the served champion's
    version and value."""
    profile, dataset, value = candidate.profile, candidate.dataset, candidate.value
    best_value = best.value if best is not None and best.version != candidate.version else None
    if best is not None and best.version == candidate.version:
        in_lineage, reason = True, "already champion"
    elif best_value is None:
        in_lineage, reason = True, f"no {profile}/{dataset} champion with this metric yet"
    else:
        margin = (value - best_value) if higher_is_better else (best_value - value)
        in_lineage = margin >= -tolerance
        reason = (f"{metric} {value:.6g} vs {profile}/{dataset} champion v{best.version} {best_value:.6g} "
                  f"(tolerance {tolerance:g}): {'not worse' if in_lineage else 'worse'}")
    if served is None:
        promoted = in_lineage
    elif served.version == candidate.version:
        promoted, reason = True, "already champion"
    elif (served.profile, served.dataset) == (profile, dataset):
        promoted = in_lineage
    else:
        rank = {name: index for index, name in enumerate(PROFILES)}
        mine, theirs = rank.get(profile or "", -1), rank.get(served.profile or "", -1)
        promoted = in_lineage and mine > theirs
        relation = ("a larger profile than" if mine > theirs else "a smaller profile than" if mine < theirs
                    else "another dataset than")
        reason += (f"; {profile}/{dataset} is {relation} the serving champion v{served.version} "
                   f"({served.profile}/{served.dataset}): "
                   + ("takes champion" if promoted else f"stays {lineage_alias(profile, dataset)}, champion "
                                                        "unchanged"))
    other = served is not None and served.version != candidate.version
    return {"lineage_champion": in_lineage, "promoted": promoted, "reason": reason,
            "champion_version": None if served is None else served.version,
            "champion_value": served.value if other else None}


def _standing(mlflow_client: MlflowClient, version: Any | None, metric: str) -> Standing | None:
    if version is None:
        return None
    raw = version.tags.get(f"nnzoo.{metric}")
    profile, dataset = _lineage(mlflow_client, version)
    return Standing(str(version.version), float(raw) if raw is not None else None, profile, dataset)


PROMOTION_LOCK_SUFFIX = ".promotion-lock"
PROMOTION_LOCK_STALE_S = 120.0
"""A lock older than this belongs to a promoter that died (a promotion takes well under a second)."""


@contextlib.contextmanager
def promotion_lock(name: str, timeout: float = 300.0) -> Iterator[None]:
    """Hold the promotion lock of registered model ``name`` (one promoter at a time).

    MLflow's registry has no compare-and-set for aliases: two promoters that read the
    same champion at the same moment could both set it, and the worse could win. The
    lock is the one atomic step every MLflow backend offers, on SQLite, PostgreSQL or
    behind a tracking server alike: creating a registered model whose name exists fails.
    ``<name>.promotion-lock`` is created to take the lock and deleted to release it; a
    waiter backs off and retries, and breaks a lock left by a promoter that died (older
    than :data:`PROMOTION_LOCK_STALE_S`)."""
    import random
    import socket

    mlflow_client = client()
    lock = f"{name}{PROMOTION_LOCK_SUFFIX}"
    owner = f"{socket.gethostname()}:{os.getpid()}"
    deadline, delay, first_seen = time.monotonic() + timeout, 0.02, time.time()
    while True:
        try:
            mlflow_client.create_registered_model(lock, tags={"nnzoo.lock.owner": owner,
                                                              "nnzoo.lock.since": f"{time.time():.3f}"},
                                                  description="nnzoo: a promotion of this model is in progress")
            break
        except MlflowException as error:
            # DOES_NOT_EXIST: the name was taken, then freed before MLflow read it back.
            if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        try:
            held = mlflow_client.get_registered_model(lock)
        except MlflowException:
            continue  # released meanwhile
        since = float(held.tags.get("nnzoo.lock.since") or first_seen)
        if time.time() - since > PROMOTION_LOCK_STALE_S:
            print(f"[nnzoo] breaking the promotion lock of {name} left by {held.tags.get('nnzoo.lock.owner', '?')} "
                  f"{time.time() - since:.0f}s ago", flush=True)
            with contextlib.suppress(MlflowException):
                mlflow_client.delete_registered_model(lock)
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"promotion of {name}: its lock {lock} is held by "
                               f"{held.tags.get('nnzoo.lock.owner', '?')} for {time.time() - since:.0f}s")
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 0.5)
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            mlflow_client.delete_registered_model(lock)


def promote(
    name: str, version: str, metric: str, value: float, *, higher_is_better: bool = True, tolerance: float = 0.0,
    profile: str | None = None, dataset: str | None = None,
) -> dict[str, Any]:
    """Promote ``version``, comparing like with like (:func:`decide_promotion`).

    It always gets the ``challenger`` alias; the lineage alias and ``champion`` as
    decided. Without ``profile``/``dataset`` the version's tags (or its run's) say
    them. The decision and both values become tags on the version and its run.
    Nothing is deleted.
    """
    mlflow_client = client()
    current = mlflow_client.get_model_version(name, str(version))
    if profile is None or dataset is None:
        found_profile, found_dataset = _lineage(mlflow_client, current)
        profile, dataset = profile or found_profile or "unknown", dataset or found_dataset or "unknown"
    alias = lineage_alias(profile, dataset)
    mlflow_client.set_model_version_tag(name, str(version), f"nnzoo.{metric}", str(value))
    mlflow_client.set_model_version_tag(name, str(version), TAG_PROFILE, profile)
    mlflow_client.set_model_version_tag(name, str(version), TAG_DATASET, dataset)
    # Read, decide and set as one step: a concurrent promotion of this model waits.
    with promotion_lock(name):
        decided = decide_promotion(
            Standing(str(version), value, profile, dataset), metric,
            best=_standing(mlflow_client, _by_alias(mlflow_client, name, alias), metric),
            served=_standing(mlflow_client, _by_alias(mlflow_client, name, CHAMPION), metric),
            higher_is_better=higher_is_better, tolerance=tolerance)
        mlflow_client.set_registered_model_alias(name, CHALLENGER, str(version))
        if decided["lineage_champion"]:
            mlflow_client.set_registered_model_alias(name, alias, str(version))
        if decided["promoted"]:
            mlflow_client.set_registered_model_alias(name, CHAMPION, str(version))
    decision = {"name": name, "version": str(version), "metric": metric, "value": value, "profile": profile,
                "dataset": dataset, "lineage_alias": alias, **decided}
    tags = {"nnzoo.promotion.decision": "champion" if decided["promoted"] else alias if decided["lineage_champion"]
            else "challenger", "nnzoo.promotion.reason": decided["reason"]}
    for key, tag_value in tags.items():
        mlflow_client.set_model_version_tag(name, str(version), key, tag_value)
    if current.run_id:
        set_tags(current.run_id, tags)
    return decision
