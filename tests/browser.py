"""Headless Chromium for the browser tests (Debian's chromium and chromium-driver through
Selenium): a throwaway browser, waiting for what a page shows, checked screenshots."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 60
OUTPUT_ROOT = Path(os.environ.get("NNZOO_TEST_OUTPUT", REPO_ROOT / "var" / "test-output"))
"""Screenshots go to ``<this>/<suite>/`` (``NNZOO_TEST_OUTPUT`` moves it)."""


def shots_folder(suite: str) -> Path:
    """The screenshot folder of a suite, emptied of earlier runs' pictures."""
    folder = OUTPUT_ROOT / suite
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _chromium_processes(profile: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if profile.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def chromium() -> Iterator:
    """Headless Chromium with a new, empty profile; nothing of it is left running after."""
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


def sign_in_if_asked(driver, user: str, password: str) -> None:
    """Airflow's login page, if the browser is not signed in yet."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    # The app's page loads first and then redirects to the login page when not signed in:
    # wait for either the login form or the signed-in app's navigation ("Browse").
    wait(driver, lambda d: d.find_elements(By.NAME, "username")
         or d.find_elements(By.XPATH, "//*[normalize-space(text())='Browse']"), "an Airflow page")
    if driver.find_elements(By.NAME, "username"):
        wait(driver, EC.visibility_of_element_located((By.NAME, "username")), "the login form").send_keys(user)
        driver.find_element(By.NAME, "password").send_keys(password)
        wait(driver, EC.element_to_be_clickable((By.CSS_SELECTOR, "button[type=submit]")), "Sign in").click()
