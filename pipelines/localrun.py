"""The embedded mode: Airflow on SQLite in ``$NNZOO_HOME/airflow`` and a local MLflow
store, driven through Airflow's own CLI (``airflow dags test``, ``airflow standalone``).

Nothing here imports Airflow: it sets the environment and runs its commands, exactly
as a user would in a shell.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipelines import eta, orchestration, settings, tasklog


def airflow_env(base: dict[str, str] | None = None, mlflow_ui_url: str | None = None) -> dict[str, str]:
    """Environment for the embedded mode; values already set in ``base`` win.

    ``mlflow_ui_url``: where the MLflow UI of this store answers (``nnzoo ui`` starts
    one), exported as ``NNZOO_MLFLOW_UI_URL`` for links to runs; without it the
    variable is left as ``base`` has it (usually unset).
    """
    env = dict(os.environ if base is None else base)
    home = Path(env.get("NNZOO_HOME", settings.home()))
    airflow_home = Path(env.get("AIRFLOW_HOME", home / "airflow"))
    defaults = {
        "NNZOO_HOME": str(home),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # A local playground: DAGs are ready to trigger, not paused.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # Training tasks take the one slot of this pool, which init_airflow creates:
        # one training at a time on a CPU laptop.
        "NNZOO_TRAINING_POOL": orchestration.EMBEDDED_TRAINING_POOL,
        # 2-core laptops and CI: a few worker processes, not Airflow's default 32.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    if mlflow_ui_url:
        defaults["NNZOO_MLFLOW_UI_URL"] = mlflow_ui_url
    for key, value in defaults.items():
        env.setdefault(key, value)
    # Task processes import `pipelines` from this checkout, whatever PYTHONPATH held.
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(settings.REPO_ROOT) not in paths:
        env["PYTHONPATH"] = os.pathsep.join([str(settings.REPO_ROOT), *paths])
    # `airflow standalone` starts its components as `airflow ...` from PATH.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = os.pathsep.join(filter(None, [bin_dir, env.get("PATH", "")]))
    return env


def _bin(name: str) -> str:
    """A console script of this environment (the venv's ``airflow``, ``mlflow``)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def init_airflow(env: dict[str, str]) -> None:
    """Create or migrate the metadata DB and the training pool, if one is configured (idempotent)."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    _check([_bin("airflow"), "db", "migrate"], env, "airflow db migrate")
    # The pool the DAGs put training tasks in: the same setting, read in the same environment.
    pool = orchestration.training_pool(env)
    if pool is not None:
        _check([_bin("airflow"), "pools", "set", pool, "1", "nnzoo training tasks (one at a time on CPU)"],
               env, "airflow pools set")


def _check(command: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"nnzoo: {what} failed (exit {result.returncode}); output above")


def family_dag_ids() -> list[str]:
    """The DAG id of every registered family."""
    from pipelines.families import all_families

    return [family.dag_id for family in all_families().values()]


def expected_times(families: list[str], profile: str) -> dict[str, float]:
    """Each family's expected time on this machine (:mod:`pipelines.eta`), said once; empty
    when there is no reference for the profile or the calibration failed."""
    if profile != "quick":
        return {}
    print("[nnzoo] timing this machine for the ETA (about 15 s)", flush=True)
    calibration = eta.measured()
    from pipelines.families import get_family

    expected = {name: eta.expected_seconds(get_family(name).quick_seconds, calibration) for name in families}
    if calibration is None or None in expected.values():
        print("[nnzoo] no ETA: the calibration failed", flush=True)
        return {}
    ratios = {part: calibration[part] / eta.REFERENCE_CALIBRATION[part] for part in calibration}
    print(f"[nnzoo] this machine trains at {1 / ratios['train']:.2f}x and runs Python at "
          f"{1 / ratios['python']:.2f}x the speed of the reference ({eta.REFERENCE_MACHINE}): the zoo should "
          f"take about {eta.clock(sum(expected.values()))}", flush=True)
    return expected


def run_zoo(profile: str, families: list[str] | None = None) -> int:
    """Run each family DAG with ``airflow dags test`` and print the results table."""
    env = airflow_env()
    print(f"[nnzoo] Airflow home {env['AIRFLOW_HOME']}, MLflow store {env['MLFLOW_TRACKING_URI']}", flush=True)
    init_airflow(env)
    from pipelines.families import all_families, get_family

    names = families or list(all_families())
    dag_ids = [get_family(name).dag_id for name in names]
    expected = expected_times(names, profile)
    started_ms, zoo_started = int(time.time() * 1000), time.perf_counter()
    failed = []
    log_dir = Path(env["NNZOO_HOME"]) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    # Every family runs here on the data its prepare_data makes: no dataset event, or
    # nnzoo_retrain would queue a retraining of what was just trained.
    env[orchestration.ZOO_RUN_VARIABLE] = "1"
    for name, dag_id in zip(names, dag_ids, strict=True):
        log_path = log_dir / f"{dag_id}.log"
        print(f"[nnzoo] airflow dags test {dag_id} (profile {profile}); log: {log_path}", flush=True)
        if expected:
            so_far = time.perf_counter() - zoo_started
            print(f"[nnzoo] {name}: expected about {eta.clock(expected[name])} here; {eta.clock(so_far)} so far, "
                  f"about {eta.clock(max(sum(expected.values()) - so_far, 0))} to go", flush=True)
        # Lines a stage prints for the user start with [nnzoo]; Airflow's own only reach the log.
        begin = time.perf_counter()
        # Each task's lines also go to its own log file, where the Airflow UI shows them.
        task_logs = tasklog.DagTestLogs(task_log_folder(env))
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [_bin("airflow"), "dags", "test", dag_id, "-c", json.dumps({"profile": profile})],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                task_logs.feed(line)
                text = echoed(line)
                if text is not None:
                    print("   ", text, flush=True)
            code = process.wait()
            task_logs.close()
        state = "ok" if code == 0 else f"FAILED (exit {code})"
        took = f" (expected {expected[name]:.0f}s)" if expected else ""
        print(f"[nnzoo] {dag_id}: {state} in {time.perf_counter() - begin:.0f}s{took}", flush=True)
        if code != 0:
            failed.append(dag_id)
    print_summary(started_ms, env)
    print_report(profile, env)
    if failed:
        print(f"[nnzoo] failed DAGs: {', '.join(failed)}; see the logs under {log_dir}", file=sys.stderr)
        return 1
    return 0


def task_log_folder(env: dict[str, str]) -> Path:
    """Airflow's ``[logging] base_log_folder`` in this environment (its default: AIRFLOW_HOME/logs)."""
    folder = env.get("AIRFLOW__LOGGING__BASE_LOG_FOLDER")
    return Path(folder) if folder else Path(env["AIRFLOW_HOME"]) / "logs"


def echoed(line: str) -> str | None:
    """What ``make run`` echoes of a line of a DAG's log (None: nothing): what a stage
    says, whole, from its ``[nnzoo]`` on; the end of an error line (Airflow's start
    with a timestamp and logger fields)."""
    text = line.rstrip()
    start = text.find("[nnzoo]")
    if start >= 0:
        return text[start:]
    if "ERROR" in text or "Traceback" in text:
        return text[-200:]
    return None


def summary_rows(since_ms: int = 0, env: dict[str, str] | None = None,
                 run_key_prefix: str | None = None, family: str | None = None) -> list[dict[str, Any]]:
    """One row per run started since ``since_ms`` (and, with ``run_key_prefix``, of that
    DAG or CLI run only, the finished runs it reused from the cache included) whose model
    its family declares something about: its headline metrics and what its claims read
    (:meth:`pipelines.families.Family.summary_metrics`). Runs of a model the family
    declares nothing about (an RBM layer, one fine-tuning of many) are summed up by
    another run. With ``family``, only that family's runs."""
    import fnmatch

    from mlflow import MlflowClient

    from pipelines import tracking
    from pipelines.families import all_families
    from pipelines.kit import TAG_CACHE_HIT

    env = env or airflow_env()
    uri = env["MLFLOW_TRACKING_URI"]
    mlflow_client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiments = [e for e in mlflow_client.search_experiments() if e.name.startswith("nnzoo-")]
    if not experiments:
        return []
    since = f"attributes.start_time >= {since_ms}"
    queries = [since] if not run_key_prefix else [
        f"{since} and tags.`{tracking.TAG_RUN_KEY}` LIKE '{run_key_prefix}/%'",
        # a cache hit: a finished run of another key (and maybe an older one) reused by this one
        f"tags.`{TAG_CACHE_HIT}` LIKE '{run_key_prefix}/%'"]
    runs: dict[str, Any] = {}
    for query in queries:
        for run in mlflow_client.search_runs([e.experiment_id for e in experiments], filter_string=query,
                                             order_by=["attributes.start_time ASC"], max_results=5000):
            runs.setdefault(run.info.run_id, run)
    families = all_families()
    rows = []
    for run in sorted(runs.values(), key=lambda run: run.info.start_time):
        name = run.data.tags.get(tracking.TAG_FAMILY, "?")
        if family and name != family:
            continue
        model = run.data.tags.get(tracking.TAG_MODEL, run.info.run_name)
        patterns = families[name].summary_metrics(model) if name in families else ()
        if not patterns:
            continue
        rows.append({
            "family": name,
            "model": model,
            "status": run.info.status,
            "metrics": {k: v for k, v in run.data.metrics.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)},
            "run_id": run.info.run_id,
            "reused": bool(run_key_prefix) and not run.data.tags.get(tracking.TAG_RUN_KEY, "").startswith(
                run_key_prefix + "/"),
        })
    return rows


