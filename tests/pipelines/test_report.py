"""The zoo report on a scratch store with planted runs: verdicts from the declarations,
NOT RUN for a claim nobody measured, other profiles kept out, the C17 chart, and the
files and the ``report`` run it leaves."""

from __future__ import annotations

import json
import re

import pytest

from pipelines import claims, report, tracking
from pipelines.claims import FAIL, NOT_RUN, PASS
from pipelines.families import get_family


def plant(family: str, model: str, profile: str, metrics: dict[str, float], *, params: dict | None = None,
          status: str = "FINISHED", picture: str | None = None) -> str:
    """A run as the family's stages leave it: tags, dataset param, metrics, one picture."""
    tags = {tracking.TAG_FAMILY: family, tracking.TAG_MODEL: model, tracking.TAG_PROFILE: profile,
            tracking.TAG_STAGE: "train"}
    run_id = tracking.start_run(get_family(family).experiment_name, model, tags=tags)
    tracking.log_params(run_id, {"dataset.name": "mnist_subset", "device": "CPU:0", **(params or {})})
    tracking.log_metrics(run_id, metrics)
    if picture:
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(2, 2))
        axis.plot([0, 1], [1, 0])
        tracking.log_figure(run_id, figure, picture)
    tracking.end_run(run_id, status)
    return run_id


@pytest.fixture
def planted(store):
    """C4 measured and failing, C9 passing, C10 passing on smoke only, a residual net
    that holds the frontier; everything else unmeasured."""
    failing = plant("unsupervised", "autoencoder", "quick", {"mse_ratio_vs_pca": 1.3},
                    picture="plots/reconstructions.png")
    passing = plant("fcn_deconv", "fcn", "quick", {"max_abs_difference": 2e-7})
    smoke_only = plant("fcn_deconv", "fcn", "smoke", {"detection_f1": 0.99})
    cost = {"flops": 1e6, "train_seconds": 12.0}
    plant("cnn_depth", "vanishing_residual", "quick", {"test_accuracy": 0.95, "params": 20_000, **cost})
    plant("cnn_depth", "max_pool", "quick", {"test_accuracy": 0.93, "params": 120_000, **cost})
    plant("classifiers", "mlp", "quick", {"test_accuracy": 0.96, "params": 200_000, **cost})
    # a two-class slice (cnn_depth's off_chart): in the models table, never on C17's frontier
    plant("cnn_depth", "single_neuron", "quick", {"test_accuracy": 0.99, "params": 785, **cost})
    plant("classifiers", "cnn", "smoke", {"test_accuracy": 0.99, "params": 1_000, **cost})  # never in quick
    return {"failing": failing, "passing": passing, "smoke_only": smoke_only}


def test_a_planted_failing_run_fails_its_claim_with_the_value_and_unmeasured_claims_read_not_run(planted):
    built = report.collect("quick")
    by_id = {result.claim.id: result for result in built.claims}
    assert [result.claim.id for result in built.claims] == [f"C{n}" for n in range(1, 18)]
    assert (by_id["C4"].verdict, by_id["C4"].value, by_id["C4"].run_id) == (FAIL, 1.3, planted["failing"])
    assert by_id["C4"].dataset == "mnist_subset"
    assert [caption for caption, _ in by_id["C4"].pictures] == ["test digits and reconstructions"]
    assert by_id["C4"].pictures[0][1].startswith(b"\x89PNG")
    assert (by_id["C9"].verdict, by_id["C9"].value) == (PASS, 2e-7)
    # C10 was measured by a smoke run only: a quick report does not see it.
    assert (by_id["C10"].verdict, by_id["C10"].value) == (NOT_RUN, None)
    assert by_id["C1"].verdict == NOT_RUN
    # C17: the residual net is the frontier's cheap end, the MLP its accurate end.
    assert by_id["C17"].value == pytest.approx(0.5) and by_id["C17"].verdict == PASS
    assert by_id["C17"].experiment.endswith("cnn_depth/vanishing_residual, classifiers/mlp")
    models = {(row["family"], row["model"]) for row in built.models}
    assert models == {("cnn_depth", "vanishing_residual"), ("cnn_depth", "max_pool"), ("classifiers", "mlp"),
                      ("cnn_depth", "single_neuron")}


def test_smoke_runs_only_enter_a_smoke_report(planted):
    built = report.collect("smoke")
    by_id = {result.claim.id: result for result in built.claims}
    assert by_id["C10"].value == 0.99 and by_id["C10"].verdict == claims.NO_BAR  # measured, not judged on smoke
    assert by_id["C4"].verdict == NOT_RUN
    assert {row["model"] for row in built.models} == {"cnn"}


