"""The result contract, registry-wide: ``nnzoo run all --profile smoke`` runs every
registered family (a new one joins without an edit here) and its one JSON line holds
every headline metric and every claim metric each family declares, from the runs in
the store. One family is made to fail at its last step: the run goes on past it, the
line reports its status, failed step, error and finished steps, and the exit status
is 1. ``test_a_missing_metric_breaks_the_contract`` shows the check failing when one
declared metric is gone."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from pipelines import cli
from pipelines.families import all_families
from tests.conftest import new_store

pytestmark = pytest.mark.slow

FAILING = "sequences"
FAILING_STEP = "register"
"""Its last step: what the steps before it logged is in the JSON all the same. (Not a
classifiers step: fcn_deconv calls those to get a classifier when none is registered.)"""


@pytest.fixture(scope="module")
def run_all(tmp_path_factory):
    from pipelines.stages import sequences

    store = new_store(tmp_path_factory.mktemp("contract"))
    with pytest.MonkeyPatch.context() as patch:
        store.activate(patch)

        def broken(config, inputs):
            raise RuntimeError("the registry is down")

        patch.setattr(sequences, FAILING_STEP, broken)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli.main(["run", "all", "--profile", "smoke"])
    return {"code": code, "summary": json.loads(out.getvalue().strip().splitlines()[-1]), "store": store}


def test_run_all_goes_past_a_failed_family_and_reports_every_familys_status(run_all):
    summary = run_all["summary"]
    assert run_all["code"] == 1
    assert (summary["family"], summary["profile"], summary["status"]) == ("all", "smoke", "FAILED")
    assert set(summary["families"]) == set(all_families())
    failed = summary["families"][FAILING]
    assert (failed["status"], failed["step"], failed["error"]) == ("FAILED", FAILING_STEP,
                                                                   "RuntimeError: the registry is down")
    assert failed["finished"] == ["prepare_data", "plan_jobs", "train", "compare"]
    assert all(result["status"] == "FINISHED" for name, result in summary["families"].items() if name != FAILING)


@pytest.mark.parametrize("name", sorted(all_families()))
def test_every_declared_headline_and_claim_metric_is_in_the_json(run_all, name):
    family = all_families()[name]
    metrics = run_all["summary"]["metrics"][name]
    assert family.missing_results(metrics) == [], f"{name}'s JSON lacks what it declares"


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


@pytest.mark.parametrize("name", sorted(all_families()))
def test_every_picture_a_claim_declares_is_logged(run_all, name):
    from pipelines import report

    with pytest.MonkeyPatch.context() as patch:
        run_all["store"].activate(patch)
        runs = report._runs(report._client(), "smoke")
        for claim in all_families()[name].claims:
            result = report.judge_claim(claim, runs, "smoke", report._client())
            assert [caption for caption, _ in result.pictures] == [p.caption for p in claim.pictures], claim.id
