"""The family DAGs end to end the way `make run` runs them (`nnzoo zoo`: Airflow's own
`airflow dags test` on an embedded SQLite Airflow, writing into a temporary MLflow
store), then what `make ui` shows of that store in a real browser (headless Chromium):
task logs, the links between the two UIs both ways, no failed run, MLflow's
model-training view. Screenshots in ``var/test-output/make-ui/``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pipelines import airflow_links, localrun, orchestration
from tests.conftest import REPO_ROOT, VENV_BIN, new_store

pytestmark = pytest.mark.slow

AIRFLOW = str(VENV_BIN / "airflow")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """(store, env): a migrated Airflow home and an MLflow store, both temporary."""
    store = new_store(tmp_path_factory.mktemp("e2e"))
    env = localrun.airflow_env(store.env())
    env.pop("NNZOO_MLFLOW_UI_URL", None)  # as in `make run`: no MLflow UI while the DAGs run
    # `make ui` serves Airflow at [api] base_url (http://localhost:8080 for a user); here
    # a free port, known before the DAGs run so that their runs' links back point at it.
    env["AIRFLOW__API__BASE_URL"] = f"http://localhost:{free_port()}"
    assert env["NNZOO_HOME"] == str(store.home)
    assert env["AIRFLOW_HOME"] == str(store.home / "airflow")
    assert env["MLFLOW_TRACKING_URI"] == store.uri
    localrun.init_airflow(env)
    return store, env


def dags_test(env, conf: dict, timeout: float = 400, dag_id: str = "zoo_classifiers") -> subprocess.CompletedProcess:
    return subprocess.run([AIRFLOW, "dags", "test", dag_id, "-c", json.dumps(conf)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _runs(store):
    client = store.client()
    experiments = [e.experiment_id for e in client.search_experiments() if e.name.startswith("nnzoo-")]
    return client.search_runs(experiments) if experiments else []


def test_init_airflow_creates_the_training_pool(embedded):
    _store, env = embedded
    # The embedded mode names a one-slot pool (a stock Airflow would use default_pool).
    assert orchestration.training_pool(env) == "nnzoo_training"
    result = subprocess.run([AIRFLOW, "pools", "get", orchestration.training_pool(env), "-o", "json"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(json.loads(result.stdout)[0]["slots"]) == 1
    # init_airflow on a home that has it already: `nnzoo zoo` below runs it again.


# Every bad value of every field is refused by its Param (tests/pipelines/test_params.py);
# here one of them, through Airflow's own CLI.
@pytest.mark.parametrize("conf, param", [({"profile": "smoke", "epochs": 0}, "epochs")])
def test_invalid_params_fail_before_any_run_starts(embedded, conf, param):
    store, env = embedded
    before = {run.info.run_id for run in _runs(store)}
    result = dags_test(env, conf, timeout=180)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"Invalid input for param {param}" in output
    assert {run.info.run_id for run in _runs(store)} == before


@pytest.fixture(scope="module")
def zoo_run(embedded) -> subprocess.CompletedProcess:
    """`make run` on the smoke profile for two families: a plain one and one with a
    parent run and mapped tasks."""
    _store, env = embedded
    return subprocess.run([str(VENV_BIN / "nnzoo"), "zoo", "--profile", "smoke", "--family", "classifiers",
                           "--family", "unsupervised"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def smoke_dag_run(zoo_run):
    return zoo_run


def test_smoke_dag_run_trains_evaluates_and_registers(embedded, smoke_dag_run):
    store, _env = embedded
    result = smoke_dag_run
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    client = store.client()
    all_runs = [run for run in _runs(store) if run.data.tags["nnzoo.family"] == "classifiers"]
    runs = {run.data.tags["nnzoo.model"]: run for run in all_runs}
    assert len(all_runs) == 2 and set(runs) == {"mlp", "cnn"}
    for model, run in runs.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["nnzoo.run_key"].startswith("zoo_classifiers/")
        assert run.data.tags["nnzoo.run_key"].endswith(f"/{model}")
        assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
        assert run.data.params["profile"] == "smoke"
        champion = client.get_model_version_by_alias(f"nnzoo-classifiers-{model}", "champion")
        assert champion.run_id == run.info.run_id
    assert (store.home / "data" / "mnist_subset").is_dir()


def test_the_two_uis_link_to_each_other(embedded, smoke_dag_run):
    """Each training task records its run for the "MLflow run" link (an XCom, which the
    api-server turns into a URL when the page is viewed); the run and its registered
    version lead back to the task instance."""
    import sqlite3
    from pathlib import Path

    store, env = embedded
    assert smoke_dag_run.returncode == 0
    client = store.client()
    runs = {run.data.tags["nnzoo.model"]: run for run in _runs(store)
            if run.data.tags["nnzoo.family"] == "classifiers"}
    experiment = client.get_experiment(runs["cnn"].info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.tags["mlflow.note.content"]
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        links = dict(db.execute("SELECT task_id, value FROM xcom WHERE dag_id = 'zoo_classifiers' "
                                "AND key = 'nnzoo_mlflow_run'").fetchall())
    for model, run in runs.items():
        tags = run.data.tags
        task_id = f"train_{model}"
        assert (tags["airflow.dag_id"], tags["airflow.task_id"], tags["airflow.try_number"]) == (
            "zoo_classifiers", task_id, "1")
        assert tags["airflow.dag_run_id"] in tags["nnzoo.run_key"]
        assert "/dags/zoo_classifiers/runs/" in tags["airflow.url"] and tags["airflow.url"].split("?")[0].endswith(
            f"/tasks/{task_id}")
        assert tags["mlflow.source.type"] == "JOB" and tags["mlflow.source.name"] == f"airflow:zoo_classifiers.{task_id}"
        assert tags["mlflow.user"]
        recorded = json.loads(links[task_id])
        # No MLflow UI while `make run` ran: the link is made from the address known when viewed.
        assert recorded == {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "url": None}
        assert airflow_links.link_for(links[task_id], {"NNZOO_MLFLOW_UI_URL": "http://mlflow.example:5000"}) == (
            f"http://mlflow.example:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
            "?workflowType=machine_learning")
        inputs = run.inputs.dataset_inputs
        assert [item.dataset.name for item in inputs] == ["mnist_subset"], inputs
        assert inputs[0].dataset.digest == run.data.params["dataset.fingerprint"][:36]
        version = client.get_model_version_by_alias(f"nnzoo-classifiers-{model}", "champion")
        assert version.tags["airflow.dag_id"] == "zoo_classifiers" and version.tags["airflow.url"]
        assert version.tags["nnzoo.profile"] == "smoke"
    # The run names tell the two DAG runs' trainings apart (here: one DAG run, two models).
    assert len({run.info.run_name for run in runs.values()}) == len(runs)


def test_summary_rows_read_the_store_of_the_given_env(embedded, smoke_dag_run):
    store, env = embedded
    assert smoke_dag_run.returncode == 0
    rows = localrun.summary_rows(0, env, family="classifiers")
    assert {row["model"] for row in rows} == {"mlp", "cnn"}
    assert {run.info.run_id for run in _runs(store)} >= {row["run_id"] for row in rows}
    assert all(row["status"] == "FINISHED" and "test_accuracy" in row["metrics"] for row in rows)


@pytest.fixture(scope="module")
def unsupervised_dag_run(zoo_run):
    return zoo_run


def test_unsupervised_dag_nests_every_training_under_one_finished_parent(embedded, unsupervised_dag_run):
    from pipelines.families import get_family

    store, _env = embedded
    result = unsupervised_dag_run
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    smoke = get_family("unsupervised").config("smoke")
    runs = [run for run in _runs(store) if run.data.tags["nnzoo.family"] == "unsupervised"]
    parents = [run for run in runs if run.data.tags["nnzoo.stage"] == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = [run for run in runs if run is not parent]
    assert all(run.data.tags.get("mlflow.parentRunId") == parent.info.run_id for run in children)
    assert all(run.info.status == "FINISHED" for run in children)
    assert all(run.data.tags["nnzoo.run_key"].startswith("zoo_unsupervised/") for run in runs)
    names = sorted(run.info.run_name for run in children)
    finetunes = [name for name in names if name.startswith("finetune-")]
    assert len(finetunes) == len(smoke.finetune.label_fractions) * 2 * smoke.finetune.seeds
    layers = [f"rbm-layer-{n}" for n in range(1, len(smoke.rbm.layers) + 1)]
    assert sorted(set(names) - set(finetunes)) == sorted(["autoencoder", "rbm-features-digits", *layers])
    assert "plots/accuracy_vs_labels.png" in [a.path for a in store.client().list_artifacts(parent.info.run_id,
                                                                                             "plots")]
    client = store.client()
    for model in ("autoencoder", "dbn", *layers):
        champion = client.get_model_version_by_alias(f"nnzoo-unsupervised-{model}", "champion")
        assert champion.run_id in {run.info.run_id for run in children}, model


def test_unsupervised_dag_labels_each_mapped_finetuning(embedded, unsupervised_dag_run):
    import sqlite3
    from pathlib import Path

    from pipelines.families import get_family

    _store, env = embedded
    assert unsupervised_dag_run.returncode == 0
    smoke = get_family("unsupervised").config("smoke")
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        rows = db.execute("SELECT rendered_map_index, state FROM task_instance "
                          "WHERE dag_id = 'zoo_unsupervised' AND task_id = 'finetune'").fetchall()
    expected = {f"{init} {fraction:.0%} seed {seed}" for fraction in smoke.finetune.label_fractions
                for init in ("dbn", "random") for seed in range(smoke.finetune.seeds)}
    assert {label for label, _state in rows} == expected
    assert {state for _label, state in rows} == {"success"}


# --- `make ui` over what `make run` made, in a browser ------------------------------------


class UI:
    """`nnzoo ui` (what `make ui` runs) over the module's store, on free ports."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = dict(env)
        self.airflow_url = env["AIRFLOW__API__BASE_URL"]
        self.mlflow_url = f"http://localhost:{free_port()}"
        self.log = log
        self.process: subprocess.Popen | None = None
        self._token: str | None = None

    @property
    def password(self) -> str:
        path = Path(self.env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
        return json.loads(path.read_text())["admin"]

    def start(self) -> None:
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [str(VENV_BIN / "nnzoo"), "ui", "--airflow-port", self.airflow_url.rsplit(":", 1)[1],
                 "--mlflow-port", self.mlflow_url.rsplit(":", 1)[1]],
                cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until_up(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"nnzoo ui exited ({self.process.returncode}):\n{self.log_tail()}", pytrace=False)
            try:
                health = requests.get(f"{self.airflow_url}/api/v2/monitor/health", timeout=5).json()
                mlflow_up = requests.get(f"{self.mlflow_url}/health", timeout=5).ok
                # The pages read the metadata DB only: the scheduler may still be starting.
                if mlflow_up and health.get("metadatabase", {}).get("status") == "healthy":
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(2)
        pytest.fail(f"nnzoo ui not up after {timeout:.0f}s:\n{self.log_tail()}", pytrace=False)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # nnzoo ui stops both UIs' process groups
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)

    def log_tail(self) -> str:
        home_logs = Path(self.env["NNZOO_HOME"]) / "logs"
        parts = [self.log, home_logs / "airflow-standalone.log", home_logs / "mlflow-ui.log"]
        return "\n".join(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:])
                         for path in parts if path.exists())

    def api(self, path: str, **params) -> dict:
        if self._token is None:
            response = requests.post(f"{self.airflow_url}/auth/token", json={"username": "admin",
                                                                           "password": self.password}, timeout=30)
            response.raise_for_status()
            self._token = response.json()["access_token"]
        response = requests.get(f"{self.airflow_url}{path}", params=params, timeout=60,
                                headers={"Authorization": f"Bearer {self._token}"})
        assert response.ok, f"GET {path}: {response.status_code} {response.text[:500]}"
        return response.json()


