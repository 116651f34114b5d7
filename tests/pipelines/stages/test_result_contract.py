"""The result contract. Registry-wide: every registered family's stage tests check, on
their smoke run, that the summary ``nnzoo run`` prints holds every headline and claim
metric the family declares and that the report finds every picture its claims declare
(``tests.claims_check.assert_result_contract``; a new family's tests must call it, or
the guard here fails); ``test_a_missing_metric_breaks_the_contract`` shows the check
failing when one declared metric is gone. ``nnzoo run all`` on two families, the first
made to fail at its last step: the run goes on past it, the one JSON line reports its
status, failed step, error and finished steps, what its earlier steps logged, and the
other family's results, and the exit status is 1."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from pipelines import cli
from pipelines.families import all_families, get_family
from tests.conftest import REPO_ROOT, new_store

pytestmark = pytest.mark.slow

FAILING, PASSING = "classifiers", "style_transfer"
FAILING_STEP = "register"
"""The failing family's last step: what the steps before it logged is in the JSON all the
same. Two of the cheapest families; each family's own results are checked in its tests."""


@pytest.fixture(scope="module")
def run_all(tmp_path_factory):
    from pipelines.stages import classifiers

    store = new_store(tmp_path_factory.mktemp("contract"))
    with pytest.MonkeyPatch.context() as patch:
        store.activate(patch)

        def broken(config, inputs):
            raise RuntimeError("the registry is down")

        patch.setattr(classifiers, FAILING_STEP, broken)
        patch.setattr(cli, "all_families", lambda: {name: get_family(name) for name in (FAILING, PASSING)})
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli.main(["run", "all", "--profile", "smoke"])
    return {"code": code, "summary": json.loads(out.getvalue().strip().splitlines()[-1]), "store": store}


def test_run_all_goes_past_a_failed_family_and_reports_every_familys_status(run_all):
    summary = run_all["summary"]
    assert run_all["code"] == 1
    assert (summary["family"], summary["profile"], summary["status"]) == ("all", "smoke", "FAILED")
    assert list(summary["families"]) == [FAILING, PASSING]
    failed = summary["families"][FAILING]
    assert (failed["status"], failed["step"], failed["error"]) == ("FAILED", FAILING_STEP,
                                                                   "RuntimeError: the registry is down")
    assert failed["finished"] == ["prepare_data", "train", "evaluate"]
    assert summary["families"][PASSING]["status"] == "FINISHED"
    # What the failed family's finished steps logged, and the family after it, are in the line.
    assert {"cnn", "mlp"} <= set(summary["metrics"][FAILING])
    assert get_family(FAILING).missing_results(summary["metrics"][FAILING]) == []
    assert get_family(PASSING).missing_results(summary["metrics"][PASSING]) == []


@pytest.mark.parametrize("name", sorted(all_families()))
def test_every_familys_stage_tests_check_the_result_contract_on_a_smoke_run(name):
    module = REPO_ROOT / "tests" / "pipelines" / "stages" / f"test_{name}.py"
    assert module.is_file(), f"{name} has no stage tests ({module.relative_to(REPO_ROOT)})"
    assert "assert_result_contract(FAMILY" in module.read_text(), f"{module.name} does not check the result contract"


def test_the_json_numbers_are_the_stores(run_all):
    client = run_all["store"].client()
    for name, runs in run_all["summary"]["runs"].items():
        for model, run_id in runs.items():
            run = client.get_run(run_id)
            assert (run.data.tags["nnzoo.family"], run.data.tags["nnzoo.model"]) == (name, model)
            assert run.data.metrics.items() >= run_all["summary"]["metrics"][name][model].items()


def test_a_missing_metric_breaks_the_contract():
    from pipelines.families import get_family

    family = get_family("fcn_deconv")
    full = {"fcn": {"max_abs_difference": 0.0, "detection_precision": 1.0, "detection_recall": 1.0,
                    "detection_f1": 1.0},
            "segmenter": {"mean_iou": 0.9, "pixel_accuracy": 0.99}, "generator": {"recognised_share": 0.9}}
    assert family.missing_results(full) == []
    del full["fcn"]["detection_f1"]
    assert family.missing_results(full) == ["C10 metric 'detection_f1' of model 'fcn'"]
    del full["segmenter"]
    assert "headline 'pixel_accuracy' of model 'segmenter'" in family.missing_results(full)