def _shown(value: float) -> str:
    """Four decimals, or four significant digits for values too small for them (2e-14)."""
    return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.3g}"


def print_summary(since_ms: int, env: dict[str, str]) -> None:
    rows = summary_rows(since_ms, env)
    family_width = max([len("family"), *(len(row["family"]) for row in rows)])
    model_width = max([len("model"), *(len(row["model"]) for row in rows)])
    header = f"{'family':<{family_width}} {'model':<{model_width}} {'status':<9} {'MLflow run id':<32}  metrics"
    print("\n" + header + "\n" + "-" * (len(header) + 30))
    for row in rows:
        metric = ", ".join(f"{k}={_shown(v)}" for k, v in sorted(row["metrics"].items())) or "-"
        print(f"{row['family']:<{family_width}} {row['model']:<{model_width}} {row['status']:<9} "
              f"{row['run_id']:<32}  {metric}")
    if not rows:
        print("(no training runs recorded)")
    store = env["MLFLOW_TRACKING_URI"]
    print(f"\nMLflow store: {store}")
    print(f"  browse it:  make ui   (or: .venv/bin/mlflow ui --backend-store-uri {store})")
    print(f"Airflow home: {env['AIRFLOW_HOME']}  (make ui starts Airflow at http://localhost:8080)")


