"""The claim declarations: one owner per claim, verdicts, the C17 criterion, and the
table of docs/claims.md kept equal to the declarations."""

from __future__ import annotations

import dataclasses

import pytest

from pipelines import claims
from pipelines.claims import FAIL, NO_BAR, NOT_RUN, PASS, Claim
from pipelines.families import all_families
from tests.conftest import REPO_ROOT


def test_c1_to_c17_are_each_declared_once_by_a_family_or_the_report():
    declared = claims.all_claims()
    assert [claim.id for claim in declared] == [f"C{n}" for n in range(1, 18)]
    families = all_families()
    for claim in declared:
        assert claim.family in families or claim.family == claims.REPORT_OWNER, claim.id
        assert claim.statement and claim.experiment and "\n" not in claim.statement
    assert claims.get_claim("C17").family == claims.REPORT_OWNER


def test_a_second_owner_of_a_claim_is_refused(monkeypatch):
    from pipelines import families

    family = families.get_family("classifiers")
    stolen = claims.owned("classifiers", dataclasses.replace(claims.get_claim("C9"), family=""))
    monkeypatch.setitem(families._FAMILIES, "classifiers", dataclasses.replace(family, claims=stolen))
    with pytest.raises(ValueError, match="claim C9 declared by both"):
        claims.all_claims()


def test_a_family_refuses_a_claim_it_does_not_own():
    from pipelines.families import get_family

    with pytest.raises(ValueError, match="claim C9 is declared for 'fcn_deconv'"):
        dataclasses.replace(get_family("classifiers"), claims=(claims.get_claim("C9"),))


def test_verdicts_follow_the_bar_the_baseline_and_the_profile():
    claim = Claim("C4", "s", "e", metric="ratio", comparator="<=", threshold=0.8, baseline="other")
    assert claim.judge(0.5, 0.6, "quick") == PASS
    assert claim.judge(0.9, 1.0, "quick") == FAIL  # over the bar
    assert claim.judge(0.7, 0.6, "quick") == FAIL  # under the bar, but worse than its baseline
    assert claim.judge(0.7, None, "quick") == FAIL  # a baseline that was not measured cannot be beaten
    assert claim.judge(0.7, 0.7, "quick") == PASS  # a tie is enough
    assert claim.judge(0.9, 1.0, "smoke") == NO_BAR
    assert claim.judge(None, None, "quick") == claim.judge(float("nan"), 1.0, "quick") == NOT_RUN
    assert claim.bar == "ratio <= 0.8 and <= other"
    with pytest.raises(ValueError, match="comparator '=='"):
        Claim("C1", "s", "e", metric="m", comparator="==", threshold=1)


def test_the_frontier_is_the_models_no_other_beats_on_accuracy_and_parameters():
    points = {"mlp": (0.95, 100_000), "residual": (0.97, 50_000), "inception": (0.90, 10_000),
              "plain": (0.90, 20_000), "tiny": (0.50, 1_000)}
    assert claims.pareto_frontier(points) == ["tiny", "inception", "residual"]
    assert claims.newer_frontier_share({"mnist": points}) == pytest.approx(2 / 3)
    # Older nets holding the frontier: the claim fails.
    older = {"mlp": (0.97, 10_000), "residual": (0.95, 50_000), "inception": (0.90, 20_000)}
    assert claims.newer_frontier_share({"mnist": older}) == 0.0
    # A dataset where only one kind was trained says nothing; without any there is no value.
    assert claims.newer_frontier_share({"mnist": older, "text": {"lstm": (0.8, 10), "bilstm": (0.9, 20)}}) == 0.0
    assert claims.newer_frontier_share({"text": {"lstm": (0.8, 10)}}) is None


def test_the_claims_table_of_the_docs_is_the_declarations():
    text = (REPO_ROOT / "docs" / "claims.md").read_text()
    assert claims.markdown_table() in text, "docs/claims.md: paste the output of `python -m pipelines.claims`"


def test_every_claim_metric_is_shown_in_its_familys_summary():
    for family in all_families().values():
        for claim in family.claims:
            assert claim.metric in family.summary_metrics(claim.model), claim.id
            if claim.baseline:
                assert claim.baseline in family.summary_metrics(claim.baseline_model or claim.model), claim.id


def test_a_baseline_factor_asks_for_a_margin_over_the_baseline():
    claim = Claim("C3", "s", "e", metric="plain", comparator="<=", threshold=1e-2, baseline="residual",
                  baseline_factor=0.01)
    assert claim.judge(1e-14, 1e-3, "quick") == PASS
    assert claim.judge(1e-3, 1e-3, "quick") == FAIL  # a tie with the residual net: no shortcut effect
    assert claim.bar == "plain <= 0.01 and <= 0.01 x residual"
