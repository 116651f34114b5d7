"""The two UIs of the distributed stack in a real browser (Debian's headless Chromium
through Selenium), as a person uses them: sign into Airflow, open the DAG and its
trigger form; follow a task's link to its MLflow run and back (MLflow's experiment list
and run pages: tests/test_end_to_end.py, over `make ui`). Screenshots of each step are
kept in ``var/test-output/browser/`` (``NNZOO_TEST_OUTPUT`` moves it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import chromium, screenshot, shots_folder, text_on_page, wait
from tests.browser import sign_in_if_asked as browser_sign_in
from tests.service.conftest import ADMIN_USER, DAG_ID, DagRun, Stack, describe_run

pytestmark = [pytest.mark.service, pytest.mark.slow]



@pytest.fixture(scope="module")
def shots() -> Path:
    return shots_folder("browser")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as driver:
        yield driver


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
    # Each field's description shows its range and every profile's default, e.g.
    # "1–1000; smoke 2, quick 20, full 30" under Epochs (pipelines.params).
    from pipelines.params import form_specs

    specs = form_specs("classifiers")
    for name, shown in (("epochs", "1–1000; smoke 2, quick 20, full 30."),
                        ("learning_rate", "> 0, ≤ 1000000; smoke 0.003, quick 0.001, full 0.001."),
                        ("batch_size", "1–4096; smoke 64, quick 64, full 128.")):
        assert shown in specs[name]["description"]
        wait(driver, lambda d, text=shown: text in form.text, f"{shown!r} in the form")
    epochs = driver.find_element(By.XPATH, "//label[contains(normalize-space(.), 'Epochs')]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", epochs)
    screenshot(driver, shots, "03-airflow-trigger-form")

    # What Airflow 3.3's number widget does (no inline error): it clamps to the schema's
    # minimum/maximum when the field loses focus; an exclusive minimum is not passed to it.
    import time

    from selenium.webdriver.common.keys import Keys

    def typed(name: str, text: str) -> str:
        field = driver.find_element(By.CSS_SELECTOR, f"[role=dialog] input[name='element_{name}']")
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(text, Keys.TAB)
        time.sleep(1)  # the widget settles its value on blur
        return field.get_attribute("value")

    assert typed("epochs", "0") == "1"
    assert typed("batch_size", "5000") == "4096"
    assert typed("learning_rate", "-1") == "-1"
    screenshot(driver, shots, "03b-airflow-trigger-form-clamped")

    # On Trigger the api-server validates the params: a red box in the dialog, and no run.
    def manual_runs() -> set[str]:
        response = stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", params={"limit": 100})
        return {run["dag_run_id"] for run in response.json()["dag_runs"]
                if (run.get("conf") or {}).get("learning_rate") == -1}

    assert not manual_runs()
    driver.find_element(By.XPATH, "//*[@role='dialog']//button[normalize-space(.)='Trigger']").click()
    message = wait(driver, EC.presence_of_element_located(
        (By.XPATH, "//*[contains(text(), 'Invalid input for param learning_rate')]")), "the trigger's error message")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", message)
    assert message.is_displayed()
    screenshot(driver, shots, "03c-airflow-trigger-refused")
    assert not manual_runs()


def sign_in_if_asked(driver, stack: Stack) -> None:
    browser_sign_in(driver, ADMIN_USER, stack.password)


def test_an_airflow_task_links_to_its_mlflow_run_and_the_run_back_to_the_task(stack: Stack, smoke_dag_run: DagRun,
                                                                             browser, shots: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    assert smoke_dag_run.state == "success", describe_run(stack, smoke_dag_run)
    driver = browser
    task_path = f"/dags/{DAG_ID}/runs/{smoke_dag_run.run_id}/tasks/train_cnn"
    # The task's "MLflow run" extra link, as the API gives it to the UI.
    links = stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{smoke_dag_run.run_id}/taskInstances/train_cnn/links")
    assert links.status_code == 200, links.text[:500]
    url = links.json()["extra_links"]["MLflow run"]
    assert url and url.startswith(f"{stack.mlflow_url}/#/experiments/"), links.json()
    run_id = url.split("?")[0].rsplit("/", 1)[-1]

    # The task instance's Details tab lists its extra links.
    driver.get(f"{stack.airflow_url}{task_path}/details")
    sign_in_if_asked(driver, stack)
    button = wait(driver, EC.presence_of_element_located(
        (By.XPATH, "//*[self::a or self::button][contains(normalize-space(.), 'MLflow run')]")),
        "the task instance's 'MLflow run' link")
    href = button.get_attribute("href") or button.find_element(By.XPATH, "ancestor::a").get_attribute("href")
    assert href == url
    screenshot(driver, shots, "07-airflow-task-with-mlflow-link")

    driver.get(href)
    wait(driver, text_on_page("cnn-smoke", "airflow.url", "train_cnn"), "the MLflow run page with its Airflow tags")
    screenshot(driver, shots, "08-mlflow-run-with-link-back")
    tags = {tag["key"]: tag["value"] for tag in stack.mlflow("GET", "runs/get", params={"run_id": run_id})
            ["run"]["data"]["tags"]}
    from urllib.parse import unquote

    assert unquote(tags["airflow.url"]).startswith(f"{stack.airflow_url}{task_path}"), tags["airflow.url"]
    assert (tags["airflow.dag_id"], tags["airflow.dag_run_id"], tags["airflow.task_id"]) == (
        DAG_ID, smoke_dag_run.run_id, "train_cnn")

    driver.get(tags["airflow.url"])
    sign_in_if_asked(driver, stack)
    wait(driver, lambda d: unquote(d.current_url.split("?")[0]).endswith(task_path) and "train_cnn" in d.page_source,
         "the task instance page the run links back to")
    wait(driver, text_on_page("Logs", "Details"), "the task instance page's tabs")
    screenshot(driver, shots, "09-back-at-the-airflow-task")