@pytest.mark.service
class TestMakeUi:
    """The UI runs for these tests only (class scope): it is stopped before the tests after them."""

    @pytest.fixture(scope="class")
    def make_ui(self, embedded, zoo_run, tmp_path_factory) -> Iterator[UI]:
        _store, env = embedded
        assert zoo_run.returncode == 0, (zoo_run.stdout + zoo_run.stderr)[-6000:]
        ui = UI(env, tmp_path_factory.mktemp("ui") / "nnzoo-ui.log")
        ui.start()
        try:
            ui.wait_until_up()
            yield ui
        finally:
            ui.stop()


    @pytest.fixture(scope="class")
    def browser(self) -> Iterator:
        from tests.browser import chromium

        with chromium() as driver:
            yield driver


    @pytest.fixture(scope="class")
    def shots(self) -> Path:
        from tests.browser import shots_folder

        return shots_folder("make-ui")


    def test_make_ui_opens_an_experiment_from_mlflows_list_in_the_model_training_view(self, make_ui, browser, shots):
        """A new browser (nothing remembered) on MLflow's own experiment list: the experiment
        opens in the model-training view (Runs), not the GenAI one (Overview, Traces, Judges)."""
        from selenium.webdriver.common.by import By

        from tests.browser import screenshot, text_on_page, wait

        driver = browser
        driver.get(f"{make_ui.mlflow_url}/#/experiments")
        link = wait(driver, lambda d: d.find_elements(By.LINK_TEXT, "nnzoo-classifiers"), "the experiment list")[0]
        screenshot(driver, shots, "01-mlflow-experiment-list")
        link.click()
        # The runs, and the Datasets column naming what each trained on.
        wait(driver, text_on_page("mlp-smoke", "cnn-smoke", "mnist_subset"), "the experiment's runs")
        wait(driver, lambda d: d.find_elements(By.XPATH, "//h2[normalize-space(.)='Runs'] | //*[normalize-space(.)='Runs']"),
             "the Runs page of the model-training view")
        sidebar = driver.find_element(By.TAG_NAME, "body").text
        assert "Training runs" not in sidebar and "Judges" not in sidebar and "Evaluation runs" not in sidebar, sidebar
        assert driver.execute_script("return localStorage.getItem('mlflow.workflowType_v1')") == '"machine_learning"'
        screenshot(driver, shots, "02-mlflow-experiment-model-training-view")

    def test_make_ui_shows_no_failed_run_and_a_task_log(self, make_ui, zoo_run, browser, shots):
        from tests.browser import screenshot, sign_in_if_asked, text_on_page, wait

        runs = make_ui.api("/api/v2/dags/~/dagRuns", limit=100)["dag_runs"]
        # make run's two DAG runs, green; no retraining queued for data the zoo just trained on.
        assert sorted((run["dag_id"], run["state"]) for run in runs) == [
            ("zoo_classifiers", "success"), ("zoo_unsupervised", "success")], runs
        driver = browser
        driver.get(f"{make_ui.airflow_url}/dags")
        sign_in_if_asked(driver, "admin", make_ui.password)
        wait(driver, text_on_page("zoo_classifiers", "nnzoo_retrain"), "the DAG list")
        screenshot(driver, shots, "03-airflow-dag-list")

        run_id = next(run["dag_run_id"] for run in runs if run["dag_id"] == "zoo_classifiers")
        driver.get(f"{make_ui.airflow_url}/dags/zoo_classifiers/runs/{run_id}/tasks/train_cnn")
        # The Logs tab: what the task said while `make run` ran it.
        wait(driver, text_on_page("Logs", "[nnzoo] cnn-smoke epoch 2/2"), "train_cnn's log lines in its Logs tab")
        screenshot(driver, shots, "04-airflow-task-log")
        assert "[nnzoo] cnn-smoke epoch 2/2" in zoo_run.stdout  # and what make run showed of it


    def test_make_ui_links_a_task_to_its_mlflow_run_and_back(self, make_ui, embedded, browser, shots):
        from urllib.parse import unquote

        from selenium.webdriver.common.by import By

        from tests.browser import screenshot, sign_in_if_asked, text_on_page, wait

        store, _env = embedded
        run = next(run for run in _runs(store) if run.data.tags.get("nnzoo.model") == "cnn"
                   and run.data.tags["nnzoo.family"] == "classifiers")
        dag_run_id = run.data.tags["airflow.dag_run_id"]
        task_path = f"/dags/zoo_classifiers/runs/{dag_run_id}/tasks/train_cnn"
        expected = (f"{make_ui.mlflow_url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
                    "?workflowType=machine_learning")
        # Recorded while no MLflow UI ran; built from the one `make ui` serves, now.
        links = make_ui.api(f"/api/v2/dags/zoo_classifiers/dagRuns/{dag_run_id}/taskInstances/train_cnn/links")
        assert links["extra_links"]["MLflow run"] == expected, links
        driver = browser
        driver.get(f"{make_ui.airflow_url}{task_path}/details")
        sign_in_if_asked(driver, "admin", make_ui.password)
        button = wait(driver, lambda d: d.find_elements(By.XPATH, "//a[contains(normalize-space(.), 'MLflow run')]"),
                      "the task's 'MLflow run' link")[0]
        assert button.get_attribute("href") == expected
        screenshot(driver, shots, "05-airflow-task-mlflow-link")
        driver.get(button.get_attribute("href"))
        wait(driver, text_on_page("cnn-smoke", "Finished", "airflow.url", "test_accuracy", "nnzoo-classifiers-cnn"),
             "the MLflow run page with its status, metrics, Airflow tags and registered model")
        screenshot(driver, shots, "06-mlflow-run")

        url = run.data.tags["airflow.url"]
        assert unquote(url).startswith(f"{make_ui.airflow_url}{task_path}"), url
        driver.get(url)
        sign_in_if_asked(driver, "admin", make_ui.password)
        wait(driver, lambda d: unquote(d.current_url.split("?")[0]).endswith(task_path) and "train_cnn" in d.page_source,
             "the task instance the run links back to")
        screenshot(driver, shots, "07-back-at-the-airflow-task")
        # The pipeline's parent run links to the DAG run, not to the task that opened it.
        parent = next(run for run in _runs(store) if run.data.tags["nnzoo.family"] == "unsupervised"
                      and run.data.tags["nnzoo.stage"] == "pipeline")
        assert unquote(parent.data.tags["airflow.url"]) == (
            f"{make_ui.airflow_url}/dags/zoo_unsupervised/runs/{parent.data.tags['airflow.dag_run_id']}")


