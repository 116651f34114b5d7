"""The two UIs of the distributed stack in a real browser (Debian's headless Chromium
through Selenium), as a person uses them: sign into Airflow, open the DAG and its
trigger form; find the experiment and a run in MLflow. Screenshots of each step are
kept in ``var/test-output/browser/`` (``NNZOO_TEST_OUTPUT`` moves it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.service.conftest import ADMIN_USER, DAG_ID, DagRun, Stack, describe_run

pytestmark = [pytest.mark.service, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 60
OUTPUT = Path(os.environ.get("NNZOO_TEST_OUTPUT", REPO_ROOT / "var" / "test-output")) / "browser"
EXPERIMENT = "nnzoo-classifiers"


@pytest.fixture(scope="module")
def shots() -> Path:
    """The screenshot folder, emptied of earlier sessions' pictures."""
    shutil.rmtree(OUTPUT, ignore_errors=True)
    OUTPUT.mkdir(parents=True)
    return OUTPUT


def _chromium_processes(profile: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if profile.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Headless Chromium with a throwaway profile; nothing of it is left running after."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/system_deps.sh (Debian packages chromium, "
                        "chromium-driver)", pytrace=False)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download drivers
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="nnzoo-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()
        left = _chromium_processes(profile)
        shutil.rmtree(profile, ignore_errors=True)
        assert not left, f"Chromium processes left running: {left}"


def wait(driver, condition, what: str):
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        # A redirect while the condition polls ("aborted by navigation") is not a failure: poll again.
        return WebDriverWait(driver, WAIT_S, ignored_exceptions=(WebDriverException,)).until(condition)
    except TimeoutException:
        pytest.fail(f"timed out after {WAIT_S}s waiting for {what} at {driver.current_url}", pytrace=False)


def text_on_page(*texts: str):
    return lambda driver: all(text in driver.page_source for text in texts)


def screenshot(driver, shots: Path, name: str) -> Path:
    """Save a screenshot and check it is a real picture: a PNG of the window's size
    with enough distinct colours that it is not a blank or single-colour page."""
    import matplotlib.image
    import numpy as np

    path = shots / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 800 and height >= 600, f"{path}: {width}x{height}"
    pixels = matplotlib.image.imread(str(path))
    colours = len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))
    assert colours > 50, f"{path}: only {colours} distinct colours, looks blank"
    return path


def test_airflow_ui_login_dag_page_and_trigger_form(stack: Stack, smoke_dag_run: DagRun, browser, shots: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    assert smoke_dag_run.state == "success", describe_run(stack, smoke_dag_run)
    driver = browser
    driver.get(f"{stack.airflow_url}/dags/{DAG_ID}")
    # Not signed in: the simple auth manager's login page, which returns to the DAG after.
    username = wait(driver, EC.visibility_of_element_located((By.NAME, "username")), "the login form")
    assert "/auth/login" in driver.current_url
    screenshot(driver, shots, "01-airflow-login")
    username.send_keys(ADMIN_USER)
    driver.find_element(By.NAME, "password").send_keys(stack.password)
    wait(driver, EC.element_to_be_clickable((By.CSS_SELECTOR, "button[type=submit]")), "Sign in to enable").click()

    trigger = wait(driver, EC.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid=trigger-dag-button]")),
                   "the DAG page's Trigger button")
    assert driver.current_url.rstrip("/").endswith(f"/dags/{DAG_ID}"), driver.current_url
    # The grid shows the finished run's task instances, each a link to its task page.
    for task_id in smoke_dag_run.task_instances:
        cell = wait(driver, EC.visibility_of_element_located(
            (By.CSS_SELECTOR, f"a[data-testid='grid-{smoke_dag_run.run_id}-{task_id}'] [data-testid=task-state-badge]")),
            f"the grid cell of {task_id}")
        assert cell.is_displayed()
    screenshot(driver, shots, "02-airflow-dag-page")

    trigger.click()
    wait(driver, EC.visibility_of_element_located(
        (By.XPATH, f"//*[@role='dialog']//h2[contains(normalize-space(.), 'Trigger Dag - {DAG_ID}')]")),
        "the trigger dialog")
    form = wait(driver, EC.visibility_of_element_located((By.CSS_SELECTOR, "[role=dialog] [data-testid=config-form]")),
                "the Run Parameters section")
    assert "Run Parameters" in form.text
    # The params of the DAG, with their descriptions, as fields of the form.
    for label in ("Profile", "Epochs", "Batch size", "Learning rate", "Seed"):
        wait(driver, EC.presence_of_element_located((By.XPATH, f"//label[contains(normalize-space(.), '{label}')]")),
             f"the {label!r} field")
    assert "smoke: tiny, seconds (tests)" in form.text
    screenshot(driver, shots, "03-airflow-trigger-form")


def test_mlflow_ui_shows_the_experiment_and_its_runs(stack: Stack, smoke_dag_run: DagRun, browser, shots: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    assert smoke_dag_run.state == "success", describe_run(stack, smoke_dag_run)
    driver = browser
    driver.get(f"{stack.mlflow_url}/#/experiments")
    link = wait(driver, EC.presence_of_element_located((By.LINK_TEXT, EXPERIMENT)), f"experiment {EXPERIMENT}")
    screenshot(driver, shots, "04-mlflow-experiments")
    experiment_url = link.get_attribute("href").split("?")[0]
    # The run list of the "Model training" view (the UI opens experiments in its GenAI view).
    driver.get(f"{experiment_url}/runs?workflowType=machine_learning")
    run_link = wait(driver, EC.presence_of_element_located((By.LINK_TEXT, "mlp-smoke")), "run mlp-smoke")
    wait(driver, EC.presence_of_element_located((By.LINK_TEXT, "cnn-smoke")), "run cnn-smoke")
    screenshot(driver, shots, "05-mlflow-runs")
    driver.get(run_link.get_attribute("href"))
    wait(driver, text_on_page("mlp-smoke", "Finished", "test_accuracy", "nnzoo-classifiers-mlp"),
         "the run page with its status, metrics and registered model")
    screenshot(driver, shots, "06-mlflow-run")