def test_the_default_profile_is_the_newest_with_runs(planted):
    assert report.collect().profile == "smoke"  # the last planted run is a smoke one
    plant("classifiers", "cnn", "quick", {"test_accuracy": 0.9, "params": 10.0, "flops": 1.0})
    assert report.collect().profile == "quick"


def test_make_report_writes_self_contained_html_and_markdown_and_logs_a_report_run(planted, store, monkeypatch):
    monkeypatch.setenv("NNZOO_MLFLOW_UI_URL", "http://localhost:5000")
    result = report.make_report("quick")
    page = open(result["html"]).read()
    assert result["html"].startswith(str(store.home / "reports" / "quick-"))
    # Every image is embedded; the only addresses are links to the MLflow UI.
    assert not re.search(r'src="(?!data:image/png;base64,)', page)
    assert set(re.findall(r'https?://[^/"]+', page)) == {"http://localhost:5000"}
    assert f'/runs/{planted["failing"]}?workflowType=machine_learning' in page
    markdown = open(result["markdown"]).read()
    assert "| C4 | FAIL | 1.3 | `mse_ratio_vs_pca <= 0.8` |" in markdown
    assert "![accuracy vs FLOPs](accuracy_vs_flops.png)" in markdown
    run = store.client().get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert store.client().get_experiment(run.info.experiment_id).name == report.EXPERIMENT
    assert run.data.metrics["newer_frontier_share"] == pytest.approx(0.5)
    assert run.data.metrics["claims_fail"] == 1.0 and run.data.metrics["claims_pass"] == 2.0
    logged = {item.path for item in store.client().list_artifacts(run.info.run_id)}
    assert logged == {"report.html", "report.md", "accuracy_vs_flops.png", "report.json"}
    assert result["verdicts"]["C4"] == FAIL
    # The report reads runs: a second report of the same store sees the same verdicts.
    assert report.make_report("quick")["verdicts"] == result["verdicts"]


def test_nnzoo_report_prints_the_table_and_a_json_line(planted, capsys):
    from pipelines import cli

    assert cli.main(["report", "--profile", "quick"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert summary["verdicts"]["C4"] == FAIL and summary["values"]["C4"] == 1.3
    assert any(line.startswith("C4    FAIL") and "mse_ratio_vs_pca <= 0.8" in line for line in out)
    assert cli.main(["report", "--profile", "bogus"]) == 2


@pytest.mark.slow
def test_the_report_opens_in_a_browser_with_no_request_leaving_the_machine(planted, store, monkeypatch):
    """Headless Chromium (Debian's, through Selenium) opens the HTML file: every claim
    row is there, the C17 chart is drawn, and the page loaded nothing but itself.
    Screenshots of the claims table and the chart go to var/test-output/report/."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from tests.conftest import REPO_ROOT

    chromium, driver_bin = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
    if not (chromium.exists() and driver_bin.exists()):
        pytest.fail("Chromium is missing: run scripts/system_deps.sh", pytrace=False)
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    monkeypatch.setenv("NNZOO_MLFLOW_UI_URL", "http://localhost:5000")
    page = report.make_report("quick")["html"]
    shots = Path(os.environ.get("NNZOO_TEST_OUTPUT", REPO_ROOT / "var" / "test-output")) / "report"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    profile = tempfile.mkdtemp(prefix="nnzoo-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--no-first-run",
                     "--window-size=1400,1100", f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(driver_bin)), options=options)
    try:
        driver.get(f"file://{page}")
        rows = driver.find_elements(By.CSS_SELECTOR, "#claims tr[id^=row-]")
        assert [row.get_attribute("id") for row in rows] == [f"row-C{n}" for n in range(1, 18)]
        assert "FAIL" in driver.find_element(By.ID, "row-C4").text
        assert "NOT RUN" in driver.find_element(By.ID, "row-C1").text
        driver.find_element(By.ID, "claims").screenshot(str(shots / "01-claims-table.png"))
        chart = driver.find_element(By.CSS_SELECTOR, "img.chart")
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", chart) > 400
        driver.execute_script("arguments[0].scrollIntoView()", chart)
        chart.screenshot(str(shots / "02-c17-chart.png"))
        loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert [name for name in loaded if not name.startswith(("data:", "file:"))] == []
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    assert (shots / "01-claims-table.png").stat().st_size > 10_000