def test_unsupervised_dag_fails_visibly_when_its_data_cannot_be_loaded(embedded, unsupervised_dag_run):
    """tfds `mnist` is not on this machine: prepare_data fails, every step after it is
    upstream_failed, and the all-done `finish` step fails too (nothing to close), so
    the DAG run is failed rather than green; no MLflow run is left behind."""
    import sqlite3
    from pathlib import Path

    store, env = embedded
    before = {run.info.run_id for run in _runs(store)}
    result = dags_test(env, {"profile": "smoke", "dataset": "mnist"}, timeout=600, dag_id="zoo_unsupervised")
    output = result.stdout + result.stderr
    assert "tensorflow-datasets could not load 'mnist'" in output
    # After Airflow's record of the exception, the task log ends with the error in one line.
    said = [line for line in output.splitlines() if "nnzoo: error: tensorflow-datasets could not load 'mnist'" in line]
    assert said, output[-4000:]
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        run_id, state = db.execute("SELECT run_id, state FROM dag_run WHERE dag_id = 'zoo_unsupervised' "
                                   "ORDER BY id DESC LIMIT 1").fetchone()
        states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = 'zoo_unsupervised' "
                                 "AND run_id = ? AND map_index = -1", (run_id,)).fetchall())
    assert state == "failed"
    assert states["prepare_data"] == "failed"
    assert states["finish"] == "failed"
    assert states["register"] == "upstream_failed"
    assert {run.info.run_id for run in _runs(store)} == before