def print_report(profile: str, env: dict[str, str]) -> None:
    """The zoo report of ``profile`` (:mod:`pipelines.report`): the claims table and where
    the HTML page is. It reads the store only; a failure to write it is reported, and
    does not hide the DAGs' results above."""
    import logging

    for key in ("MLFLOW_TRACKING_URI", "NNZOO_HOME"):
        os.environ[key] = env[key]
    # matplotlib's font fallback notes would stand between the run table and the claims.
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    try:
        from pipelines.report import make_report

        result = make_report(profile)
    except Exception as error:  # noqa: BLE001 - the runs above are the main result
        print(f"[nnzoo] the zoo report could not be made: {type(error).__name__}: {error}", file=sys.stderr)
        return
    print(f"\nClaims of the talk ({profile} profile):\n{result['table']}")
    print(f"Report: {result['html']}")


def experiment_ids(env: dict[str, str]) -> dict[str, str]:
    """Experiment name -> id in the MLflow store, if the store exists (``{}`` when not,
    or when it cannot be read: the links then point at the experiment list)."""
    uri = env["MLFLOW_TRACKING_URI"]
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return {}  # opening it would create an empty store
    try:
        from mlflow import MlflowClient

        return {e.name: e.experiment_id for e in MlflowClient(tracking_uri=uri).search_experiments()}
    except Exception:  # an unreadable or unreachable store: links without ids
        return {}


def ui_links(env: dict[str, str], airflow_port: int, mlflow_port: int,
             ids: dict[str, str] | None = None) -> str:
    """A table of each family's DAG in the Airflow UI and experiment in the MLflow UI.
    An experiment not in the store yet (its family never ran) gets the experiment list."""
    from pipelines.families import all_families

    ids = experiment_ids(env) if ids is None else ids
    families = list(all_families().values())
    width = max(len(family.name) for family in families)
    dag_urls = {family.name: f"http://localhost:{airflow_port}/dags/{family.dag_id}" for family in families}
    url_width = max(len(url) for url in dag_urls.values())
    lines = ["Families (Airflow DAG | MLflow experiment):"]
    for family in families:
        dag_url = dag_urls[family.name]
        experiment = family.experiment_name
        if experiment in ids:
            # In MLflow's model-training view (its UI opens experiments in the GenAI view).
            mlflow_url = settings.mlflow_experiment_url(f"http://localhost:{mlflow_port}", ids[experiment])
        else:
            mlflow_url = f"http://localhost:{mlflow_port}/#/experiments ({experiment}: after its first run)"
        lines.append(f"  {family.name:<{width}}  {dag_url:<{url_width}}  |  {mlflow_url}")
    return "\n".join(lines)


def run_ui(airflow_port: int, mlflow_port: int) -> int:
    """``airflow standalone`` and ``mlflow ui`` in their own process groups; Ctrl-C
    stops both groups, children included."""
    env = airflow_env(mlflow_ui_url=f"http://localhost:{mlflow_port}")
    env["AIRFLOW__API__PORT"] = str(airflow_port)
    env.setdefault("AIRFLOW__API__BASE_URL", f"http://localhost:{airflow_port}")
    # Tasks reach the api-server's execution API: keep it on the same port.
    env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://localhost:{airflow_port}/execution/"
    init_airflow(env)
    Path(env["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    log_dir = Path(env["NNZOO_HOME"]) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    artifacts = settings.mlflow_artifact_root() or ""
    commands = {"airflow-standalone": [_bin("airflow"), "standalone"],
                # nnzoo's app: MLflow's server, opening experiments in the model-training view.
                "mlflow-ui": [_bin("mlflow"), "server", "--app-name", "nnzoo",
                              "--backend-store-uri", env["MLFLOW_TRACKING_URI"],
                              "--default-artifact-root", artifacts, "--host", "127.0.0.1", "--port", str(mlflow_port),
                              "--workers", "1"]}
    processes = []
    for name, command in commands.items():
        # The child keeps its own copy of the log file's descriptor; ours is closed at once.
        with open(log_dir / f"{name}.log", "w") as log:
            processes.append(subprocess.Popen(command, env=env, start_new_session=True, stdout=log,
                                              stderr=subprocess.STDOUT))
    password_file = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    print(f"Airflow UI:  http://localhost:{airflow_port}   (user admin; password in {password_file})")
    print(f"MLflow UI:   http://localhost:{mlflow_port}")
    print(ui_links(env, airflow_port, mlflow_port))
    print(f"Logs:        {log_dir}/airflow-standalone.log, {log_dir}/mlflow-ui.log")
    print("Ctrl-C stops both.", flush=True)

    def stop(*_: Any) -> None:
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 20
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    # Ctrl-C arrives as SIGINT (restored in case the parent ignored it), `kill` as SIGTERM.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    try:
        while all(process.poll() is None for process in processes):
            time.sleep(1)
        print("nnzoo: a UI process exited; see the logs above. Stopping the other.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    finally:
        stop()
